"""Masking on the real Gemma tokenizer: exactly the assistant replies and their end-of-turn token are
trained; everything else is -100. Checked against the text itself, against the template's own
whole-text tokenization, and against an independent reference (TRL's Gemma training template with
`return_assistant_tokens_mask`)."""

import copy
import json
from pathlib import Path

import pytest

import trl

from conftest import ROOT, run_script
from multiturn.chat_format import fold_system
from multiturn import examples, template_probes

END = "<end_of_turn>"

CONVERSATIONS = {
    "one exchange": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "In short: 4."},
    ],
    "multi-turn": [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "In short: 7.\n\nIt has no divisors but 1 and itself."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "In short: 11."},
        {"role": "user", "content": "And an even one?"},
        {"role": "assistant", "content": "In short: 2, the only even prime."},
    ],
    "system": [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Ahoy!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Fair winds."},
    ],
    "unicode": [
        {"role": "user", "content": "Où est 東京? Ünïcödé — ok…"},
        {"role": "assistant", "content": "東京 est au Japon. Ça va ? ✓ Ω≈ç√"},
    ],
    "whitespace": [
        {"role": "user", "content": "  leading and trailing  \n\n"},
        {"role": "assistant", "content": "\n\n  def f():\n      return 1\n\n\tTabbed line  \n"},
        {"role": "user", "content": "line1\nline2\n\n\nline5"},
        {"role": "assistant", "content": "a  b   c\n    indented"},
    ],
    "empty-ish": [
        {"role": "user", "content": " "},
        {"role": "assistant", "content": "."},
        {"role": "user", "content": "\n"},
        {"role": "assistant", "content": " ok "},
    ],
}


def trained_spans(input_ids, labels):
    """Runs of consecutive trained positions, as lists of token ids."""
    spans, current = [], []
    for token, label in zip(input_ids, labels):
        if label != -100:
            assert label == token, "a trained label must be the token itself"
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


@pytest.fixture(scope="module")
def fmt(ft, tokenizer):
    return template_probes.detect_chat_format(tokenizer)


def prepare(ft, tokenizer, fmt, messages, train_on="all"):
    """The one example Gemma's prefix-preserving template gives a conversation, checked against its rendering."""
    if train_on == "last":
        messages = examples.only_last_reply_trained(messages)
    rows = examples.tokenize_conversation(tokenizer, fmt, messages, check=True)
    assert len(rows) == 1
    return rows[0]


def test_detected_format_is_gemmas(fmt, tokenizer):
    assert fmt.closing == END
    assert fmt.closing_ids == (tokenizer.convert_tokens_to_ids(END),)
    assert fmt.system == "folded"  # Gemma's template raises on a system role
    assert fmt.strip_roles == {"user", "assistant"}  # and trims every content
    assert fmt.prefix_preserving and not fmt.generation_extra and not fmt.default_system


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_trained_tokens_are_exactly_the_replies(ft, tokenizer, fmt, name):
    messages = CONVERSATIONS[name]
    ids, labels = prepare(ft, tokenizer, fmt, messages)
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    spans = trained_spans(ids, labels)
    # One trained span per reply: its (template-trimmed) text followed by the end-of-turn token.
    assert [tokenizer.decode(s) for s in spans] == [r.strip() + END for r in replies]
    # Nothing else is trained: no BOS, no header, no user or system text, no newline after end of turn.
    assert sum(len(s) for s in spans) == sum(1 for x in labels if x != -100)
    assert labels[0] == -100 and ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1  # no double BOS
    untrained = tokenizer.decode([t for t, x in zip(ids, labels) if x == -100])
    for m in messages:
        if m["role"] != "assistant" and m["content"].strip():
            assert m["content"].strip() in untrained


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_tokens_equal_the_templates_own_tokenization(ft, tokenizer, fmt, name):
    """Tokenizing piece by piece gives the same ids as tokenizing the whole rendered text."""
    messages = CONVERSATIONS[name]
    ids, _ = prepare(ft, tokenizer, fmt, messages)
    text = tokenizer.apply_chat_template(fold_system(messages, fmt), tokenize=False)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_system_message_is_folded_into_first_user_turn(ft, tokenizer, fmt):
    messages = CONVERSATIONS["system"]
    ids, labels = prepare(ft, tokenizer, fmt, messages)
    text = tokenizer.decode(ids)
    assert text.startswith("<bos><start_of_turn>user\nAnswer like a pirate.\n\nHello<end_of_turn>")
    assert "system" not in text


def test_train_on_last_trains_only_the_final_reply(ft, tokenizer, fmt):
    messages = CONVERSATIONS["multi-turn"]
    ids, labels = prepare(ft, tokenizer, fmt, messages, train_on="last")
    assert [tokenizer.decode(s) for s in trained_spans(ids, labels)] == [messages[-1]["content"] + END]


