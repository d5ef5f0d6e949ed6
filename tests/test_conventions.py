"""Data as its authors wrote it: files in OpenAI's fine-tuning format, Axolotl's, torchtune's and LLaMA-Factory's
conventions, written as their documentation shows, prepared by the real script on the real Gemma 3 tokenizer;
keys nothing reads named; media parts reported; several sources mixed by weight; conversations a template cannot
render reported once or left out.

Expected ids come from the tokenizer's own apply_chat_template(tokenize=True) of the conversation as the author
means it (a weight-0 reply in the context, parts joined, the refusal as the reply), not from the code under test.
"""

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_script
from multiturn import examples, sources, template_probes, validation
from test_data import assert_user_error, config, folded, prepared_rows, summary_counts, trained_texts

EOT = "<end_of_turn>"


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def prepare_only(small_model, data, out, *extra):
    data = data if isinstance(data, str) else str(data)
    return run_script("--prepare_only=True", f"--model_name={small_model}", f"--data_path={data}",
                      f"--output_dir={out}", "--preview_examples=0", *extra)


def template_ids(tokenizer, messages):
    return tokenizer.apply_chat_template(folded(messages), tokenize=True, return_dict=True)["input_ids"]


# OpenAI's fine-tuning chat format, as its guide writes it: weight 0/1 on assistant messages, content as parts,
# a refusal with null content, a speaker's name, and the record's own parallel_tool_calls
OPENAI = [
    {"messages": [
        {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris", "weight": 0},
        {"role": "user", "content": "Can you be more sarcastic?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 1}]},
    {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Who wrote"}, {"type": "text", "text": "Hamlet?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Shakespeare."},
                                          {"type": "text", "text": "Around 1600."}]}]},
    {"messages": [
        {"role": "user", "content": "How do I pick a lock?", "name": "mallory"},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."}],
     "parallel_tool_calls": False},
]
# what each conversation means: the messages the template is given, and the replies trained
OPENAI_MEANT = [
    ([{"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
      {"role": "user", "content": "What's the capital of France?"}, {"role": "assistant", "content": "Paris"},
      {"role": "user", "content": "Can you be more sarcastic?"},
      {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."}],
     ["Paris, as if everyone doesn't know that already." + EOT]),
    ([{"role": "user", "content": "Who wrote\nHamlet?"}, {"role": "assistant", "content": "Shakespeare.\nAround 1600."}],
     ["Shakespeare.\nAround 1600." + EOT]),
    ([{"role": "user", "content": "How do I pick a lock?"}, {"role": "assistant", "content": "I can't help with that."}],
     ["I can't help with that." + EOT]),
]


def test_openai_fine_tuning_format_prepares_as_its_author_means(small_model, tokenizer, tmp_path):
    result = prepare_only(small_model, write_jsonl(tmp_path / "openai.jsonl", OPENAI), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    rows = prepared_rows(tmp_path / "out")
    assert len(rows) == len(OPENAI_MEANT)
    for row, (messages, replies) in zip(rows, OPENAI_MEANT):
        assert row["input_ids"] == template_ids(tokenizer, messages)  # the weight-0 reply is context, parts joined
        assert trained_texts(tokenizer, row["input_ids"], row["labels"]) == replies
    counts = summary_counts(result.stdout)
    assert counts["replies kept as context: 'weight': 0"] == "1"
    assert counts["messages given as content parts (text joined by a newline)"] == "2"
    assert counts["refusals trained as the reply"] == "1"
    assert counts["record keys not read: 'parallel_tool_calls'"] == "1"
    assert "NOTE: 1 messages carry a speaker's 'name'" in result.stdout and "does not render it" in result.stdout


def test_the_old_bug_weight_0_was_trained(ft, tokenizer):
    """Read without its weight (as before), the first conversation trains "Paris": the check above can fail."""
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in OPENAI[0]["messages"]]
    clean = validation.clean_conversation(messages, "x", False, Counter())
    dataset, _ = examples.prepare_dataset([clean], tokenizer, template_probes.detect_chat_format(tokenizer),
                                          config(ft), "t")
    assert "Paris" + EOT in trained_texts(tokenizer, dataset[0]["input_ids"], dataset[0]["labels"])


# Other trainers' per-message flags, each on the first reply (kept as context) and its opposite on the second
FLAGS = {
    "axolotl-training": ({"training": False}, {"training": True}),
    "axolotl-weight": ({"weight": 0}, {"weight": 1}),
    "torchtune-masked": ({"masked": True}, {"masked": False}),
    "llama-factory-loss_weight": ({"loss_weight": 0}, {"loss_weight": 1.0}),
}


@pytest.mark.parametrize("name", FLAGS)
def test_other_trainers_flags_keep_a_reply_as_context(small_model, tokenizer, tmp_path, name):
    off, on = FLAGS[name]
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue.", **off},
                {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "Green.", **on}]
    if name.startswith("llama-factory"):  # LLaMA-Factory's ShareGPT layout
        record = {"conversations": [{"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"],
                                     **{k: v for k, v in m.items() if k not in ("role", "content")}} for m in messages]}
    else:
        record = {"messages": messages}
    result = prepare_only(small_model, write_jsonl(tmp_path / "d.jsonl", [record] * 2), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for row in prepared_rows(tmp_path / "out"):
        assert row["input_ids"] == template_ids(tokenizer, [{"role": m["role"], "content": m["content"]}
                                                            for m in messages])
        assert trained_texts(tokenizer, row["input_ids"], row["labels"]) == ["Green." + EOT]
    (key, value), = off.items()
    assert summary_counts(result.stdout)[f"replies kept as context: {key!r}: {json.dumps(value)}"] == "2"


def test_flags_that_disagree_or_mean_nothing_here_stop_with_the_place(small_model, tmp_path):
    records = [{"messages": [{"role": "user", "content": "u"},
                             {"role": "assistant", "content": "a", "train": True, "weight": 0}]},
               {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 0.5}]}]
    result = prepare_only(small_model, write_jsonl(tmp_path / "d.jsonl", records), tmp_path / "out")
    assert_user_error(result, "2 conversations", "conversation 0, message 1", "flags disagree",
                      "conversation 1, message 1", "'weight' must be 1 (trained) or 0 (context only) (OpenAI, Axolotl)")


def test_keys_not_read_are_named_and_stop_a_strict_run(small_model, tmp_path):
    records = [{"id": f"c{i}", "messages": [{"role": "user", "content": "u", "foo": 1, "timestamp": "t"},
                                            {"role": "assistant", "content": "a", "foo": 2},
                                            {"role": "user", "content": "u", "training": True},
                                            {"role": "assistant", "content": "b"}]} for i in range(3)]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    result = prepare_only(small_model, data, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    counts = summary_counts(result.stdout)
    assert counts["message keys not read: 'foo'"] == "6"
    assert counts["message keys not read: 'timestamp'"] == "3"
    assert counts["record keys not read: 'id'"] == "3"
    assert counts["user message marked for training ('training'): never trained here"] == "3"
    strict = prepare_only(small_model, data, tmp_path / "strict", "--strict=True")
    assert_user_error(strict, "3 conversations with soft problems", "message keys not read: 'foo' (6 in all",
                      "conversation 0, message 0", "record keys not read: 'id'")


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}


def test_media_parts_are_one_report_or_left_out(small_model, tmp_path):
    text = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]},
                          {"role": "assistant", "content": "A cat."}]}
    audio = {"messages": [{"role": "user", "content": "Listen."}, {"role": "assistant", "content": "OK."},
                          {"role": "user", "content": [AUDIO]}, {"role": "assistant", "content": "A bird."}]}
    data = write_jsonl(tmp_path / "d.jsonl", [text, image, image, audio])
    result = prepare_only(small_model, data, tmp_path / "out")
    assert_user_error(result, "3 conversations", "image part ('image_url'): text-only fine-tuning",
                      "conversation 1, message 0", "(2 in all; also", "conversation 2, message 0",
                      "audio part ('input_audio')", "conversation 3, message 2", "--non_text_conversations=leave_out")
    left = prepare_only(small_model, data, tmp_path / "left", "--non_text_conversations=leave_out")
    assert left.returncode == 0, left.stderr
    counts = summary_counts(left.stdout)
    assert counts["conversations left out: image part (NON_TEXT_CONVERSATIONS)"] == "2"
    assert counts["conversations left out: audio part (NON_TEXT_CONVERSATIONS)"] == "1"
    assert counts["conversations kept"] == "1"
    left_strict = prepare_only(small_model, data, tmp_path / "ls", "--non_text_conversations=leave_out", "--strict=True")
    assert left_strict.returncode == 0, left_strict.stderr  # a setting's choice is no soft problem


