"""Agent and reasoning conversations: tool definitions, tool calls, tool results and reasoning, through the real
script in prepare-only mode on the Qwen2.5, Llama 3.1, Qwen3, Mistral v0.3 and gpt-oss templates (the real Gemma 3
tokenizer with their control tokens added, tests/template_corpus.py).

Every property is checked against the template's own renderings of the test's messages, computed here with
apply_chat_template (not with the script's conversion): each trained span is one assistant turn, its reasoning,
text, tool calls and closing, exactly as the finished turn renders; the tokens before it are the conversation so
far rendered with add_generation_prompt=True, tools included; every assistant turn is trained exactly once; no
tool result, user or system text is trained."""

import copy
import json

import pytest

from agent_data import TOOLS, trajectory
from multiturn.template_probes import detect_chat_format
from conftest import run_script
from template_corpus import TRL_TEMPLATES
from template_corpus import trained_spans as spans
from multiturn import data, errors, examples, validation

IGNORE = -100
AGENT_TEMPLATES = ["qwen2_5", "llama3_1", "qwen3", "mistral_v3", "gpt_oss"]
ONE_CALL_PER_TURN = {"llama3_1", "gpt_oss"}  # their templates render the first call of a turn only


def variants(name, fmt):
    """The test conversations for a template: the trajectory without and with reasoning (under the field the
    template reads; Qwen2.5 reads none, so its reasoning is left out and its variant is the plain one)."""
    single = name in ONE_CALL_PER_TURN
    plain = trajectory(single_calls=single)
    out = [plain]
    if fmt.reasoning_field:
        out.append(trajectory(reasoning=True, field=fmt.reasoning_field, single_calls=single))
    return out


def is_turn(prompt: str, finished: str, reply: str) -> bool:
    """Whether reply is all that the finished rendering of a turn adds after its prompt. Where the template renders
    the history as the prompt shows it, that is the rest of the rendering; where the history differs (gpt-oss
    drops earlier reasoning), the rendering ends with the reply, right after the prompt's assistant header."""
    common = 0
    while common < min(len(prompt), len(finished)) and prompt[common] == finished[common]:
        common += 1
    if common == len(prompt):
        return finished[common:] == reply
    return finished.endswith(reply) and finished[:len(finished) - len(reply)].endswith(prompt[-12:])


def check_prepared(tok, conversations, rows, train_reasoning=True):
    """Check the prepared rows against the template's own renderings of the conversations (see module doc)."""
    def render(messages, prompt=False):
        return tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=prompt)

    def norm(text):  # decoding maps some characters: compare decoded texts
        return tok.decode(tok(text, add_special_tokens=False)["input_ids"])

    turns = {(c, i): None for c, msgs in enumerate(conversations) for i, m in enumerate(msgs)
             if m["role"] == "assistant"}
    prompts = {key: norm(render(conversations[key[0]][:key[1]], prompt=True)) for key in turns}
    finished = {key: norm(render(conversations[key[0]][:key[1] + 1])).rstrip("\n") for key in turns}
    trained = []
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
        for start, end in spans(labels):
            before, reply = tok.decode(ids[:start]), tok.decode(ids[start:end])
            # the span is the whole turn as the template renders it after the assistant header, and what comes
            # before it is that turn's prompt at inference
            matches = [key for key in turns if prompts[key] == before and is_turn(prompts[key], finished[key], reply)]
            assert len(matches) == 1, (before[-300:], reply)
            c, i = matches[0]
            trained.append((c, i))
            messages = conversations[c]
            m = messages[i]
            assert m["content"].strip() in reply
            for call in m.get("tool_calls", [])[:1]:
                assert call["function"]["name"] in reply
            for other in messages:  # no tool result, user or system text is trained
                if other["role"] in ("tool", "user", "system"):
                    for line in other["content"].splitlines():
                        assert line.strip('"{}') not in reply, (other, reply)
    assert sorted(trained) == sorted(turns), "every assistant turn is trained exactly once"


def save_tokenizer(tok, folder):
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", AGENT_TEMPLATES)
def test_agent_trajectories_train_exactly_the_assistant_turns(corpus_tokenizer, tmp_path, name):
    tok = corpus_tokenizer(name)
    fmt = detect_chat_format(tok)
    conversations = variants(name, fmt)
    data = tmp_path / "agents.jsonl"
    data.write_text("\n".join(json.dumps({"messages": c, "tools": TOOLS}) for c in conversations) + "\n")
    folder = save_tokenizer(tok, tmp_path / name)
    result = run_script(f"--model_name={folder}", f"--data_path={data}", "--prepare_only=True",
                        f"--output_dir={tmp_path / 'out'}", "--run_name=a", "--max_seq_length=8192",
                        "--preview_examples=10")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "a" / "prepared.jsonl").read_text().splitlines()]
    check_prepared(tok, conversations, rows)
    # the preview marks tool calls and the untrained tool results apart from the replies
    preview = result.stdout.split("--- example 0")[1]
    assert "<<" in preview and "((" in preview and "[[" in preview
    assert "tool results (context, never trained): " in result.stdout


