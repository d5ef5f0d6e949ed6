"""Any chat model: the masking on real chat templates of many families (tests/template_corpus.py), each on the
real Gemma 3 tokenizer with the template's control tokens added as special tokens.

Every property is checked against the template's own renderings, computed here with apply_chat_template, not
against the script's internals: the decoded input is the template's text, each trained span is one reply and its
closing, every reply is trained exactly once, the tokens before each trained reply decode to the conversation so
far rendered with add_generation_prompt=True, and no system or user text is trained. Where TRL ships a
{% generation %}-tagged training variant of a template, its assistant mask is a second, independent reference."""

import copy
import json

import pytest

from multiturn.chat_format import UserError, fold_system, render
from multiturn.template_probes import describe, detect_chat_format
from conftest import run_script
from template_corpus import CORPUS, TRL_TEMPLATES
from template_corpus import trained_spans as spans
from multiturn import examples

IGNORE = -100

CONVERSATIONS = {
    "system, three replies": [
        {"role": "system", "content": "You are Sage. Answer briefly."},
        {"role": "user", "content": "How many grams are in a pound?"},
        {"role": "assistant", "content": "In short: about 453.6 grams."},
        {"role": "user", "content": "And in an ounce?"},
        {"role": "assistant", "content": "In short: about 28.35 grams.\n\nA pound has 16 ounces."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "In short: you are welcome."},
    ],
    "no system, markup in text": [
        {"role": "user", "content": "What does <|im_end|> or [INST] or <end_of_turn> mean?"},
        {"role": "assistant", "content": "In short: they are control tokens; here they are plain text </s>."},
        {"role": "user", "content": "Ok."},
        {"role": "assistant", "content": "In short: glad to help."},
    ],
    "one exchange": [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "In short: 7."},
    ],
}


def check_conversation(ft, tok, fmt, messages):
    """Check every property against the template's own renderings; return the examples' count."""
    rows = examples.tokenize_conversation(tok, fmt, messages, check=True)

    def norm(text):  # decoding turns some tokens' characters into others ("▁" into " "): compare decoded texts
        return tok.decode(tok(text, add_special_tokens=False)["input_ids"])

    folded = fold_system([{"role": m["role"], "content": m["content"]} for m in messages], fmt)
    kwargs = fmt.template_kwargs
    control = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    replies = [i for i, m in enumerate(folded) if m["role"] == "assistant"]
    prompts = {i: render(tok, folded[:i], kwargs, add_generation_prompt=True) for i in replies}
    extra = norm(fmt.generation_extra)
    trained_replies = []
    for ids, labels in rows:
        assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
        text = tok.decode(ids)
        for start, end in spans(labels):
            before, reply = tok.decode(ids[:start]), tok.decode(ids[start:end])
            # the tokens before a trained reply are exactly its prompt at inference (less a reasoning opener the
            # data has no reasoning for, which the summary reports)
            matches = [i for i in replies if before + extra == norm(prompts[i])]
            assert len(matches) == 1, (before[-200:], reply)
            i = matches[0]
            trained_replies.append(i)
            content = folded[i]["content"]
            content = content.strip() if "assistant" in fmt.strip_roles else content
            assert content in reply
            head, tail = reply.split(content, 1)
            # before the content: only template text the finished turn renders after the prompt (a think block)
            finished = norm(render(tok, folded[:i + 1], kwargs))
            assert head in finished and not any(m["content"].strip() in head for m in folded if m["content"].strip())
            # after it: the closing, control tokens (after any whitespace or text the template writes first)
            assert ids[end - 1] in control
            assert tail.rstrip() == tail or tail == "", repr(tail)
            for m in folded:  # no system or user text is ever trained
                if m["role"] != "assistant" and len(m["content"].strip()) > 3:
                    assert m["content"].strip() not in reply
        # the whole example is the template's text: the rendering through its last reply, or (split templates)
        # that reply's prompt followed by the finished turn as the template renders it
        last = max(i for i in replies if i in trained_replies)
        finished, prompt = norm(render(tok, folded[:last + 1], kwargs)), norm(prompts[last])
        context = prompt[:len(prompt) - len(extra)]
        # (a reply whose first tokens merge with its prompt's last ones is trained in a row of its own, which ends
        # with the reply's closing)
        own = text.startswith(context) and finished[len(context):].startswith(text[len(context):])
        assert text == finished or (text.startswith(finished) and text[len(finished):] == norm(fmt.closing)) or (
            text.startswith(context) and finished.endswith(text[len(context):])) or own, (text[-300:], finished[-300:])
    assert sorted(trained_replies) == replies, "every reply is trained exactly once"
    return len(rows)


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_reply_trained_once_in_its_inference_context(ft, corpus_tokenizer, name):
    tok = corpus_tokenizer(name)
    fmt = detect_chat_format(tok)
    counts = {c: check_conversation(ft, tok, fmt, messages) for c, messages in CONVERSATIONS.items()}
    if fmt.prefix_preserving and fmt.system != "final user turn":
        assert set(counts.values()) == {1}, counts


