"""Exact to the token id on real tokenizers of other families (tests/real_tokenizers.py): SentencePiece with its
prefix space (Mistral v3 and v1), byte-level BPE (Mistral Nemo's tekken, Llama 3).

For every trained reply, the ids before it must be the tokenizer's own apply_chat_template(history,
add_generation_prompt=True, tokenize=True), what a server feeds the model, and the trained ids must decode to exactly
the reply and its closing as the template renders them. Mistral's masks are also held against mistral-common's own
encoder."""

import re
from collections import Counter

import pytest

from multiturn.chat_format import prompt_messages, render
from multiturn.template_probes import detect_chat_format
from real_tokenizers import REAL, build, original_encoder, sample_texts
from template_corpus import trained_spans
from multiturn import chat_format, examples, token_ids, validation

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}, "required": ["city"]}}}]

CONVERSATIONS = {
    "plain": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"},
              {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Fine, thanks.\nAnd you?"}],
    "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
               {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"},
               {"role": "assistant", "content": "Red, 赤, 🔴."}],
    "tools": [{"role": "user", "content": "Weather in Paris?", "tools": TOOLS},
              {"role": "assistant", "content": "", "tool_calls": [
                  {"type": "function", "id": "call00001", "function": {"name": "get_weather",
                                                                       "arguments": {"city": "Paris"}}}]},
              {"role": "tool", "content": '{"temp": 21, "sky": "clear"}', "tool_call_id": "call00001"},
              {"role": "assistant", "content": "It is 21 °C and clear in Paris."}],
    "runs of spaces": [{"role": "user", "content": "a  b   c\n  indented"},
                       {"role": "assistant", "content": "x  =  1\n    y = 2"}],
    "reasoning inline": [{"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"}],
}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def spaces_run(text: str) -> bool:
    return bool(re.search(r"  ", text)) or text.startswith(" ")


@pytest.mark.parametrize("name", list(REAL))
def test_converted_tokenizer_equals_its_original(real, name):
    """The tokenizer the script masks with encodes text as its original does: mistral-common's own tokenizers, and
    tiktoken with Llama 3's ranks. transformers' conversion of SentencePiece merges runs of spaces differently from
    SentencePiece itself (a property of the conversion, which Mistral's published tokenizer.json files share): for
    those the masks follow the converted tokenizer, the one a server using that folder runs."""
    tok, original = real(name), original_encoder(name)
    sentencepiece = REAL[name][0].startswith("sentencepiece")
    texts = [t for t in sample_texts(3000) if not (sentencepiece and spaces_run(t))]
    assert len(texts) > 500
    different = [t for t in texts if tok(t, add_special_tokens=False)["input_ids"] != original(t)]
    assert not different, different[:3]


@pytest.mark.parametrize("name", list(REAL) + ["gemma"])
def test_token_positions_read_from_the_encoding_follow_the_offsets(real, tokenizer, name):
    """The masks read where characters fall among the tokens from each Encoding's char-to-token map (a few lookups
    at the pieces' edges); the rule is stated on the tokens' offsets: a token belongs to where its first character
    is, and a merge across an edge is a token that starts before it and ends after it. Both agree at every
    character of real renderings' texts, on every real tokenizer (byte fallback, prefix spaces, byte-level BPE)."""
    tok = tokenizer if name == "gemma" else real(name)
    texts = sample_texts(300, seed=1) + ["<s>[INST] Hi there [/INST] Hello</s>", "\n\n\n", " ", "🤖", "a\u00a0b"]
    for text, encoding in zip(texts, token_ids.encodings(tok, texts)):
        fast, rule = token_ids._Tokens(encoding, len(text)), token_ids._Offsets(encoding.offsets)
        for s in range(len(text) + 1):
            assert (fast.before(s), fast.straddles(s)) == (rule.before(s), rule.straddles(s)), (text, s)


@pytest.mark.parametrize("name", list(REAL) + ["gemma"])
def test_replies_read_off_control_tokens_equal_the_offsets_rule(real, tokenizer, name):
    """Where each reply is trained whole and ends with a control token, its tokens are read off the control tokens
    (an encoding without offsets); the offsets' rule (what kinds=True reads) gives the same rows."""
    tok = tokenizer if name == "gemma" else real(name)
    assert_quick_path_agrees(tok, [c for c in CONVERSATIONS.values()])


def assert_quick_path_agrees(tok, conversations):
    fmt = detect_chat_format(tok)
    rendered = []
    for raw in conversations:
        messages = examples.for_template(validation.clean_conversation(raw, "test", False, Counter()), fmt)
        tools = validation.conversation_tools(messages)
        if tools and not fmt.renders_tool_calls:
            continue
        rendered += chat_format.conversation_examples(tok, fmt, messages, tools)
    quick = [rows for rows, _ in token_ids.encode_examples(tok, rendered)]
    by_offsets = [[row[:2] for row in rows] for rows, _ in token_ids.encode_examples(tok, rendered, kinds=True)]
    assert quick == by_offsets
    # and the control tokens were read: each example's replies are found there
    info = token_ids._info(tok)
    for e in rendered:
        text, starts = e.text, token_ids._piece_starts(e.pieces)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert token_ids._replies_at_controls(info, e.pieces, starts, text, info.controls(text), ids) is not None


def conversation_rows(ft, tok, fmt, raw):
    messages = validation.clean_conversation(raw, "test", False, Counter())
    messages = examples.for_template(messages, fmt)
    tools = validation.conversation_tools(messages)
    return messages, tools, examples.tokenize_conversation(tok, fmt, messages, check=True, tools=tools)


def check_ids(ft, tok, fmt, raw):
    """Every property at the level of ids, against the tokenizer's own apply_chat_template(tokenize=True)."""
    messages, tools, rows = conversation_rows(ft, tok, fmt, raw)
    folded = prompt_messages(messages, fmt)
    kwargs = dict(fmt.template_kwargs, **({"tools": tools} if tools else {}))
    offset = len(messages) - len(folded)  # a folded system message
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    prompts = {i: tok.apply_chat_template(folded[:i - offset], add_generation_prompt=True, tokenize=True,
                                          **kwargs)["input_ids"] for i in replies}
    controls = [t.content for t in tok.added_tokens_decoder.values() if t.special]
    seen = []
    for ids, labels in rows:
        for start, end in trained_spans(labels):
            matches = [i for i in replies if prompts[i] == ids[:start]]
            assert len(matches) == 1, (tok.convert_ids_to_tokens(ids[max(0, start - 8):start + 4]),)
            i = matches[0]
            seen.append(i)
            # the trained ids decode to exactly the reply and its closing as the template renders them after the
            # prompt, with no stray prefix space and no merge split at either edge
            # (the finished turn as the template renders it: after the header the prompt ends with, from its last
            # control token on)
            prompt_text = render(tok, folded[:i - offset], kwargs, add_generation_prompt=True)
            finished = render(tok, folded[:i - offset + 1], kwargs)
            last_control = max(prompt_text.rfind(t) for t in controls if t in prompt_text)
            header = prompt_text[last_control:]
            generated = tok.decode(ids[:end])[len(tok.decode(ids[:start])):]
            assert header + generated in finished and generated.endswith(fmt.closing), (generated, finished)
            for m in messages:  # no user, system or tool text is trained
                if m["role"] != "assistant" and len(m["content"]) > 3:
                    assert m["content"] not in generated
    assert sorted(seen) == [i for i in replies if messages[i].get("train", True)], "every reply trained once"
    return rows


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(REAL))
def test_masks_exact_to_the_id(ft, real, name, conversation):
    tok = real(name)
    fmt = detect_chat_format(tok)
    raw = CONVERSATIONS[conversation]
    if conversation == "tools" and not fmt.renders_tool_calls:
        pytest.skip(f"{name}'s template renders no tool calls")
    check_ids(ft, tok, fmt, raw)