def test_reasoning_the_template_cannot_render_is_left_out_and_said_once(corpus_tokenizer, tmp_path):
    """Qwen2.5 reads no reasoning field: the replies train, the reasoning is left out, one NOTE says how many."""
    tok = corpus_tokenizer("qwen2_5")
    data = tmp_path / "agents.json"
    data.write_text(json.dumps([{"messages": trajectory(reasoning=True), "tools": TOOLS}]))
    result = run_script(f"--model_name={save_tokenizer(tok, tmp_path / 'q')}", f"--data_path={data}",
                        "--prepare_only=True", f"--output_dir={tmp_path / 'out'}", "--run_name=a")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("NOTE: 5 assistant messages carry reasoning") == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "a" / "prepared.jsonl").read_text().splitlines()]
    check_prepared(tok, [trajectory()], rows)


def test_train_reasoning_false_keeps_it_as_context(ft, corpus_tokenizer):
    tok = corpus_tokenizer("qwen3")
    fmt = detect_chat_format(tok)
    first = dict(trajectory(True)[0], tools=TOOLS)
    cleaned, _ = validation.clean_conversations([[first] + trajectory(True)[1:]], "d", False)
    messages = examples.for_template(cleaned[0], fmt)
    for train, expect in ((True, True), (False, False)):
        rows = examples.tokenize_conversation(tok, fmt, messages, True, TOOLS, train_reasoning=train)
        trained = "".join(tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]) for ids, labels in rows)
        whole = "".join(tok.decode(ids) for ids, _ in rows)
        assert ("ask for both cities at once" in trained) is expect and "ask for both cities at once" in whole
        assert "108.50 USD" in trained and '"name": "get_weather"' in trained and "temp_c" not in trained


def test_inline_think_moves_to_the_template_field(ft, corpus_tokenizer):
    """<think>...</think> opening the content is the template's reasoning: Qwen3 renders it where the model sees
    it, and the check against the template's own rendering of the inline form passes."""
    tok = corpus_tokenizer("qwen3")
    fmt = detect_chat_format(tok)
    inline = [{"role": "user", "content": "Name a prime."},
              {"role": "assistant", "content": "<think>\nSmall ones: 2, 3, 5, 7.\n</think>\n\nIn short: 7."}]
    cleaned, _ = validation.clean_conversations([inline], "d", False)
    (ids, labels), = examples.tokenize_conversation(tok, fmt, examples.for_template(cleaned[0], fmt), check=True)
    assert tok.decode(ids) == tok.decode(tok(tok.apply_chat_template(inline, tokenize=False),
                                             add_special_tokens=False)["input_ids"])
    assert tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]).startswith("<think>\nSmall ones")


BAD = {
    "call without a name": ({"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"arguments": {}}}]}, "message 2, tool call 0: the call has no function name"),
    "arguments not JSON": ({"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{city: Paris}"}}]},
        "message 2, tool call 0: the arguments of 'f' is not valid JSON"),
    "result without a call": ({"role": "tool", "content": "42"}, "message 2: a tool result with no tool call before"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_trajectory_names_the_message_to_fix(ft, case):
    message, expected = BAD[case]
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, message,
                    {"role": "assistant", "content": "a"}]
    with pytest.raises(errors.UserError) as error:
        validation.clean_conversations([[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                conversation], "data.json", False)
    assert str(error.value).startswith("data.json: conversation 1, ") and expected in str(error.value), error.value


def test_unanswered_call_is_counted_or_an_error_under_strict(ft):
    cut = trajectory()[:3]  # the trajectory stops at its first calls
    cleaned, problems = validation.clean_conversations([cut], "d.json", False)
    assert problems["tool calls no result answers"] == 1 and cleaned[0][-1]["tool_calls"]
    with pytest.raises(errors.UserError, match="conversation 0, message 2: tool calls no result answers"):
        validation.clean_conversations([cut], "d.json", True)


def test_sharegpt_function_call_and_observation(ft):
    """LLaMA-Factory's ShareGPT: function_call and observation turns, tools and system as JSON beside them."""
    record = {"system": "Be brief.", "tools": json.dumps([TOOLS[0]["function"]]), "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": '{"temp_c": 18}'},
        {"from": "gpt", "value": "In short: 18°C."}]}
    messages = data.record_messages(record, "conversations", "c")
    (cleaned,), problems = validation.clean_conversations([messages], "d.json", False)
    assert not problems
    assert [m["role"] for m in cleaned] == ["system", "user", "assistant", "tool", "assistant"]
    assert cleaned[2]["tool_calls"] == [{"type": "function", "function": {"name": "get_weather",
                                                                          "arguments": {"city": "Paris"}}}]
    assert validation.conversation_tools(cleaned) == [TOOLS[0]] and cleaned[0]["content"] == "Be brief."