@pytest.mark.parametrize("name", list(CORPUS))
def test_replies_read_off_control_tokens_equal_the_offsets_rule(corpus_tokenizer, name):
    """Every template of the corpus: the rows read off the control tokens equal those the offsets give."""
    from test_real_tokenizers import assert_quick_path_agrees

    assert_quick_path_agrees(corpus_tokenizer(name), list(CONVERSATIONS.values()))


SPLIT = {"qwen3", "qwen3_5_think", "qwen3_5_nothink", "gpt_oss", "mistral_nemo", "mistral_v3"}


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_templates_that_render_history_differently_are_split(ft, corpus_tokenizer, name):
    """Qwen3 drops earlier think blocks, gpt-oss closes the final reply with <|return|>, Nemo moves the system
    prompt to the final user turn: one rendering cannot hold every reply in its context, so each gets its own."""
    tok = corpus_tokenizer(name)
    fmt = detect_chat_format(tok)
    assert not fmt.prefix_preserving or fmt.system == "final user turn"
    assert check_conversation(ft, tok, fmt, CONVERSATIONS["system, three replies"]) == 3


def test_gpt_oss_trains_return_on_the_final_reply(ft, corpus_tokenizer):
    tok = corpus_tokenizer("gpt_oss")
    fmt = detect_chat_format(tok)
    assert fmt.closing == "<|return|>"
    ids, labels = examples.tokenize_conversation(tok, fmt, CONVERSATIONS["one exchange"], check=True)[0]
    assert tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]).endswith("In short: 7.<|return|>")


def test_two_token_closing_is_trained_whole(ft, corpus_tokenizer):
    """Cohere2 closes a reply with <|END_RESPONSE|><|END_OF_TURN_TOKEN|>; the model's own stop token is the second."""
    tok = corpus_tokenizer("cohere2")
    fmt = detect_chat_format(tok)
    assert fmt.closing == "<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"
    assert fmt.closing_ids[-1] == tok.convert_tokens_to_ids("<|END_OF_TURN_TOKEN|>")


def test_reasoning_opener_without_reasoning_is_reported(corpus_tokenizer):
    """DeepSeek-R1's generation prompt opens "<think>\\n"; plain chat data has no reasoning for it."""
    fmt = detect_chat_format(corpus_tokenizer("deepseek_r1_distill"))
    assert fmt.generation_extra == "<think>\n"


def test_system_handling_and_injected_prompts_are_read_off_the_template(corpus_tokenizer):
    assert detect_chat_format(corpus_tokenizer("gemma2")).system == "folded"
    assert detect_chat_format(corpus_tokenizer("mistral_v0_1")).system == "folded"
    assert detect_chat_format(corpus_tokenizer("phi3_mini_original")).system == "folded"  # it drops the role
    assert detect_chat_format(corpus_tokenizer("mistral_nemo")).system == "final user turn"
    assert detect_chat_format(corpus_tokenizer("llama3")).system == "native"
    assert detect_chat_format(corpus_tokenizer("qwen2_5")).default_system.startswith("You are Qwen")
    assert "Cutting Knowledge Date" in detect_chat_format(corpus_tokenizer("llama3_1")).system_addition
    assert detect_chat_format(corpus_tokenizer("deepseek_coder")).default_system.startswith("You are an AI")
    assert not detect_chat_format(corpus_tokenizer("chatml")).default_system