# ----------------------------------------------------------------------------------------------------
# several sources


def numbered(prefix: str, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{prefix} question {i}?"},
                          {"role": "assistant", "content": f"{prefix} answer {i}."}]} for i in range(n)]


@pytest.fixture
def three_sources(tmp_path):
    return [str(write_jsonl(tmp_path / f"{name}.jsonl", numbered(name, 10))) for name in ("a", "b", "c")]


def test_sources_mix_by_weight_with_exact_counts(small_model, tmp_path, three_sources):
    a, b, c = three_sources
    mix = repr([{"path": a, "weight": 0.5}, b, {"path": c, "weight": 2}])
    result = prepare_only(small_model, mix, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    per_conversation = Counter(row["source"] for row in prepared_rows(tmp_path / "out"))
    per_source = Counter(source.split(": conversation")[0] for source in per_conversation.elements())
    assert per_source == {a: 5, b: 10, c: 20}
    assert {n for s, n in per_conversation.items() if s.startswith(a)} == {1}  # five distinct conversations
    assert all(per_conversation[f"{b}: conversation {i}"] == 1 for i in range(10))
    assert all(per_conversation[f"{c}: conversation {i}"] == 2 for i in range(10))
    counts = summary_counts(result.stdout)
    assert counts["conversations read"] == "30" and counts["conversations taken (source weights)"] == "35"
    assert counts[f"source {c} (weight 2)"] == "10 read / 10 kept / 0 held out / 20 taken"
    again = prepare_only(small_model, mix, tmp_path / "again")  # seeded: the same share again
    assert Counter(r["source"] for r in prepared_rows(tmp_path / "again")) == per_conversation, again.stderr


def test_weights_between_whole_numbers_and_the_eval_split_per_source(ft, tmp_path, three_sources):
    a, b, c = three_sources
    cfg = config(ft, data_path=[{"path": a, "weight": 1.5}, b, {"path": c, "weight": 0.25}], eval_fraction=0.2)
    train, evaluation = sources.read_train_and_eval(cfg, tmp_path / "run", tmp_path / "run" / ".prepared", print)
    taken = Counter(train.conversations["source"])
    held = Counter(evaluation.conversations["source"])
    assert not set(taken) & set(held)  # no conversation in both splits
    assert {p: sum(n for s, n in held.items() if s.startswith(p)) for p in (a, b, c)} == {a: 2, b: 2, c: 2}
    from_a = [n for s, n in taken.items() if s.startswith(a)]
    assert sorted(from_a) == [1] * 4 + [2] * 4  # 8 left after the split: each once, round(0.5 x 8) twice
    assert sum(n for s, n in taken.items() if s.startswith(b)) == 8
    assert sum(n for s, n in taken.items() if s.startswith(c)) == 2  # round(0.25 x 8)
    assert train.kept == 12 + 8 + 2 and evaluation.kept == 6


def test_problems_of_every_source_in_one_report(small_model, tmp_path, three_sources):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}])
    worse = tmp_path / "worse.json"
    worse.write_text("[{")
    result = prepare_only(small_model, repr([three_sources[0], str(bad), str(worse)]), tmp_path / "out")
    assert_user_error(result, f"{bad}: 1 conversation", "unknown role 'wizard'", f"{worse}: invalid JSON")
    result = prepare_only(small_model, repr([three_sources[0], {"path": three_sources[1], "weight": -1}]),
                          tmp_path / "o2")
    assert_user_error(result, "must be a number >= 0")