def test_no_stray_prefix_space_on_sentencepiece(ft, real):
    """Mistral v3: the tokenizer's own encoding of this conversation, which every server feeds the model, has no
    lone "▁" before a message; the reply trained is "▁Hello </s>", not "▁ ▁Hello </s>"."""
    tok = real("mistral_v3")
    fmt = detect_chat_format(tok)
    raw = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
    (ids, labels), = conversation_rows(ft, tok, fmt, raw)[2]
    assert ids == tok.apply_chat_template(raw, tokenize=True)["input_ids"] == [1, 3, 16127, 1504, 4, 23325, 2]
    assert [x for x in labels if x != -100] == [23325, 2]


@pytest.mark.parametrize("name, text, merged", [
    ("mistral_nemo", "Be brief.", ".\n\n"),  # the system prompt's last character and the template's blank line
    ("llama3_1", None, '"{'),  # a tool result inside the template's quotes (tojson)
])
def test_merges_across_a_message_edge_are_the_tokenizers(ft, real, name, text, merged):
    """The text is the same either way; the ids are the tokenizer's own only if the message and the template text
    around it are tokenized together."""
    tok = real(name)
    fmt = detect_chat_format(tok)
    raw = CONVERSATIONS["system" if text else "tools"]
    rows = check_ids(ft, tok, fmt, raw)
    merged_id = tok.convert_tokens_to_ids(tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(merged)[0][0]
                                          if name == "llama3_1" else tok.tokenize(merged)[0])
    assert len(tok.tokenize(merged)) == 1, tok.tokenize(merged)
    assert any(merged_id in ids for ids, _ in rows)