def test_llama3_1_parallel_calls_stop_with_the_template_message(corpus_tokenizer, tmp_path):
    """Llama 3.1's template allows one call per turn: its own message, in one report naming the conversation."""
    data = tmp_path / "agents.jsonl"
    data.write_text(json.dumps({"messages": trajectory(single_calls=True), "tools": TOOLS}) + "\n"
                    + json.dumps({"messages": trajectory(), "tools": TOOLS}) + "\n")
    result = run_script(f"--model_name={save_tokenizer(corpus_tokenizer('llama3_1'), tmp_path / 'l')}",
                        f"--data_path={data}", "--prepare_only=True", f"--output_dir={tmp_path / 'out'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 2 and lines[0].startswith("ERROR: "), result.stderr
    assert lines[1].startswith(f"  {data}: conversation 1: ") and "single tool-calls" in lines[1]


def test_tools_for_a_template_without_tools_stop_before_the_model_loads(small_model, tmp_path):
    data = tmp_path / "agents.json"
    data.write_text(json.dumps([{"messages": trajectory(), "tools": TOOLS}]))
    result = run_script(f"--model_name={small_model}", f"--data_path={data}", "--prepare_only=True",
                        f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not render" in result.stderr and str(small_model) in result.stderr and "CHAT_TEMPLATE" in result.stderr


def gemma_tool_template() -> str:
    """Qwen2.5's tool-calling template written with Gemma's own control tokens, so the small model can train on
    tool data without new embedding rows."""
    template = (TRL_TEMPLATES / "qwen2_5.jinja").read_text()
    return template.replace("<|im_start|>", "<start_of_turn>").replace("<|im_end|>", "<end_of_turn>")


@pytest.fixture
def agent_sources(tmp_path):
    """The same two trajectories as JSONL, Parquet, a save_to_disk folder and a local dataset repository."""
    import datasets

    rows = [{"messages": json.dumps(trajectory()), "tools": json.dumps(TOOLS)},
            {"messages": json.dumps(trajectory(single_calls=True)[:9]), "tools": json.dumps(TOOLS)}]
    decoded = [{"messages": json.loads(r["messages"]), "tools": TOOLS} for r in rows]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in decoded))
    # Arrow stores messages as structs with every field, null where a message has none, and arguments as JSON
    table = datasets.Dataset.from_list([{"messages": [dict(m, tool_calls=[
        dict(c, function=dict(c["function"], arguments=json.dumps(c["function"]["arguments"])))
        for c in m.get("tool_calls", [])] or None) for m in r["messages"]], "tools": json.dumps(TOOLS)}
        for r in decoded])
    table.to_parquet(str(tmp_path / "data.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    repo = tmp_path / "org" / "agents"
    (repo / "data").mkdir(parents=True)
    table.to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    return {"jsonl": tmp_path / "data.jsonl", "parquet": tmp_path / "data.parquet", "save_to_disk": tmp_path / "saved",
            "dataset repository": f"{repo}:train"}


def test_parquet_save_to_disk_and_dataset_ids_read_like_jsonl(ft, agent_sources):
    expected = validation.clean_conversations(data.load_conversations(str(agent_sources["jsonl"]))[0], "d", False)
    for kind in ("parquet", "save_to_disk", "dataset repository"):
        raw, fmt_name = data.load_conversations(str(agent_sources[kind]))
        assert validation.clean_conversations(raw, "d", False) == expected, kind
        assert "rows" in fmt_name


def test_a_bad_row_of_a_dataset_is_named(ft, tmp_path):
    import datasets

    bad = trajectory()
    bad[5]["tool_calls"][0]["function"]["arguments"] = "{not json"
    datasets.Dataset.from_list([{"messages": json.dumps(trajectory())}, {"messages": json.dumps(bad)}]).to_parquet(
        str(tmp_path / "d.parquet"))
    # JSON-encoded messages are not accepted silently: the column must hold messages
    with pytest.raises(errors.UserError):
        validation.clean_conversations(data.load_conversations(str(tmp_path / "d.parquet"))[0], "d.parquet", False)
    rows = [{"messages": copy.deepcopy(c)} for c in (trajectory(), bad)]
    for r in rows:
        for m in r["messages"]:
            m["tool_calls"] = json.dumps(m.get("tool_calls")) if m.get("tool_calls") else None
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "e.parquet"))
    with pytest.raises(errors.UserError, match=r"e.parquet: conversation 1, message 5, tool call 0: the arguments"):
        path = tmp_path / "e.parquet"
        validation.clean_conversations(data.load_conversations(str(path))[0], str(path), False)