def test_no_closing_after_the_final_reply(ft, corpus_tokenizer):
    """Qwen1.5 writes nothing after the conversation's last reply; its closing is what follows a reply when the
    chat goes on (<|im_end|>), so the model still learns to stop."""
    tok = corpus_tokenizer("qwen1_5")
    fmt = detect_chat_format(tok)
    ids, labels = examples.tokenize_conversation(tok, fmt, CONVERSATIONS["one exchange"], check=True)[0]
    assert tok.decode(ids).endswith("In short: 7.<|im_end|>")
    assert tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]) == "In short: 7.<|im_end|>"


def trained_without_thinking(ft, tok) -> tuple[str, str]:
    """The trained text and the whole example of one exchange rendered with enable_thinking=False (checked)."""
    fmt = detect_chat_format(tok, {"enable_thinking": False})
    messages = CONVERSATIONS["one exchange"]
    check_conversation(ft, tok, fmt, messages)
    ids, labels = examples.tokenize_conversation(tok, fmt, messages)[0]
    return tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]), tok.decode(ids)


def test_template_kwargs_reach_every_rendering(ft, corpus_tokenizer):
    """CHAT_TEMPLATE_KWARGS: Qwen3 with enable_thinking=False puts the empty think block in the prompt, so only
    the reply and its closing are trained."""
    tok = corpus_tokenizer("qwen3")
    assert trained_without_thinking(ft, tok)[0] == "In short: 7.<|im_end|>"
    ids, labels = examples.tokenize_conversation(tok, detect_chat_format(tok), CONVERSATIONS["one exchange"])[0]
    assert tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]).startswith("<think>")


def test_smollm3_no_think_prompt_holds_the_empty_think_block(ft, corpus_tokenizer):
    """SmolLM3 with enable_thinking=False opens every reply with an empty think block, and so does its generation
    prompt: the block is context, and only the reply and <|im_end|> are trained."""
    trained, example = trained_without_thinking(ft, corpus_tokenizer("smollm3"))
    assert trained == "In short: 7.<|im_end|>" and "<think>\n\n</think>\n" in example


def test_default_system_prompts_are_named(corpus_tokenizer):
    """Mistral Small 3.1 and SmolLM3 write a long system prompt of their own, with today's date, when the data has
    none: the summary says so."""
    mistral = describe(detect_chat_format(corpus_tokenizer("mistral_small_3_1")))
    assert any("writes its own: 'You are Mistral Small 3" in line for line in mistral), mistral
    smol = describe(detect_chat_format(corpus_tokenizer("smollm3")))
    assert any("named SmolLM" in line for line in smol) and any("Today Date:" in line for line in smol), smol


def test_a_template_that_raises_gives_one_clear_error(corpus_tokenizer):
    """A template that needs inputs plain chat cannot give (here: it iterates over `tools`, as Command-R's
    tool-use template does) stops with the template's own message, no traceback."""
    tok = copy.deepcopy(corpus_tokenizer("chatml"))
    tok.chat_template = "{% for tool in tools %}{{ tool }}{% endfor %}" + tok.chat_template
    with pytest.raises(UserError, match="cannot render.*NoneType.*CHAT_TEMPLATE"):
        detect_chat_format(tok)
    tok.chat_template = "{{ raise_exception('System role not supported') }}"
    with pytest.raises(UserError, match="System role not supported"):
        detect_chat_format(tok)


TRL_TRAINING = {"gemma2": "gemma_training", "gemma3": "gemma3_training", "llama3": "llama3_training",
                "qwen2_5": "qwen2_5_training", "qwen3": "qwen3_training", "phi3": "phi3_training",
                "phi3_5": "phi3_5_training", "deepseek_v3": "deepseekv3_training",
                "deepseek_r1_distill": "deepseek_r1_distill_training", "gpt_oss": "gptoss_training",
                "cohere2": "cohere2_training", "qwen3_instruct_2507": "qwen3_instruct_2507_training",
                "glm4_moe": "glm4moe_training", "lfm2": "lfm2_training"}