def test_mistral_masks_equal_mistral_commons_encoder(ft, real):
    """mistral-common's own encoder (what Mistral's fine-tuning code trains on: each assistant message's tokens
    through </s>) gives the same prompt ids for every reply and the same trained ids."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from real_tokenizers import MISTRAL_DATA

    tok = real("mistral_v3")
    fmt = detect_chat_format(tok)
    reference = MistralTokenizer.from_file(str(MISTRAL_DATA / "mistral_instruct_tokenizer_240323.model.v3"))
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    for raw in (CONVERSATIONS["plain"], CONVERSATIONS["system"]):
        messages, _, rows = conversation_rows(ft, tok, fmt, raw)
        trained = sorted((ids[:s], ids[s:e]) for ids, labels in rows for s, e in trained_spans(labels))
        expected = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            history = [kinds[x["role"]](content=x["content"]) for x in messages[:i]]
            prompt = reference.encode_chat_completion(ChatCompletionRequest(messages=history)).tokens
            reply = reference.instruct_tokenizer.encode_assistant_message(
                AssistantMessage(content=m["content"]), is_before_last_user_message=False)
            expected.append((prompt, reply))
        assert trained == sorted(expected)


@pytest.mark.parametrize("name", ["qwen3", "smollm3", "nemotron_3_nano"])
def test_whitespace_the_template_strips_is_trained_as_rendered(ft, corpus_tokenizer, name):
    """Qwen3's, SmolLM3's and Nemotron 3's templates strip the newlines around a reply: the reply is trained as
    the template renders it (what the model sees and produces), counted once for the summary; nothing stops."""
    tok = corpus_tokenizer(name)
    fmt = detect_chat_format(tok, {"enable_thinking": False} if name == "smollm3" else {})
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\nI noticed the spaces.\n\n"}]
    rendered = chat_format.conversation_examples(tok, fmt, messages)
    (rows, notes), = token_ids.encode_examples(tok, rendered)
    (ids, labels), = rows
    (start, end), = trained_spans(labels)
    prompt = render(tok, messages[:1], fmt.template_kwargs, add_generation_prompt=True)
    prompt = tok(prompt[:len(prompt) - len(fmt.generation_extra)], add_special_tokens=False)["input_ids"]
    assert ids[:start] == prompt
    finished = render(tok, messages, fmt.template_kwargs)
    assert tok.decode(ids[start:end]) in finished and "I noticed the spaces." in tok.decode(ids[start:end])
    assert notes["replies whose surrounding whitespace the template strips (trained as rendered)"] == 1
    examples.tokenize_conversation(tok, fmt, messages, check=True)  # the check passes too


def test_template_that_drops_a_parallel_tool_call_stops_with_one_error(ft, corpus_tokenizer):
    """gpt-oss's template renders only the first call of an assistant message: the second would be lost, and the
    two results would answer one call. One ERROR says so and what to do."""
    tok = corpus_tokenizer("gpt_oss")
    fmt = detect_chat_format(tok)
    calls = [{"type": "function", "id": f"c{k}", "function": {"name": n, "arguments": {"city": "Paris"}}}
             for k, n in enumerate(["get_weather", "get_time"])]
    messages = [{"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": calls},
                {"role": "tool", "content": "21 C", "tool_call_id": "c0"},
                {"role": "tool", "content": "10:00", "tool_call_id": "c1"},
                {"role": "assistant", "content": "21 C at 10:00."}]
    from multiturn.chat_format import UserError

    with pytest.raises(UserError, match=r"leaves out get_time.*one call per message"):
        examples.tokenize_conversation(tok, fmt, messages, check=True, tools=TOOLS)
    one = [messages[0], dict(messages[1], tool_calls=calls[:1]), messages[2],
           dict(messages[1], tool_calls=calls[1:]), messages[3], messages[4]]
    assert examples.tokenize_conversation(tok, fmt, one, check=True, tools=TOOLS)  # one call per message renders whole