def test_short_training_run_on_tool_data(small_model, tmp_path, agent_sources):
    """The real script trains the small model on agent trajectories read from Parquet (a tool-calling template
    written with Gemma's tokens) and saves the adapter."""
    template = tmp_path / "gemma_tools.jinja"
    template.write_text(gemma_tool_template())
    result = run_script(f"--model_name={small_model}", f"--chat_template={template}",
                        f"--data_path={agent_sources['parquet']}", "--max_steps=2", "--batch_size=1",
                        "--gradient_accumulation_steps=1", "--max_seq_length=1024", "--save_steps=0",
                        "--train_control_tokens=False", f"--output_dir={tmp_path / 'out'}", "--run_name=t")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "t" / "adapter_model.safetensors").exists()
    assert "assistant messages with tool calls: " in result.stdout and "<<" in result.stdout


def test_deepseek_r1_inline_reasoning_is_left_out_as_its_template_does(ft, corpus_tokenizer, tmp_path):
    """DeepSeek-R1's distilled template cuts <think>...</think> out of every reply, the last one too: it never
    renders reasoning to train. The replies train (checked against the template's rendering), the reasoning is
    left out, and one NOTE says how many replies had some. A template that renders content as it is (ChatML)
    trains inline reasoning as part of the reply."""
    conversation = [{"role": "user", "content": "Name a prime."},
                    {"role": "assistant", "content": "<think>\nSmall ones: 2, 3, 5, 7.\n</think>\n\nIn short: 7."},
                    {"role": "user", "content": "Another?"},
                    {"role": "assistant", "content": "<think>\nEleven is prime.\n</think>\n\nIn short: 11."}]
    r1, chatml = corpus_tokenizer("deepseek_r1_distill"), corpus_tokenizer("chatml")
    for tok, kept in ((r1, False), (chatml, True)):
        fmt = detect_chat_format(tok)
        assert fmt.drops_inline_reasoning is not kept and not fmt.reasoning_field
        cleaned, _ = validation.clean_conversations([conversation], "d", False)
        rows = examples.tokenize_conversation(tok, fmt, examples.for_template(cleaned[0], fmt), check=True)
        trained = "".join(tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]) for ids, labels in rows)
        assert "In short: 7." in trained and "In short: 11." in trained
        assert ("Eleven is prime." in trained) is kept and ("Small ones" in trained) is kept
    data = tmp_path / "r1.json"
    data.write_text(json.dumps([conversation]))
    result = run_script(f"--model_name={save_tokenizer(r1, tmp_path / 'r1')}", f"--data_path={data}",
                        "--prepare_only=True", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("NOTE: 2 assistant messages carry reasoning") == 1


def test_deepseek_v3_gets_its_call_arguments_as_text(ft, corpus_tokenizer):
    """DeepSeek V3's template concatenates a call's arguments into its text, so they must reach it as a JSON
    string (most templates want an object and write it with tojson): read off the template, and each example
    checked against the template's own rendering of the trajectory."""
    tok = corpus_tokenizer("deepseek_v3")
    fmt = detect_chat_format(tok)
    assert fmt.renders_tool_calls and fmt.arguments_as_text and not fmt.renders_tools
    assert not detect_chat_format(corpus_tokenizer("qwen2_5")).arguments_as_text
    cleaned, _ = validation.clean_conversations([trajectory()], "d", False)
    rows = examples.tokenize_conversation(tok, fmt, examples.for_template(cleaned[0], fmt), check=True)
    trained = "".join(tok.decode([t for t, x in zip(ids, labels) if x != IGNORE]) for ids, labels in rows)
    assert '```json\n{"city": "Paris"}\n```' in trained and "108.50 USD" in trained and "temp_c" not in trained