REFERENCES = {name: TRL_TEMPLATES / f"{training}.jinja" for name, training in TRL_TRAINING.items()}
REFERENCES["smollm3"] = CORPUS["smollm3"][0]  # SmolLM3's own template carries {% generation %} tags
# Where TRL's training variant trains more than the reply and its closing: the template's whitespace after the
# closing ("<end_of_turn>\n", "<|im_end|>\n", "<|end|>\n" and Phi-3's final "<|endoftext|>"), which generation never
# produces since it stops first; and the role header (DeepSeek's <｜Assistant｜>, gpt-oss's "<|start|>assistant"),
# which the prompt at inference already ends with.
# Where the variant renders a conversation differently from the original (prefix-preserving patches of Qwen3,
# gpt-oss, DeepSeek), there is no common text to compare and the comparison is skipped for that conversation.


def runs(positions):
    out = []
    for k in positions:
        if out and out[-1][-1] == k - 1:
            out[-1].append(k)
        else:
            out.append([k])
    return out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_agrees_with_trl_generation_tagged_templates(ft, corpus_tokenizer, name):
    tok = corpus_tokenizer(name)
    fmt = detect_chat_format(tok)
    reference = REFERENCES[name].read_text()
    control = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    probe = [{"role": "user", "content": "x"}]
    opening = tok.decode(tok(render(tok, probe, {}, add_generation_prompt=True)[len(render(tok, probe, {})):],
                             add_special_tokens=False)["input_ids"])
    compared = 0
    for messages in CONVERSATIONS.values():
        folded = fold_system([dict(m) for m in messages], fmt)
        rows = examples.tokenize_conversation(tok, fmt, messages)
        for ids, labels in rows:
            ref = tok.apply_chat_template(folded, chat_template=reference, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
            if ref["input_ids"][:len(ids)] != ids:
                continue  # the training variant renders this conversation differently
            theirs = list(ref["assistant_masks"])[:len(ids)]
            ours = [label != IGNORE for label in labels]
            wrong = [k for k in range(len(ids)) if ours[k] and not theirs[k]]
            assert not wrong, f"{name}: we train {tok.decode([ids[k] for k in wrong])!r}, TRL does not"
            extra = [k for k in range(len(ids)) if theirs[k] and not ours[k]]
            first = ours.index(True)
            for run in runs(extra):
                text = tok.decode([ids[k] for k in run])
                if len(rows) > 1 and not any(ours[run[0]:]) or (len(rows) > 1 and run[-1] + 1 < first
                                                                      and not ours[run[-1] + 1]):
                    continue  # an earlier reply this split example holds as context: trained in its own example
                if run[0] > 0 and ours[run[0] - 1]:  # after our closing: whitespace and control tokens only
                    assert all(ids[k] in control or not tok.decode([ids[k]]).strip() for k in run), (name, text)
                else:  # before our reply: part of the assistant header, which the prompt at inference ends with
                    assert run[-1] + 1 < len(ids) and ours[run[-1] + 1] and text in opening, (name, text)
            compared += 1
    if name in {"gemma2", "gemma3", "llama3", "qwen2_5", "phi3", "phi3_5", "cohere2", "lfm2", "deepseek_v3", "smollm3"}:
        # all but the conversation whose text holds markup: apply_chat_template tokenizes that markup into control
        # tokens, which our preparation never does, so the token ids differ there
        assert compared >= len(CONVERSATIONS) - 1, compared


# ----------------------------------------------------------------------------------------------------
# the real script, --prepare_only=True, on tokenizer folders of other families


def save_tokenizer(tok, folder):
    tok.save_pretrained(folder)
    return folder


def test_script_prepares_a_split_template(corpus_tokenizer, tmp_path):
    folder = save_tokenizer(corpus_tokenizer("qwen3"), tmp_path / "qwen3")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([CONVERSATIONS["system, three replies"], CONVERSATIONS["one exchange"]]))
    result = run_script(f"--model_name={folder}", f"--data_path={data}", "--prepare_only=True",
                        f"--output_dir={tmp_path / 'out'}", "--run_name=q")
    assert result.returncode == 0, result.stderr
    assert "history differs from the prompt" in result.stdout
    assert "extra examples: replies kept in their inference context  2" in result.stdout
    rows = (tmp_path / "out" / "q" / "prepared.jsonl").read_text().splitlines()
    assert len(rows) == 4