# ----------------------------------------------------------------------------------------------------
# conversations the template cannot render faithfully


def test_unrenderable_conversations_in_one_report_or_left_out(corpus_tokenizer, tmp_path):
    from agent_data import TOOLS, trajectory

    folder = tmp_path / "llama3_1"
    corpus_tokenizer("llama3_1").save_pretrained(folder)  # its template allows one tool call per message
    records = [{"messages": trajectory(single_calls=True), "tools": TOOLS}] * 2 + \
              [{"messages": trajectory(), "tools": TOOLS}] * 3  # two calls at once: cannot be rendered
    data = write_jsonl(tmp_path / "agents.jsonl", records)
    result = prepare_only(folder, data, tmp_path / "out")
    assert_user_error(result, "3 conversations with problems the chat template cannot render faithfully",
                      "single tool-calls", f"{data}: conversation 2", "(3 in all; also",
                      "--unrenderable_conversations=leave_out")
    left = prepare_only(folder, data, tmp_path / "left", "--unrenderable_conversations=leave_out")
    assert left.returncode == 0, left.stderr
    assert summary_counts(left.stdout)[
        "conversations left out: the template cannot render them (UNRENDERABLE_CONVERSATIONS)"] == "3"
    assert {r["source"] for r in prepared_rows(tmp_path / "left")} == {f"{data}: conversation {i}" for i in (0, 1)}