def test_matches_trl_gemma_training_template(ft, tokenizer, fmt):
    """Independent reference: TRL's training variant of Gemma's template marks the assistant text with
    {% generation %}, and transformers turns that into a token mask. TRL's block also covers the newline
    after <end_of_turn>; we do not train it (generation stops at <end_of_turn>, so the newline is never
    produced). That is the only difference allowed."""
    template = (Path(trl.__file__).parent / "chat_templates" / "gemma_training.jinja").read_text()
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    end_id = tokenizer.convert_tokens_to_ids(END)
    compared = 0
    for name, messages in CONVERSATIONS.items():
        ids, labels = prepare(ft, tokenizer, fmt, messages)
        folded = fold_system(messages, fmt)
        ref = tokenizer.apply_chat_template(
            folded, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ids == ref["input_ids"], name
        ours = [int(x != -100) for x in labels]
        theirs = list(ref["assistant_masks"])
        for k, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:  # only TRL's trained newline right after an end-of-turn token may differ
                assert (a, b) == (0, 1) and [ids[k]] == newline and ids[k - 1] == end_id, (name, k)
        assert sum(theirs) - sum(ours) == sum(1 for m in messages if m["role"] == "assistant"), name
        compared += 1
    assert compared == len(CONVERSATIONS)


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture()
def chatml_tokenizer(tokenizer):
    other = copy.deepcopy(tokenizer)
    other.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]},
                             replace_extra_special_tokens=False)
    other.chat_template = CHATML
    return other


def test_chatml_template_on_the_same_tokenizer(ft, chatml_tokenizer):
    """A template of another family: the header "<|im_start|>assistant\n" is several tokens, content is not
    stripped, system is native, and the closing is the control token <|im_end|> without the newline after it."""
    tok = chatml_tokenizer
    fmt = template_probes.detect_chat_format(tok)
    assert fmt.closing == "<|im_end|>" and fmt.system == "native" and not fmt.strip_roles
    messages = [{"role": "system", "content": "Be terse."}] + CONVERSATIONS["whitespace"]
    rows = examples.tokenize_conversation(tok, fmt, messages, check=True)
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert sorted(tok.decode(s) for ids, labels in rows for s in trained_spans(ids, labels)) == sorted(
        r + "<|im_end|>" for r in replies)


def test_reply_that_merges_with_the_header_is_trained_after_its_prompt(ft, chatml_tokenizer):
    """The reply's first newlines merge with the header's newline when the whole text is tokenized at once, so the
    whole text's ids before the reply are not the prompt's ids at inference. The reply is then trained in a row of
    its own: exactly the prompt's ids, then the reply as the model generates it after them."""
    tok = chatml_tokenizer
    fmt = template_probes.detect_chat_format(tok)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\n\nreply after blank lines"}]
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    whole = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert whole[:len(prompt_ids)] != prompt_ids, "the whole text's tokenization merges across the prompt's end"
    (ids, labels), = examples.tokenize_conversation(tok, fmt, messages, check=True)
    (start, end), = trained_spans_at(labels)
    assert ids[:start] == prompt_ids
    assert tok.decode(ids[start:end]) == "\n\nreply after blank lines<|im_end|>"


def trained_spans_at(labels):
    from template_corpus import trained_spans

    return trained_spans(labels)


def test_prepare_only_on_sample_data_trains_exactly_the_replies(small_model, tmp_path):
    """The README's promise: --prepare_only=True on our sample data shows exactly the assistant tokens
    trained. Every example of the prepared file is checked against the data file."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(small_model)
    result = run_script(f"--model_name={small_model}", "--prepare_only=True", f"--output_dir={tmp_path}",
                        "--run_name=prep", "--max_seq_length=8192")
    assert result.returncode == 0, result.stderr
    assert "[[" in result.stdout and "trained tokens" in result.stdout
    data = json.loads((ROOT / "data" / "conversations.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "prep" / "prepared.jsonl").read_text().splitlines()]
    assert len(rows) == len(data)
    fmt = template_probes.detect_chat_format(tok)
    for conversation, row in zip(data, rows):
        replies = [m["content"].strip() + END for m in conversation if m["role"] == "assistant"]
        assert [tok.decode(s) for s in trained_spans(row["input_ids"], row["labels"])] == replies
        # the ids are the tokenizer's own encoding of the conversation (its template has no system role: the
        # system text is folded into the first user turn, as the run's summary says)
        messages = fold_system([{k: v for k, v in m.items() if k != "train"} for m in conversation], fmt)
        assert row["input_ids"] == tok.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert not (tmp_path / "prep" / "adapter_model.safetensors").exists()