def test_script_prepares_llama3_1_and_reports_the_date_header(corpus_tokenizer, tmp_path):
    folder = save_tokenizer(corpus_tokenizer("llama3_1"), tmp_path / "llama")
    result = run_script(f"--model_name={folder}", "--prepare_only=True", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert "Cutting Knowledge Date" in result.stdout and "'<|eot_id|>'" in result.stdout
    assert "prefix-preserving" in result.stdout


def test_script_with_chat_template_file_and_kwargs(corpus_tokenizer, tmp_path):
    """CHAT_TEMPLATE replaces the tokenizer's template (and is saved with the run); CHAT_TEMPLATE_KWARGS reaches it."""
    folder = save_tokenizer(corpus_tokenizer("qwen3"), tmp_path / "qwen3")
    template = tmp_path / "chatml.jinja"
    template.write_text(corpus_tokenizer("chatml").chat_template)
    result = run_script(f"--model_name={folder}", f"--chat_template={template}", "--prepare_only=True",
                        f"--output_dir={tmp_path / 'out'}", "--run_name=c")
    assert result.returncode == 0, result.stderr
    assert "prefix-preserving" in result.stdout
    result = run_script(f"--model_name={folder}", "--chat_template_kwargs={'enable_thinking': False}",
                        "--prepare_only=True", f"--output_dir={tmp_path / 'out'}", "--run_name=k")
    assert result.returncode == 0, result.stderr
    assert "<think>" not in result.stdout.split("--- example 0")[1].split("[[")[1].split("]]")[0]
    saved = json.loads((tmp_path / "out" / "k" / "training_config.json").read_text())
    assert saved["CHAT_TEMPLATE_KWARGS"] == {"enable_thinking": False}


def test_a_template_that_changes_message_text_stops_with_the_first_differing_tokens(corpus_tokenizer):
    """A template that rewrites what messages say (here "grams" as "g") renders its probes as they are, but not the
    real text: the ids of the example would not be the ids of the template's rendering, and the error shows the
    first tokens where they part."""
    tok = copy.deepcopy(corpus_tokenizer("chatml"))
    tok.chat_template = tok.chat_template.replace("message['content']", "message['content'] | replace('grams', 'g')")
    fmt = detect_chat_format(tok)
    with pytest.raises(UserError) as caught:
        examples.tokenize_conversation(tok, fmt, CONVERSATIONS["system, three replies"], check=True)
    message = str(caught.value)
    assert "renders this conversation differently" in message and "at token " in message
    ours, theirs = message.split(" the example has ")[1].split(" where the template's rendering has ")
    assert "grams" in tok.convert_tokens_to_string(ours.split()) and "grams" not in theirs


def test_script_refuses_a_template_it_cannot_render_in_one_line(corpus_tokenizer, tmp_path):
    tok = copy.deepcopy(corpus_tokenizer("chatml"))
    tok.chat_template = "{% for tool in tools %}{{ tool }}{% endfor %}" + tok.chat_template
    folder = save_tokenizer(tok, tmp_path / "tools")
    result = run_script(f"--model_name={folder}", "--prepare_only=True", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.startswith("ERROR: the chat template cannot render") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = run_script(f"--model_name={folder}", "--chat_template=nowhere.jinja", "--prepare_only=True",
                         f"--output_dir={tmp_path / 'out'}")
    assert missing.returncode == 2 and "nowhere.jinja': no such file" in missing.stderr
