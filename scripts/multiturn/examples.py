"""Training examples: each conversation rendered (chat_format), tokenized exact to the id (token_ids), cut to
MAX_SEQ_LENGTH at turn boundaries, over all the data with datasets.map."""

import json
import os
import uuid
from collections import Counter
from pathlib import Path

from .chat_format import ChatFormat, UserError, check_rendering, conversation_examples, split_inline_reasoning
from .token_ids import IGNORE_INDEX, encode_examples
from .validation import Data, conversation_tools


def tokenize_batch(tokenizer, batch: list, kinds: bool = False) -> list[tuple]:
    """The rows (input_ids, labels) of many examples (chat_format's Example), and with kinds=True a third list:
    each token's kind ("reply", "reasoning", "call", "result" or "") for the preview. See token_ids.py: the ids are
    the tokenizer's own encoding of the template's rendering, exact to the id."""
    return [row for rows, _ in encode_examples(tokenizer, batch, kinds) for row in rows]


def tokenize_conversation(tokenizer, fmt: ChatFormat, messages: list[dict], check: bool = False, tools=None,
                          train_reasoning: bool = True) -> list[tuple]:
    """(input_ids, labels) of each training example of one conversation (see chat_format.conversation_examples)."""
    examples = conversation_examples(tokenizer, fmt, messages, tools, train_reasoning)
    if check:
        for example in examples:
            check_rendering(tokenizer, fmt, messages, example)
    return tokenize_batch(tokenizer, examples)


def for_template(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """The messages as this template can render them: reasoning written inline (<think>...</think> opening the
    content) moves to the field the template reads, and where it reads none, reasoning given apart is left out,
    and inline reasoning too where the template cuts it from every reply (DeepSeek-R1; check_template_support
    says so, with the count). The first message's tools stay with it (conversation_tools)."""
    if fmt.reasoning_field:
        return [split_inline_reasoning(m) for m in messages]
    if fmt.drops_inline_reasoning:
        messages = [split_inline_reasoning(m) for m in messages]
    return [{k: v for k, v in m.items() if k != "reasoning"} if "reasoning" in m else m for m in messages]


def _exchanges(messages: list[dict]) -> list[list[dict]]:
    """Group a cleaned conversation into exchanges, each from a user message through the replies, tool calls and
    tool results that follow it: [system?, user, assistant], [user, assistant, tool, assistant], ..."""
    groups = []
    for m in messages:
        if m["role"] == "user" or not groups:
            groups.append([])
        groups[-1].append(m)
    return groups


def fit_conversation(tokenize, messages: list[dict], max_len: int, policy: str, overlong: str):
    """Cut one conversation into examples of at most max_len tokens, at turn boundaries.

    `tokenize(messages) -> [(input_ids, labels), ...]`: the examples one rendering gives (several where the
    template renders history differently from the prompt). Returns (examples, stats). "split" turns a long
    conversation into several examples; each trains new exchanges and starts at a user turn with as
    many preceding exchanges as still fit, as context (not trained): that is how the model meets a
    long chat at inference. "truncate" keeps the leading exchanges that fit. An exchange that alone
    is too long is cut inside its reply ("truncate") or dropped ("drop").
    """
    stats = Counter()
    whole = tokenize(messages)
    if max((len(ids) for ids, _ in whole), default=0) <= max_len:
        return whole, stats
    system = messages[:1] if messages[0]["role"] == "system" else []  # kept at the top of every example
    groups = _exchanges(messages[len(system):])

    def window(context_from: int, start: int, end: int):
        context = [dict(m, train=False) for g in groups[context_from:start] for m in g]
        return tokenize(system + context + [m for g in groups[start:end] for m in g])

    def longest(examples):
        return max((len(ids) for ids, _ in examples), default=0)

    def trained(examples, limit=None):
        return sum(1 for _, labels in examples for x in labels[:limit] if x != IGNORE_INDEX)

    examples, start = [], 0
    while start < len(groups):
        end = start + 1
        chosen = window(start, start, end)
        if longest(chosen) > max_len:  # one exchange alone does not fit
            kept = trained(chosen, max_len)
            if overlong == "truncate" and kept > 0:
                examples += [(ids[:max_len], labels[:max_len]) for ids, labels in chosen]
                stats["exchanges truncated inside the reply"] += 1
                stats["trained tokens cut"] += trained(chosen) - kept
            else:
                stats["exchanges dropped (too long alone)"] += 1
                stats["trained tokens cut"] += trained(chosen)
            start = end
            if policy == "truncate":
                break
            continue
        while end < len(groups):
            longer = window(start, start, end + 1)
            if longest(longer) > max_len:
                break
            end, chosen = end + 1, longer
        if policy == "split":
            context_from = start
            while context_from > 0:
                wider = window(context_from - 1, start, end)
                if longest(wider) > max_len:
                    break
                context_from, chosen = context_from - 1, wider
        examples += chosen
        start = end
        if policy == "truncate":
            break
    if policy == "truncate" and start < len(groups):
        stats["exchanges dropped after the cut"] += len(groups) - start
        stats["trained tokens cut"] += sum(trained(tokenize(g)) for g in groups[start:])
    examples = [e for e in examples if any(x != IGNORE_INDEX for x in e[1])]  # windows of context only
    stats["conversations cut" if examples else "conversations dropped"] += 1
    if policy == "split" and len(examples) > len(whole):
        stats["extra examples from splitting"] += len(examples) - len(whole)
    return examples, stats


def only_last_reply_trained(messages: list[dict]) -> list[dict]:
    """TRAIN_ON="last": every assistant reply but the conversation's last trained one becomes context."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)), default=-1)
    return [dict(m, train=False) if m["role"] == "assistant" and i != last else m for i, m in enumerate(messages)]


def prepare_batch(batch: dict, indices: list, tokenizer, fmt: ChatFormat, cfg: dict) -> dict:
    """datasets.map function: conversations in, training examples (input_ids, labels) out."""
    conversations = [for_template(json.loads(c), fmt) for c in batch["conversation"]]
    if cfg["TRAIN_ON"] == "last":  # decided on the whole conversation, before any split
        conversations = [only_last_reply_trained(c) for c in conversations]
    def failed(error: UserError, source: str) -> str:  # the template's own message (Llama 3.1: one call per turn)
        return json.dumps([error.kind, error.detail, source])

    per_conversation, failures = [], []
    for messages, source in zip(conversations, batch["source"]):
        try:
            examples = conversation_examples(tokenizer, fmt, messages, conversation_tools(messages),
                                             cfg["TRAIN_REASONING"])
            for example in examples:
                check_rendering(tokenizer, fmt, messages, example)
            failure = ""
        except UserError as error:  # counted, with where, in one report (unrenderable)
            examples, failure = [], failed(error, source)
        per_conversation.append(examples)
        failures.append(failure)
    tokenized = iter(encode_examples(tokenizer, [e for examples in per_conversation for e in examples]))
    out = {"input_ids": [], "labels": [], "conversation_index": [], "stats": [], "failure": []}

    for index, messages, rendered, failure, source in zip(indices, conversations, per_conversation, failures,
                                                          batch["source"]):
        def tokenize(msgs, tools=conversation_tools(messages)):  # a window of the conversation keeps its tools
            return tokenize_conversation(tokenizer, fmt, msgs, True, tools, cfg["TRAIN_REASONING"])

        examples, stats = [], Counter()
        for rows, notes in (next(tokenized) for _ in rendered):
            examples += rows
            stats.update(notes)
        if len(examples) > 1:  # the template renders history differently from the prompt: the cost of exactness
            stats["extra examples: replies kept in their inference context"] += len(examples) - 1
            stats["extra tokens: context repeated in those examples"] += (
                sum(len(ids) for ids, _ in examples) - max(len(ids) for ids, _ in examples))
        if max((len(ids) for ids, _ in examples), default=0) > cfg["MAX_SEQ_LENGTH"]:
            try:
                examples, cut = fit_conversation(
                    tokenize, messages, cfg["MAX_SEQ_LENGTH"], cfg["LONG_CONVERSATIONS"], cfg["OVERLONG_EXCHANGE"]
                )
                stats.update(cut)
            except UserError as error:  # a window of it the template cannot render
                examples, stats, failure = [], Counter(), failed(error, source)
        if not examples:  # keep an empty row so that the counts survive; it is filtered out afterwards
            examples = [([], [])]
        for n, (ex_ids, ex_labels) in enumerate(examples):
            out["input_ids"].append(ex_ids)
            out["labels"].append(ex_labels)
            out["conversation_index"].append(index)
            out["stats"].append(json.dumps(stats) if n == 0 else "{}")
            out["failure"].append(failure if n == 0 else "")
    return out


_FORK_SHARED: dict = {}  # what forked map workers read from memory instead of receiving it pickled


def _prepare_batch_shared(batch: dict, indices: list, key: str) -> dict:
    return prepare_batch(batch, indices, **_FORK_SHARED[key])


def _workers_fork() -> bool:
    """Whether datasets' map workers start by fork (Linux up to Python 3.13), inheriting this process's memory."""
    try:
        import multiprocess

        return multiprocess.get_start_method() == "fork"
    except Exception:
        return False


def prepare_dataset(conversations, tokenizer, fmt: ChatFormat, cfg: dict, name: str, sources: list | None = None,
                    path: str = "", folder: Path | None = None):
    """Tokenize and mask all conversations with datasets.map; return (dataset, stats).

    `conversations`: a list of conversations, or a Dataset of validate_data (JSON "conversation", "source").
    With a folder, the examples are written there in Arrow files and memory-mapped back, so memory does not
    grow with the data. An error names the conversation: `path` and its index there (sources[i] for
    conversations[i])."""
    import pyarrow.compute as pc
    from datasets import Dataset, Features, List, Value, disable_progress_bars

    if isinstance(conversations, list):
        dataset = Dataset.from_dict({
            "conversation": [json.dumps(c) for c in conversations],
            "source": [f"{path or name}: conversation {i}" for i in (sources or range(len(conversations)))]})
    else:
        dataset = conversations
    many = len(dataset) >= 2000  # fewer are done in about a second: no worker processes, no progress bar
    num_proc = cfg["NUM_PROC"] or min(8, os.cpu_count() or 1)
    num_proc = num_proc if many and num_proc > 1 else None  # processes cost ~1 s to start
    if not many:
        disable_progress_bars()
    function, kwargs = prepare_batch, {"tokenizer": tokenizer, "fmt": fmt, "cfg": cfg}
    key = uuid.uuid4().hex
    if num_proc and _workers_fork():
        # Forked workers find the tokenizer in memory: pickling it (dill, 28 MB for a 256k vocabulary) for
        # each worker takes seconds. Other start methods (spawn, forkserver) get it pickled as usual.
        _FORK_SHARED[key] = kwargs
        function, kwargs = _prepare_batch_shared, {"key": key}
    # token ids fit 32 bits (vocabularies are far below 2**31): half the memory and disk of datasets' default
    features = Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                         "conversation_index": Value("int64"), "stats": Value("string"), "failure": Value("string")})
    try:
        dataset = dataset.map(
            function, batched=True, batch_size=256, num_proc=num_proc, remove_columns=dataset.column_names,
            with_indices=True, fn_kwargs=kwargs, desc=f"Tokenizing {name} conversations", features=features,
            load_from_cache_file=False,
            cache_file_name=str(folder / f"{name}-examples.arrow") if folder else None,
            # The examples are never reused from a cache, so a fresh fingerprint is right, and it spares datasets
            # hashing the whole tokenizer (seconds for a 256k vocabulary) on every call.
            new_fingerprint=key,
        )
    finally:
        _FORK_SHARED.pop(key, None)
    lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
    stats = read_stats(dataset, lengths > 0)
    left_out = unrenderable(dataset, cfg, path or f"{name} data")
    if left_out:
        stats["conversations left out: the template cannot render them (UNRENDERABLE_CONVERSATIONS)"] = left_out
    if (lengths == 0).any():
        dataset = dataset.select((lengths > 0).nonzero()[0])
    dataset = dataset.remove_columns(["stats", "failure"])
    return dataset, stats


class Stats(Counter):
    """What preparation did, counted; and `warned`: the first examples whose conversation was cut or had an
    exchange dropped (index -> what happened), for the report page."""

    warned: dict


def read_stats(dataset, kept, limit: int = 1000) -> Stats:
    """The conversations' stats summed, chunk by chunk (a million rows never sit in Python lists), and the first
    `limit` examples (indices among the rows kept) whose stats say more than the cost of exactness (extra examples
    and tokens): cuts, truncations, dropped exchanges."""
    import numpy as np
    import pyarrow.compute as pc

    stats, position, offset = Stats(), np.cumsum(kept) - 1, 0  # a row's index once the empty rows are gone
    stats.warned = {}
    for chunk in dataset.data.column("stats").chunks:
        mask = pc.not_equal(chunk, "{}")
        for i, text in zip(pc.indices_nonzero(mask).to_pylist(), chunk.filter(mask).to_pylist()):
            counts = json.loads(text)
            stats.update(counts)
            notes = {k: v for k, v in counts.items() if not k.startswith("extra ")}
            if notes and kept[offset + i] and len(stats.warned) < limit:
                stats.warned[int(position[offset + i])] = "; ".join(f"{k}: {v}" for k, v in sorted(notes.items()))
        offset += len(chunk)
    return stats


def unrenderable(dataset, cfg: dict, label: str) -> int:
    """The conversations the template cannot render faithfully, read off the examples' "failure" column: one
    report of them all, each kind of problem with its count and first places (or, with
    UNRENDERABLE_CONVERSATIONS="leave_out", their count: they are left out)."""
    import pyarrow.compute as pc

    from .validation import count_problem, data_report

    kinds, count = {}, 0
    for chunk in dataset.data.column("failure").chunks:
        for text in chunk.filter(pc.not_equal(chunk, "")).to_pylist():
            kind, detail, source = json.loads(text)
            count += 1
            first_of_kind = kind not in kinds  # the first place of a kind shows where the text differs
            count_problem(kinds, kind, source + (f" ({detail})" if detail and first_of_kind else ""))
    if count and cfg["UNRENDERABLE_CONVERSATIONS"] != "leave_out":
        raise UserError(data_report(label, kinds, "problems the chat template cannot render faithfully (set "
                                    "--unrenderable_conversations=leave_out to leave them out)", count))
    return count


def token_counts(dataset) -> dict:
    """Counts for the summary: examples, tokens, trained tokens, length percentiles. In Arrow, chunk by chunk:
    hundreds of millions of labels are too many to walk in Python or to hold flattened at once."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
    lengths = np.sort(lengths[lengths > 0])  # the rows of examples dropped by select() are empty
    trained = sum(pc.sum(pc.not_equal(pc.list_flatten(chunk), IGNORE_INDEX)).as_py() or 0
                  for chunk in dataset.data.column("labels").chunks)

    def pct(p):
        return int(lengths[min(len(lengths) - 1, int(p / 100 * len(lengths)))]) if len(lengths) else 0

    return {"examples": len(lengths), "tokens": int(lengths.sum()), "trained_tokens": trained,
            "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": int(lengths[-1]) if len(lengths) else 0}


def prepare_once(state, run_dir: Path, train: Data, evaluation: Data | None, tokenizer, fmt, cfg):
    """Prepare the data on the main process; other processes wait, then load what it saved."""
    from datasets import load_from_disk

    cache = run_dir / ".prepared"
    train_set = eval_set = None
    cut_stats = Counter()
    with state.main_process_first():
        if state.is_main_process:
            train_set, cut_stats = prepare_dataset(train.conversations, tokenizer, fmt, cfg, "train", folder=cache)
            if evaluation is not None and evaluation.kept:
                eval_set = prepare_dataset(evaluation.conversations, tokenizer, fmt, cfg, "eval", folder=cache)[0]
            if state.num_processes > 1:
                train_set.save_to_disk(str(cache / "train"))
                if eval_set is not None:
                    eval_set.save_to_disk(str(cache / "eval"))
        else:
            train_set = load_from_disk(str(cache / "train"))
            eval_set = load_from_disk(str(cache / "eval")) if (cache / "eval").exists() else None
    return train_set, eval_set, cut_stats
