"""Fine-tune a chat model on multi-turn conversations with LoRA, training on assistant turns only.

    python scripts/multi_turn_finetuning.py                          # the constants below
    python scripts/multi_turn_finetuning.py --prepare_only=True      # show what would be trained, then stop
    python scripts/multi_turn_finetuning.py --model_name=models/gemma-3-270m --max_steps=30
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/multi_turn_finetuning.py

Every constant below can be overridden as --name=value (lower-case name, a Python literal; strings
may be written bare). The path is one straight line: load data -> validate -> tokenizer -> find role
markers -> tokenize and mask -> show what will be trained -> model -> LoRA -> train -> save.
"""

import ast
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chat_format.py, shared with chat.py
from chat_format import (  # noqa: E402  (one place decides how a conversation is rendered)
    ChatFormat, UserError, check_rendering, control_token_ids, conversation_examples, describe, detect_chat_format,
    load_chat_template, prompt_text,
)

# ----------------------------------------------------------------------------------------------------
# data
DATA_PATH = "data/conversations.json"  # JSON/JSONL: lists of messages, {"messages": [...]}, or ShareGPT
EVAL_DATA_PATH = ""  # same formats; "" = none (see EVAL_FRACTION)
EVAL_FRACTION = 0.0  # share of whole conversations held out for evaluation when EVAL_DATA_PATH is ""
STRICT = False  # True: soft data problems (merged turns, dropped turns, skipped conversations) are errors
TRAIN_ON = "all"  # "all": every assistant turn is trained; "last": only the last one of each conversation
MAX_SEQ_LENGTH = 2048  # tokens per training example; longer conversations are cut at turn boundaries
LONG_CONVERSATIONS = "split"  # "split": several examples, each starting at a user turn; "truncate": keep the head
OVERLONG_EXCHANGE = "truncate"  # one exchange longer than MAX_SEQ_LENGTH: "truncate" its reply, or "drop" it
PREVIEW_EXAMPLES = 1  # examples printed with their trained tokens marked
NUM_PROC = 0  # processes for data preparation; 0 = one per CPU core, at most 8
# model
MODEL_NAME = "google/gemma-2-9b-it"  # hub id or local folder
CHAT_TEMPLATE = ""  # "" = the tokenizer's own; or a .jinja file (a base model without one, or to override it)
CHAT_TEMPLATE_KWARGS = {}  # passed to every rendering, in training and chat, e.g. {"enable_thinking": False}
ATTN_IMPLEMENTATION = "auto"  # "auto" picks the fastest exact kernel; or "flash_attention_2", "flex_attention", "sdpa", "eager"
PRECISION = "auto"  # "auto": bf16 on a CUDA GPU or a CPU with native bf16 (AVX512-BF16/AMX), else fp32; "bf16"/"fp32"
LOAD_IN_4BIT = False  # QLoRA: NF4 weights with double quantisation, bf16 compute (CUDA + bitsandbytes only)
GRADIENT_CHECKPOINTING = True  # recompute activations in the backward pass: much less memory, ~30% slower
PADDING_FREE = "auto"  # concatenate a batch's examples without padding; "auto": with flash-attn only; True/False
# lora
LORA_R = 16  # rank of the update matrices
LORA_ALPHA = 32  # scale: the update is multiplied by LORA_ALPHA / LORA_R
LORA_DROPOUT = 0.05
LORA_TARGET_MODULES = "all-linear"  # "all-linear" or a comma-separated list, e.g. "q_proj,v_proj"
TRAIN_CONTROL_TOKENS = "auto"  # also train the embedding rows of the control tokens replies end with (<end_of_turn>):
#                                "auto" = where the base model never learned them (a base model); True / False
# training
NUM_TRAIN_EPOCHS = 1.0
MAX_STEPS = -1  # optimizer steps; > 0 overrides NUM_TRAIN_EPOCHS
BATCH_SIZE = 2  # examples per device per micro-batch
GRADIENT_ACCUMULATION_STEPS = 8  # micro-batches per optimizer step
LEARNING_RATE = 2e-4
LR_SCHEDULER = "cosine"  # any transformers scheduler name: "cosine", "linear", "constant", ...
WARMUP_RATIO = 0.03  # share of the optimizer steps spent warming up
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
LOGGING_STEPS = 10  # optimizer steps between progress lines
EVAL_STEPS = 0  # optimizer steps between evaluations; 0 = only before and after training
REPLY_PROMPTS = 20  # held-out prompts answered (greedy) before and after training: stop rate and reply length
SAMPLE_REPLIES = 3  # of those, how many are written out in full into samples.md
REPLY_MAX_TOKENS = 128  # longest reply generated for those measurements
SAVE_STEPS = 200  # optimizer steps between checkpoints; 0 = no intermediate checkpoints
SAVE_TOTAL_LIMIT = 2  # checkpoints kept
SEED = 42
# output
OUTPUT_DIR = "outputs"  # each run gets its own folder below this
RUN_NAME = ""  # run folder name; "" = the start time, e.g. 20261124-093000
RESUME = False  # True: continue the run RUN_NAME (or the newest unfinished run) from its last checkpoint
PREPARE_ONLY = False  # True: stop after tokenization and write prepared.jsonl; no model weights are loaded
REPORT_TO = "none"  # "none", or trackers transformers supports: "tensorboard", "wandb", ...
# ----------------------------------------------------------------------------------------------------
CONFIG = {k: v for k, v in dict(globals()).items() if k.isupper()}

IGNORE_INDEX = -100  # label of a token that does not count in the loss


# ----------------------------------------------------------------------------------------------------
# configuration


EITHER_AUTO_OR_BOOL = ("PADDING_FREE", "TRAIN_CONTROL_TOKENS")  # "auto", True or False


def parse_overrides(argv: list[str], defaults: dict) -> dict:
    """Apply the arguments, in order, to a copy of the defaults, refusing unknown names and wrong types.

    --name=value sets one constant; --config=FILE.json sets every constant the file's JSON object names (a
    run's training_config.json repeats that run, configs/quick_start.json is the README's first run)."""
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"argument {arg!r} is not of the form --name=value (for example --max_steps=100)")
        name, raw = arg[2:].split("=", 1)
        if name == "config":
            for key, value in read_config_file(raw).items():
                set_value(config, defaults, key, value, json.dumps(value), f" in {raw}")
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string, e.g. --model_name=google/gemma-2-9b-it
        set_value(config, defaults, name, value, raw)
    check_config(config)
    return config


def read_config_file(path: str) -> dict:
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"--config={path}: cannot read it ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--config={path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(settings, dict):
        raise UserError(f"--config={path}: expected a JSON object of settings, e.g. {{\"max_steps\": 100}}")
    return settings


def set_value(config: dict, defaults: dict, name: str, value, raw: str, where: str = "") -> None:
    key, label = name.upper(), f"{name!r}{where}" if where else f"--{name}"
    if key not in defaults:
        close = [k.lower() for k in defaults if k.lower().startswith(name[:4].lower())]
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        raise UserError(f"unknown setting {label}{hint}; the settings are the constants at the top of the script")
    default = defaults[key]
    if isinstance(default, float) and type(value) is int:
        value = float(value)
    if key in EITHER_AUTO_OR_BOOL and value in ("True", "False"):
        value = value == "True"
    elif isinstance(default, str) and not isinstance(value, str) and key not in EITHER_AUTO_OR_BOOL:
        value = raw  # e.g. --run_name=2024 stays a string where a string is expected
    expected = (str, bool) if key in EITHER_AUTO_OR_BOOL else (type(default),)
    if type(value) not in expected:
        shown = f"{name!r}: {raw}{where}" if where else f"--{name}={raw}"
        raise UserError(f"{shown}: expected {type(default).__name__} like {default!r}, got {type(value).__name__}")
    config[key] = value


def check_config(c: dict) -> None:
    """Catch impossible settings before anything is loaded."""
    choices = {
        "TRAIN_ON": ("all", "last"),
        "LONG_CONVERSATIONS": ("split", "truncate"),
        "OVERLONG_EXCHANGE": ("truncate", "drop"),
        "ATTN_IMPLEMENTATION": ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager"),
        "PADDING_FREE": ("auto", True, False),
        "PRECISION": ("auto", "bf16", "fp32"),
        "TRAIN_CONTROL_TOKENS": ("auto", True, False),
    }
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise UserError(f"{key.lower()}={c[key]!r} is not one of {', '.join(map(repr, allowed))}")
    positive = ("MAX_SEQ_LENGTH", "BATCH_SIZE", "GRADIENT_ACCUMULATION_STEPS", "LORA_R", "LOGGING_STEPS", "REPLY_MAX_TOKENS")
    for key in positive:
        if c[key] <= 0:
            raise UserError(f"{key.lower()} must be positive, got {c[key]}")
    if not 0.0 <= c["EVAL_FRACTION"] < 1.0:
        raise UserError(f"eval_fraction must be in [0, 1), got {c['EVAL_FRACTION']}")
    if c["LEARNING_RATE"] <= 0:
        raise UserError(f"learning_rate must be positive, got {c['LEARNING_RATE']}")
    if c["MAX_STEPS"] <= 0 and c["NUM_TRAIN_EPOCHS"] <= 0:
        raise UserError("set num_train_epochs > 0 or max_steps > 0")
    if not all(isinstance(k, str) for k in c["CHAT_TEMPLATE_KWARGS"]):
        raise UserError(f"chat_template_kwargs must map names to values, e.g. {{'enable_thinking': False}}; "
                        f"got {c['CHAT_TEMPLATE_KWARGS']!r}")


# ----------------------------------------------------------------------------------------------------
# data: loading and validation (everything here runs before any model weights load)

ROLE_ALIASES = {"user": "user", "assistant": "assistant", "system": "system", "human": "user", "gpt": "assistant"}


def _read_json_or_jsonl(path: Path):
    """Return (records, is_jsonl). Errors name the line and column."""
    if not path.exists():
        raise UserError(f"{path}: file not found (set DATA_PATH, or --data_path=...)")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark from Windows editors
    if not text.strip():
        raise UserError(f"{path}: the file is empty; expected a JSON list of conversations or JSONL, one per line")
    try:
        if path.suffix == ".jsonl":  # one record per line, even when there is only one line
            raise json.JSONDecodeError("JSON Lines", text, 0)
        return json.loads(text), False
    except json.JSONDecodeError as first_error:
        lines = text.splitlines()
        nonblank = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
        if path.suffix == ".jsonl" or text.lstrip()[:1] == "{" and len(nonblank) > 1:
            records = []
            for lineno, line in nonblank:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: invalid JSON on line {lineno}, column {e.colno}: {e.msg}") from None
            return records, True
        e = first_error
        raise UserError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def load_conversations(path: str) -> tuple[list[list[dict]], str]:
    """Read a data file into a list of conversations of raw messages; return them and the format found."""
    path = Path(path)
    records, is_jsonl = _read_json_or_jsonl(path)
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a list of conversations at the top level, found {type(records).__name__}")
    if not records:
        raise UserError(f"{path}: the file holds no conversations")
    first = records[0]
    if isinstance(first, list):
        fmt, key = "list of message lists", None
    elif isinstance(first, dict) and "messages" in first:
        fmt, key = "objects with 'messages'", "messages"
    elif isinstance(first, dict) and "conversations" in first:
        fmt, key = "ShareGPT ('conversations' of from/value)", "conversations"
    else:
        raise UserError(
            f"{path}: conversation 0: expected a list of messages, an object with 'messages', or a ShareGPT object "
            f"with 'conversations'; found {json.dumps(first)[:80]}"
        )
    conversations = []
    for i, record in enumerate(records):
        if key is None:
            messages = record
        elif isinstance(record, dict) and key in record:
            messages = record[key]
        else:
            raise UserError(f"{path}: conversation {i}: expected an object with '{key}' like conversation 0")
        if not isinstance(messages, list):
            raise UserError(f"{path}: conversation {i}: expected a list of messages, found {type(messages).__name__}")
        conversations.append(messages)
    return conversations, fmt + (" (JSONL)" if is_jsonl else " (JSON)")


def validate_message(message, where: str) -> dict:
    """Check one raw message and return it as {"role", "content", "train"}; raise UserError naming the place."""
    if not isinstance(message, dict):
        raise UserError(f"{where}: expected an object with 'role' and 'content', found {type(message).__name__}")
    if "from" in message and "role" not in message:  # ShareGPT
        if "value" not in message:
            raise UserError(f"{where}: missing 'value'; each ShareGPT message needs 'from' and 'value'")
        role, content = message["from"], message["value"]
    elif "role" not in message or "content" not in message:
        missing = [k for k in ("role", "content") if k not in message]
        raise UserError(f"{where}: missing {' and '.join(repr(k) for k in missing)}; each message needs both")
    else:
        role, content = message["role"], message["content"]
    if not isinstance(role, str) or role not in ROLE_ALIASES:
        raise UserError(f"{where}: unknown role {role!r}; expected 'user', 'assistant' or 'system'")
    if not isinstance(content, str):
        raise UserError(f"{where}: content must be a string, found {type(content).__name__}")
    train = message.get("train", True)
    if not isinstance(train, bool):
        raise UserError(f"{where}: 'train' must be true or false, found {train!r}")
    return {"role": ROLE_ALIASES[role], "content": content, "train": train}


def clean_conversations(raw: list[list], path: str, strict: bool) -> tuple[list[list[dict]], Counter]:
    """Validate every conversation; fix or skip the soft problems and count them.

    Structural problems raise UserError. Soft ones are repaired as a user would expect: consecutive
    messages of one role are merged with a blank line, a leading assistant message and a trailing
    user message are dropped, an empty assistant reply stays as context but is not trained, and a
    conversation with nothing left to train is skipped. With strict=True each of these is an error.
    """
    problems = Counter()
    cleaned = []

    def soft(kind: str, where: str):
        if strict:
            raise UserError(f"{where}: {kind} (STRICT is on; fix the data or set --strict=False)")
        problems[kind] += 1

    for i, conversation in enumerate(raw):
        messages = [validate_message(m, f"{path}: conversation {i}, message {j}") for j, m in enumerate(conversation)]
        for j, m in enumerate(messages):
            if m["role"] == "system" and j > 0:
                raise UserError(f"{path}: conversation {i}, message {j}: a system message may only come first")
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        turns = []
        for j, m in enumerate(messages[len(system):], len(system)):
            if turns and turns[-1]["role"] == m["role"]:
                soft("consecutive messages of one role merged", f"{path}: conversation {i}, message {j}")
                previous = turns[-1]
                turns[-1] = {"role": m["role"], "content": previous["content"] + "\n\n" + m["content"],
                             "train": previous["train"] and m["train"]}
            else:
                turns.append(dict(m))
        if turns and turns[0]["role"] == "assistant":
            soft("leading assistant message dropped", f"{path}: conversation {i}, message {len(system)}")
            turns = turns[1:]
        if turns and turns[-1]["role"] == "user":
            soft("trailing user message dropped", f"{path}: conversation {i}, message {len(messages) - 1}")
            turns = turns[:-1]
        for m in turns:
            if m["role"] == "assistant" and m["train"] and not m["content"].strip():
                soft("empty assistant reply kept as context, not trained", f"{path}: conversation {i}")
                m["train"] = False
        if not any(m["role"] == "assistant" and m["train"] for m in turns):
            soft("conversation skipped: no assistant reply to train", f"{path}: conversation {i}")
            continue
        cleaned.append(system + turns)
    return cleaned, problems


# ----------------------------------------------------------------------------------------------------
# tokenization and labels (the rendering itself is decided in chat_format.py)

_template_cache: dict = {}


def _encode_as_text(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of texts, with control-token strings in them encoded as plain text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    # The Rust tokenizer directly, without offsets: about a quarter faster than the Python wrapper.
    previous = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = previous


def tokenize_batch(tokenizer, batch: list[list[tuple]]) -> list[tuple[list, list]]:
    """Tokenize many examples' pieces in two batched calls; return (input_ids, labels) for each.

    Message contents are tokenized with split_special_tokens=True, so text such as
    "<start_of_turn>model" inside a message stays plain text and can never open a turn. The
    template's own text is tokenized normally, so its markers become the real control tokens. Each
    piece is tokenized on its own, exactly as at inference, where the prompt ends at the assistant
    header and the model generates the reply's tokens from there.
    """
    content = [text for pieces in batch for text, is_content, _ in pieces if is_content]
    content_ids = iter(_encode_as_text(tokenizer, content))
    # A template has only a handful of distinct pieces (headers, separators): tokenize each once.
    cache = _template_cache.setdefault((id(tokenizer), tokenizer.chat_template), {})
    new = list({text for pieces in batch for text, is_content, _ in pieces if not is_content and text not in cache})
    if new:
        cache.update(zip(new, tokenizer(new, add_special_tokens=False)["input_ids"]))
    out = []
    for pieces in batch:
        ids, labels = [], []
        for text, is_content, trained in pieces:
            piece = next(content_ids) if is_content else cache[text]
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
        out.append((ids, labels))
    return out


def tokenize_conversation(tokenizer, fmt: ChatFormat, messages: list[dict], check: bool = False) -> list[tuple]:
    """(input_ids, labels) of each training example of one conversation (see chat_format.conversation_examples)."""
    examples = conversation_examples(tokenizer, fmt, messages)
    if check:
        for example in examples:
            check_rendering(tokenizer, fmt, messages, example)
    return tokenize_batch(tokenizer, [e.pieces for e in examples])


def _exchanges(messages: list[dict]) -> list[list[dict]]:
    """Group a cleaned conversation into exchanges: [system?, user, assistant], [user, assistant], ..."""
    groups, start = [], 0
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            groups.append(messages[start:i + 1])
            start = i + 1
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


def prepare_batch(batch: dict, tokenizer, fmt: ChatFormat, cfg: dict) -> dict:
    """datasets.map function: conversations in, training examples (input_ids, labels) out."""
    conversations = [json.loads(c) for c in batch["conversation"]]
    if cfg["TRAIN_ON"] == "last":  # decided on the whole conversation, before any split
        conversations = [only_last_reply_trained(c) for c in conversations]
    per_conversation = []
    for messages in conversations:
        examples = conversation_examples(tokenizer, fmt, messages)
        for example in examples:
            check_rendering(tokenizer, fmt, messages, example)
        per_conversation.append(examples)
    tokenized = iter(tokenize_batch(tokenizer, [e.pieces for examples in per_conversation for e in examples]))
    out = {"input_ids": [], "labels": [], "conversation_index": [], "stats": []}

    def tokenize(msgs):
        return tokenize_conversation(tokenizer, fmt, msgs, check=True)

    for index, messages, rendered in zip(batch["index"], conversations, per_conversation):
        examples, stats = [next(tokenized) for _ in rendered], Counter()
        if len(examples) > 1:  # the template renders history differently from the prompt: the cost of exactness
            stats["extra examples: replies kept in their inference context"] += len(examples) - 1
            stats["extra tokens: context repeated in those examples"] += (
                sum(len(ids) for ids, _ in examples) - max(len(ids) for ids, _ in examples))
        if max((len(ids) for ids, _ in examples), default=0) > cfg["MAX_SEQ_LENGTH"]:
            examples, cut = fit_conversation(
                tokenize, messages, cfg["MAX_SEQ_LENGTH"], cfg["LONG_CONVERSATIONS"], cfg["OVERLONG_EXCHANGE"]
            )
            stats.update(cut)
        if not examples:  # keep an empty row so that the counts survive; it is filtered out afterwards
            examples = [([], [])]
        for n, (ex_ids, ex_labels) in enumerate(examples):
            out["input_ids"].append(ex_ids)
            out["labels"].append(ex_labels)
            out["conversation_index"].append(index)
            out["stats"].append(json.dumps(stats) if n == 0 else "{}")
    return out


_FORK_SHARED: dict = {}  # what forked map workers read from memory instead of receiving it pickled


def _prepare_batch_shared(batch: dict, key: str) -> dict:
    return prepare_batch(batch, **_FORK_SHARED[key])


def _workers_fork() -> bool:
    """Whether datasets' map workers start by fork (Linux up to Python 3.13), inheriting this process's memory."""
    try:
        import multiprocess

        return multiprocess.get_start_method() == "fork"
    except Exception:
        return False


def prepare_dataset(conversations: list[list[dict]], tokenizer, fmt: ChatFormat, cfg: dict, name: str):
    """Tokenize and mask all conversations with datasets.map; return (dataset, stats)."""
    import pyarrow.compute as pc
    from datasets import Dataset, disable_progress_bars

    rows = {"index": list(range(len(conversations))), "conversation": [json.dumps(c) for c in conversations]}
    dataset = Dataset.from_dict(rows)
    many = len(conversations) >= 2000  # fewer are done in about a second: no worker processes, no progress bar
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
    try:
        dataset = dataset.map(
            function, batched=True, batch_size=256, num_proc=num_proc, remove_columns=dataset.column_names,
            fn_kwargs=kwargs, desc=f"Tokenizing {name} conversations",
            # An in-memory dataset is never reused from a cache, so a fresh fingerprint is right, and it spares
            # datasets hashing the whole tokenizer (seconds for a 256k vocabulary) on every call.
            new_fingerprint=key,
        )
    finally:
        _FORK_SHARED.pop(key, None)
    stats = Counter()
    for s in dataset["stats"]:
        if s != "{}":
            stats.update(json.loads(s))
    lengths = pc.list_value_length(dataset.data.column("input_ids")).to_pylist()
    keep = [i for i, n in enumerate(lengths) if n > 0]
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    dataset = dataset.remove_columns(["stats"])
    return dataset, stats


def token_counts(dataset) -> dict:
    """Counts for the summary: examples, tokens, trained tokens, length percentiles."""
    import pyarrow.compute as pc

    # In Arrow: tens of millions of labels are too many to walk in Python.
    lengths = sorted(pc.list_value_length(dataset.data.column("input_ids")).to_pylist())
    labels = pc.list_flatten(dataset.data.column("labels"))
    trained = pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0

    def pct(p):
        return lengths[min(len(lengths) - 1, int(p / 100 * len(lengths)))] if lengths else 0

    return {"examples": len(lengths), "tokens": sum(lengths), "trained_tokens": trained,
            "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": lengths[-1] if lengths else 0}


# ----------------------------------------------------------------------------------------------------
# showing what will be trained

def render_mask(tokenizer, input_ids: list[int], labels: list[int], color: bool) -> str:
    """The example's text with trained spans highlighted (green on a terminal, [[...]] otherwise)."""
    out, start = [], 0
    while start < len(input_ids):
        trained = labels[start] != IGNORE_INDEX
        end = start
        while end < len(input_ids) and (labels[end] != IGNORE_INDEX) == trained:
            end += 1
        text = tokenizer.decode(input_ids[start:end])
        if trained:
            text = f"\033[42;30m{text}\033[0m" if color else f"[[{text}]]"
        out.append(text)
        start = end
    return "".join(out)


def print_summary(log, fmt_name, fmt: ChatFormat, problems: Counter, n_raw: int, n_kept: int, counts: dict,
                  cut_stats: Counter, name: str, held_out: int = 0) -> None:
    log(f"data ({name}): {fmt_name}")
    share = counts["trained_tokens"] / counts["tokens"] if counts["tokens"] else 0.0
    rows = [("conversations read", n_raw), *([("held out for evaluation", held_out)] if held_out else []),
            ("conversations kept", n_kept),
            *[(k, v) for k, v in sorted(problems.items())], *[(k, v) for k, v in sorted(cut_stats.items())],
            ("training examples", counts["examples"]), ("tokens", counts["tokens"]),
            ("trained tokens", f"{counts['trained_tokens']} ({share:.1%})"),
            ("example length p50 / p90 / p99 / max",
             f"{counts['p50']} / {counts['p90']} / {counts['p99']} / {counts['max']}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")


# ----------------------------------------------------------------------------------------------------
# model and training

def choose_attention(model_config, requested: str, cuda: bool) -> tuple[str, str]:
    """Pick the fastest attention kernel that computes this model exactly; return (name, reason)."""
    softcap = getattr(model_config, "attn_logit_softcapping", None)
    if requested != "auto":
        if softcap and requested == "sdpa":
            raise UserError(f"attn_implementation='sdpa' drops {model_config.model_type}'s attention softcapping; "
                            "use 'auto', 'flash_attention_2', 'flex_attention' or 'eager'")
        return requested, "set by ATTN_IMPLEMENTATION"
    if cuda and _flash_attn_ok():
        return "flash_attention_2", "flash-attn >= 2.6.3 is installed (exact softcapping, varlen packing)"
    if softcap:
        if not cuda:
            return "eager", "CPU: flex attention has no backward here and SDPA drops softcapping"
        head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
        shared = _shared_memory_per_block()
        if head_dim > 128 and shared is not None and shared < FLEX_BACKWARD_SHARED_MEMORY:
            return "eager", (f"flash-attn not installed, and flex attention's backward for head_dim {head_dim} does not "
                             f"fit this GPU's {shared // 1024} KiB of shared memory per block; eager is exact but "
                             "slower: pip install flash-attn>=2.6.3")
        return "flex_attention", "flash-attn not installed; flex attention applies softcapping exactly"
    return "sdpa", "PyTorch scaled-dot-product attention"


# PyTorch's flex attention kernels for head_dim > 128 (Gemma-2 has 256) stage blocks of Q, K, V and their
# gradients in shared memory: the backward needs over 110 KiB per block. Data-centre cards have room (A100:
# 163 KiB, H100 and B200: 227 KiB); consumer and workstation cards (RTX 3090/4090/5090, A10G, L4, L40S: 99 KiB)
# do not, and the backward then fails to compile at the first step. Those cards get eager attention instead.
FLEX_BACKWARD_SHARED_MEMORY = 160 * 1024


def _shared_memory_per_block() -> int | None:
    """Shared memory one CUDA block may use on GPU 0 (opt-in maximum), in bytes; None if unknown."""
    import torch

    try:
        props = torch.cuda.get_device_properties(0)
        return int(getattr(props, "shared_memory_per_block_optin", 0)) or None
    except Exception:
        return None


def quantization_problem(cuda: bool) -> str | None:
    """Why LOAD_IN_4BIT cannot run on this machine, or None. Asked before any weights are read."""
    if not cuda:
        return "load_in_4bit=True needs a CUDA GPU (bitsandbytes 4-bit kernels); set --load_in_4bit=False"
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return ("load_in_4bit=True needs bitsandbytes: pip install -r requirements-gpu.txt, "
                "or set --load_in_4bit=False")
    return None


def quantization_config():
    """QLoRA's 4-bit loading: NF4 weights, double quantisation, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def lora_config(cfg: dict):
    from peft import LoraConfig

    targets = cfg["LORA_TARGET_MODULES"]
    return LoraConfig(
        r=cfg["LORA_R"], lora_alpha=cfg["LORA_ALPHA"], lora_dropout=cfg["LORA_DROPOUT"], task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )


UNLEARNED = 0.01  # a control token the base model gives less than this probability where replies need it


def generated_control_tokens(tokenizer, dataset, examples: int = 2000) -> list[int]:
    """The control tokens the replies must produce (their closing, and any other the template trains), read off
    the labels of the first examples."""
    control = control_token_ids(tokenizer)
    found = set()
    for labels in dataset.select(range(min(examples, len(dataset))))["labels"]:
        found.update(t for t in labels if t in control)
    return sorted(found)


def token_probabilities(model, dataset, ids: list[int], examples: int = 8, max_len: int = 1024) -> dict[int, float]:
    """The model's mean probability of each token in ids at the places the first examples train it.

    Logits are computed at those places only (logits_to_keep), never for the whole (tokens x vocabulary)."""
    import torch

    total, seen = Counter(), Counter()
    model.eval()
    with torch.no_grad():
        for row in dataset.select(range(min(examples, len(dataset)))):
            labels = row["labels"][:max_len]
            at = [p for p in range(1, len(labels)) if labels[p] in ids]
            if not at:
                continue
            inputs = torch.tensor([row["input_ids"][:max_len]], device=model.device)
            keep = torch.tensor([p - 1 for p in at], device=model.device)  # the logits at p - 1 predict token p
            probs = model(input_ids=inputs, logits_to_keep=keep).logits[0].float().softmax(-1)
            for k, p in enumerate(at):
                total[labels[p]] += probs[k, labels[p]].item()
                seen[labels[p]] += 1
    return {t: total[t] / seen[t] for t in seen}


def control_tokens_to_train(model, tokenizer, train_set, cfg: dict, state, log) -> dict[int, float]:
    """The control tokens whose embedding rows are trained too (TRAIN_CONTROL_TOKENS), with the base model's
    probability of each where the data needs it, said in one line.

    A base model has never seen its chat template's tokens. Gemma 3 270M gives <end_of_turn> a probability of
    about 1e-8 where replies end, and LoRA on the layers alone raises it slowly (measured on the sample data:
    1.4e-3 after 100 steps), so the fine-tuned model runs on instead of stopping. Training the token's own row
    (one vector of the embedding, tied to the LM head) fixes that at the cost of a few thousand parameters.
    "auto" trains the rows of the tokens the base model gives less than UNLEARNED where the data needs them; an
    instruct model that knows its template trains nothing extra and keeps a plain LoRA adapter."""
    if cfg["TRAIN_CONTROL_TOKENS"] is False:
        return {}
    ids = generated_control_tokens(tokenizer, train_set)
    if not ids:
        return {}
    # The probe and the tied rows need the whole model in every process: DDP has it, FSDP and DeepSpeed shard it.
    if any(os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() == "true" for engine in ("FSDP", "DEEPSPEED")):
        if cfg["TRAIN_CONTROL_TOKENS"] is True:
            raise UserError("train_control_tokens=True does not work with FSDP or DeepSpeed, which shard the "
                            "embedding; set it to False, or 'auto', which skips it there")
        return {}
    if not getattr(model, "is_quantized", False):
        model.to(state.device)  # where the trainer would put it
    probs = token_probabilities(model, train_set, ids)
    chosen = ids if cfg["TRAIN_CONTROL_TOKENS"] is True else [t for t in ids if probs.get(t, 1.0) < UNLEARNED]
    if not chosen:
        return {}
    found = ", ".join(f"{tokenizer.convert_ids_to_tokens(t)} (p={probs.get(t, float('nan')):.1e})" for t in chosen)
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        log(f"WARNING: the base model has not learned the control tokens its replies end with: {found}, where the "
            "data needs them. Their rows cannot be trained here (the LM head is not tied to the embeddings), so "
            "the fine-tuned model may not stop until LoRA has learned them: train longer, or start from the "
            "instruct model")
        return {}
    log(f"control tokens: {found} where the replies need them under the base model: their embedding rows are "
        "trained too (TRAIN_CONTROL_TOKENS)")
    return {t: probs.get(t, 1.0) for t in chosen}


def batching_plan(padding_free: bool, attn: str) -> str:
    """How batches are built, for the log. Padding-free batches (examples concatenated in one row, no padding)
    are exact with every kernel in training: no cache is built there (SFTTrainer passes use_cache=False), so
    transformers reads the example boundaries from the restarting position_ids (tests/test_training_math.py).
    "auto" uses them only with flash-attn, whose varlen kernel computes each example alone; eager and SDPA would
    compute the whole concatenated row, every pair across examples included, and flex attention is unmeasured."""
    if not padding_free:
        return "padded batches of similar length (padding-free is automatic with flash-attn only)"
    if attn == "flash_attention_2":
        return "padding-free (examples concatenated, kept apart by flash-attn's varlen kernel)"
    cost = ("flex attention skips the blocks that lie across examples" if attn == "flex_attention"
            else f"{attn} attention still computes every pair across examples, then masks it")
    return (f"padding-free with {attn} attention, as set by PADDING_FREE (examples kept apart by a mask built from "
            f"their position_ids; {cost})")


def _flash_attn_ok() -> bool:
    try:
        from importlib.metadata import version

        from packaging.version import Version

        return Version(version("flash-attn")) >= Version("2.6.3")
    except Exception:
        return False


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products at about twice the fp32 rate. Elsewhere bf16 is emulated and slow."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older PyTorch without these probes
        return False


def lean_cpu_lm_head() -> None:
    """On the CPU, score the LM head in small tiles.

    TRL's fused LM head never materialises the (tokens x vocabulary) logits; on a GPU its Triton kernel works on
    tiles of 4096 tokens x 32768 words. Its CPU path uses the same tiles through torch ops, which allocate several
    float32 copies of a tile (512 MiB each): about 4 GiB of transient memory per step for a 262k vocabulary, most
    of the quick start's peak. 1024 x 8192 tiles compute the same sums in the same order of words, with 1/16 of
    the memory (measured: peak 8.6 -> 4.9 GiB for a 4 x 1024-token fp32 step of Gemma 3 270M, slightly faster).
    The constants are TRL's own module settings; a TRL without them keeps its defaults."""
    try:
        import trl.kernels.chunked_logprob as kernel
        import trl.trainer.utils as trl_utils
    except ImportError:
        return
    if hasattr(kernel, "TOKEN_CHUNK_SIZE") and hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        kernel.TOKEN_CHUNK_SIZE = 1024
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 8192


def peak_memory_gib() -> float:
    """Peak memory so far: the GPU's allocated memory, or on the CPU the process's peak resident set."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def model_stop_ids(model_name: str) -> tuple:
    """The model's own stop tokens from its generation config, where it has one (read before any weights)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_name).eos_token_id
    except Exception:  # no generation_config.json: the tokenizer's eos is used alone
        return ()
    return tuple(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def stop_token_ids(fmt: ChatFormat, generation_config) -> list[int]:
    """What the saved generation config stops on: the trained closing's last token, then the model's own."""
    eos = generation_config.eos_token_id
    own = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return list(dict.fromkeys([fmt.closing_ids[-1], *own, *fmt.stop_ids]))


class ProgressPrinter:
    """One fixed-format line per logging step; the losses also go to metrics.jsonl in the run folder."""

    def __init__(self, log, run_dir: Path):
        from transformers import TrainerCallback

        printer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                printer.last_time = time.time()  # the rate excludes model loading and the first evaluation

            def on_log(self, args, state, control, logs=None, **kw):
                if state.is_world_process_zero:  # every process gets the same logs; one writes them
                    printer.on_log(state, logs or {})

        self.callback = _Callback()
        self.log, self.path = log, run_dir / "metrics.jsonl"
        self.last_time, self.last_tokens = time.time(), 0

    def on_log(self, state, logs: dict):
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if "loss" in logs:
            now, tokens = time.time(), logs.get("num_tokens", 0)
            rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_tokens = now, tokens
            mem = f" | mem {peak_memory_gib():.1f} GiB"
            self.log(f"step {state.global_step:>5}/{state.max_steps} | loss {logs['loss']:.4f} | "
                     f"lr {logs.get('learning_rate', 0):.2e} | {rate:,.0f} tok/s{mem}")
        elif "eval_loss" in logs:
            self.log(f"eval  step {state.global_step:>5} | eval loss {logs['eval_loss']:.4f} | "
                     f"perplexity {math.exp(min(logs['eval_loss'], 50)):.2f}")


def new_run_dir(output_dir: str, run_name: str, resume: bool) -> Path:
    """Each run gets its own folder; a finished run is never overwritten.

    run_name "" means the start time; under several processes the caller passes the main process's
    choice to all, so that they agree on one folder.
    """
    root = Path(output_dir)
    if resume:
        candidates = [root / run_name] if run_name else sorted(
            (p for p in root.glob("*") if p.is_dir() and not (p / "DONE").exists()), key=lambda p: p.stat().st_mtime)
        if not candidates or not candidates[-1].exists():
            raise UserError(f"nothing to resume in {root}" + (f" named {run_name!r}" if run_name else ""))
        run_dir = candidates[-1]
        if (run_dir / "DONE").exists():
            raise UserError(f"{run_dir} finished already; start a new run instead of resuming")
        return run_dir
    run_dir = root / (run_name or time.strftime("%Y%m%d-%H%M%S"))
    if (run_dir / "DONE").exists():
        raise UserError(f"{run_dir} holds a finished run; choose another --run_name (it is never overwritten)")
    if run_dir.exists() and any(run_dir.glob("checkpoint-*")):
        raise UserError(f"{run_dir} holds an unfinished run; add --resume=True to continue it, or pick another name")
    return run_dir


def last_checkpoint(run_dir: Path):
    """The newest complete checkpoint of a run (one with its trainer state written), or None."""
    done = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def prepare_once(state, run_dir: Path, conversations, eval_conversations, tokenizer, fmt, cfg):
    """Prepare the data on the main process; other processes wait, then load what it saved."""
    from datasets import load_from_disk

    cache = run_dir / ".prepared"
    train_set = eval_set = None
    cut_stats = Counter()
    with state.main_process_first():
        if state.is_main_process:
            train_set, cut_stats = prepare_dataset(conversations, tokenizer, fmt, cfg, "train")
            if eval_conversations:
                eval_set = prepare_dataset(eval_conversations, tokenizer, fmt, cfg, "eval")[0]
            if state.num_processes > 1:
                train_set.save_to_disk(str(cache / "train"))
                if eval_set is not None:
                    eval_set.save_to_disk(str(cache / "eval"))
        else:
            train_set = load_from_disk(str(cache / "train"))
            eval_set = load_from_disk(str(cache / "eval")) if (cache / "eval").exists() else None
    return train_set, eval_set, cut_stats


class NonFiniteLoss(Exception):
    pass


def make_trainer_class():
    """SFTTrainer that stops at the first non-finite loss, before the optimizer applies it."""
    import torch
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if not torch.isfinite(loss).all():  # one host sync per micro-batch: negligible beside the step
                raise NonFiniteLoss(self.state.global_step + 1)
            return loss

    return Trainer


def generate_replies(model, tokenizer, fmt: ChatFormat, prompts: list, stop_ids: list, max_new_tokens: int,
                     batch_tokens: int = 16384, batch_size: int = 32) -> list[dict]:
    """Greedy replies to prompts (lists of messages ending with a user turn), rendered as in training.

    Each is {"text", "tokens" (generated before the stop token), "stopped" (ended with a stop token within
    max_new_tokens)}, in the order of the prompts. Batches are padded on the left, so every prompt ends where
    generation starts. They are filled in order of length, up to batch_size prompts and batch_tokens padded
    tokens: few batches (each step of generate costs about the same for 8 rows as for 16 on a CPU), and a long
    prompt does not make many short ones pay for its padding."""
    import torch

    texts = [prompt_text(tokenizer, fmt, p) for p in prompts]
    # the template wrote BOS already: no special tokens are added again
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    batches = [[]]
    for i in order:
        if batches[-1] and (len(batches[-1]) == batch_size
                            or (len(batches[-1]) + 1) * (lengths[i] + max_new_tokens) > batch_tokens):
            batches.append([])
        batches[-1].append(i)
    out = [None] * len(texts)
    for batch in batches:
        inputs = tokenizer([texts[i] for i in batch], add_special_tokens=False, padding=True, padding_side="left",
                           return_tensors="pt").to(model.device)
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                       eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        for i, row in zip(batch, generated[:, inputs["input_ids"].shape[1]:].tolist()):
            end = next((n for n, t in enumerate(row) if t in stop_ids), None)
            kept = row if end is None else row[:end]
            out[i] = {"text": tokenizer.decode(kept, skip_special_tokens=True).strip(), "tokens": len(kept),
                      "stopped": end is not None}
    return out


@contextlib.contextmanager
def merged(model):
    """The adapter merged into the weights for a while: generation at the base model's speed. Unmerged, every
    step would add the LoRA products and copy the embedding to put in trained token rows (TRAIN_CONTROL_TOKENS).
    A 4-bit base stays unmerged: merging into it would round the weights."""
    quantized = getattr(model.get_base_model(), "is_quantized", False)
    if not quantized:
        model.merge_adapter()
    try:
        yield model
    finally:
        if not quantized:
            model.unmerge_adapter()


def reply_report(model, tokenizer, fmt: ChatFormat, conversations: list, cfg: dict, run_dir: Path, log) -> dict:
    """Replies to the last user turn of held-out conversations, by the base model and the fine-tuned one.

    "My fine-tuned model never stops" is the commonest complaint about chat fine-tuning, so every run with an eval
    set measures it: the share of replies that end with the end-of-turn token within REPLY_MAX_TOKENS, their mean
    length against the references', and the share that open as the references do (their first two words).
    "Before" is the same model with the LoRA adapter switched off, which is exactly the base model (the adapter
    starts as a zero update), so no copy of the weights is needed. Writes samples.md and replies.json."""
    prompts, references, ref_tokens, too_long = [], [], [], 0
    for conversation in conversations:
        if len(prompts) == cfg["REPLY_PROMPTS"]:
            break
        last_user = max(i for i, m in enumerate(conversation) if m["role"] == "user")
        reference = next(m["content"] for m in conversation[last_user + 1:] if m["role"] == "assistant")
        n_tokens = len(tokenizer(reference, add_special_tokens=False)["input_ids"])
        if n_tokens > cfg["REPLY_MAX_TOKENS"]:  # stopping can only be judged where the reference fits the limit
            too_long += 1
            continue
        prompts.append(conversation[:last_user + 1])
        references.append(reference)
        ref_tokens.append(n_tokens)
    if not prompts:
        log(f"no held-out reply is as short as reply_max_tokens={cfg['REPLY_MAX_TOKENS']}: no replies measured")
        return {}
    stop_ids = list(model.generation_config.eos_token_id)
    model.eval()
    replies = {}
    for label in ("before", "after"):
        with model.disable_adapter() if label == "before" else merged(model):
            replies[label] = generate_replies(model, tokenizer, fmt, prompts, stop_ids, cfg["REPLY_MAX_TOKENS"])

    def opening(text):
        return " ".join(text.split()[:2])

    report = {"prompts": len(prompts), "left_out_longer_references": too_long, "max_new_tokens": cfg["REPLY_MAX_TOKENS"],
              "reference_mean_tokens": sum(ref_tokens) / len(ref_tokens)}
    for label, rows in replies.items():
        report[label] = {
            "stop_rate": sum(r["stopped"] for r in rows) / len(rows),
            "mean_tokens": sum(r["tokens"] for r in rows) / len(rows),
            "same_opening": sum(opening(r["text"]) == opening(ref) for r, ref in zip(rows, references)) / len(rows)}
    (run_dir / "replies.json").write_text(json.dumps(report, indent=1) + "\n")
    left_out = f"; {too_long} whose reference reply is longer left out" if too_long else ""
    table = [f"Replies to {len(prompts)} held-out prompts (greedy, at most {cfg['REPLY_MAX_TOKENS']} tokens{left_out}):",
             f"  {'':30} {'before':>8} {'after':>8} {'reference':>10}",
             f"  {'stopped at the end of turn':30} {report['before']['stop_rate']:>8.0%} {report['after']['stop_rate']:>8.0%}",
             f"  {'mean length (tokens)':30} {report['before']['mean_tokens']:>8.1f} {report['after']['mean_tokens']:>8.1f}"
             f" {report['reference_mean_tokens']:>10.1f}",
             f"  {'open like the reference':30} {report['before']['same_opening']:>8.0%} "
             f"{report['after']['same_opening']:>8.0%}"]
    for line in table:
        log(line)
    if report["after"]["stop_rate"] < report["before"]["stop_rate"]:
        log(f"WARNING: the fine-tuned model stops less often than the base model did "
            f"({report['after']['stop_rate']:.0%} against {report['before']['stop_rate']:.0%}): check that the data's "
            "replies end where they should, or train longer")
    blocks = ["# Sample replies\n", "\n".join(table) + "\n"]
    for n in range(min(cfg["SAMPLE_REPLIES"], len(prompts))):
        before, after = replies["before"][n], replies["after"][n]
        blocks.append(f"## Conversation {n + 1}\n\n**User:** {prompts[n][-1]['content']}\n\n"
                      f"**Before training:** {before['text']}{'' if before['stopped'] else ' (cut)'}\n\n"
                      f"**After training:** {after['text']}{'' if after['stopped'] else ' (cut)'}\n\n"
                      f"**Reference:** {references[n]}\n")
    (run_dir / "samples.md").write_text("\n".join(blocks))
    return report


def plot_losses(metrics_path: Path, out_path: Path):
    """Train and eval loss against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "train", "-"), (evals, "eval", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss on trained (assistant) tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


# ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> Path | None:
    cfg = parse_overrides(sys.argv[1:] if argv is None else argv, CONFIG)
    import torch
    from accelerate import PartialState

    # cpu=True without a GPU: a plain PartialState() never joins the other processes on a CPU-only host
    state = PartialState(cpu=not torch.cuda.is_available())
    log = print if state.is_main_process else (lambda *a, **k: None)
    random.seed(cfg["SEED"])

    # --- data: load and validate, before anything heavy
    raw, data_format = load_conversations(cfg["DATA_PATH"])
    conversations, problems = clean_conversations(raw, cfg["DATA_PATH"], cfg["STRICT"])
    if cfg["EVAL_DATA_PATH"]:
        raw_eval, eval_format = load_conversations(cfg["EVAL_DATA_PATH"])
        eval_conversations, eval_problems = clean_conversations(raw_eval, cfg["EVAL_DATA_PATH"], cfg["STRICT"])
    elif cfg["EVAL_FRACTION"] > 0:
        order = list(range(len(conversations)))
        random.Random(cfg["SEED"]).shuffle(order)
        n_eval = max(1, round(cfg["EVAL_FRACTION"] * len(conversations)))
        held = set(order[:n_eval])
        eval_conversations = [c for i, c in enumerate(conversations) if i in held]
        conversations = [c for i, c in enumerate(conversations) if i not in held]
        eval_format, eval_problems, raw_eval = data_format, Counter(), eval_conversations
    else:
        eval_conversations = []
    if not conversations:
        raise UserError(f"{cfg['DATA_PATH']}: no conversation is left to train on after validation")

    # --- tokenizer and role markers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg["MODEL_NAME"])
    if tokenizer.pad_token is None:  # only if missing: the model's own pad token is kept
        tokenizer.pad_token = tokenizer.eos_token
    load_chat_template(tokenizer, cfg["CHAT_TEMPLATE"])
    fmt = detect_chat_format(tokenizer, cfg["CHAT_TEMPLATE_KWARGS"], model_stop_ids(cfg["MODEL_NAME"]))
    log("chat template:")
    for line in describe(fmt):
        log(f"  {line}")

    # --- tokenize and mask (once, on the main process; the others load its result)
    run_name = cfg["RUN_NAME"] or (time.strftime("%Y%m%d-%H%M%S") if not cfg["RESUME"] else "")
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        run_name = broadcast_object_list([run_name])[0]
    run_dir = new_run_dir(cfg["OUTPUT_DIR"], run_name, cfg["RESUME"])
    train_set, eval_set, cut_stats = prepare_once(state, run_dir, conversations, eval_conversations, tokenizer, fmt, cfg)
    counts = token_counts(train_set)
    held_out = len(eval_conversations) if not cfg["EVAL_DATA_PATH"] else 0
    print_summary(log, data_format, fmt, problems, len(raw), len(conversations), counts, cut_stats, "train", held_out)
    if eval_set is not None:
        print_summary(log, eval_format, fmt, eval_problems, len(raw_eval), len(eval_conversations),
                      token_counts(eval_set), Counter(), "eval")
    if counts["trained_tokens"] == 0:
        raise UserError("no token is left to train on: every assistant reply was dropped or marked train=false")
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for k in range(min(cfg["PREVIEW_EXAMPLES"], len(train_set))):
        log(f"--- example {k} ({len(train_set[k]['input_ids'])} tokens; trained text "
            + ("highlighted" if color else "in [[ ]]") + ")")
        log(render_mask(tokenizer, train_set[k]["input_ids"], train_set[k]["labels"], color))
        log("---")

    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "training_config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    log("config: " + ", ".join(f"{k.lower()}={v!r}" for k, v in cfg.items() if v != CONFIG[k]) or "defaults")
    log(f"run folder: {run_dir}")
    if cfg["PREPARE_ONLY"]:
        if state.is_main_process:
            with (run_dir / "prepared.jsonl").open("w") as f:
                for row in train_set:
                    f.write(json.dumps({"input_ids": row["input_ids"], "labels": row["labels"]}) + "\n")
            log(f"wrote {run_dir / 'prepared.jsonl'} ({len(train_set)} examples); stopping before the model loads")
        return run_dir

    # --- model
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    if not cuda:
        lean_cpu_lm_head()
    native = cuda or cpu_has_native_bf16()
    bf16 = native if cfg["PRECISION"] == "auto" else cfg["PRECISION"] == "bf16"
    if not cuda:
        why = {(True, True): "the CPU has native bf16", (False, False): "the CPU has no native bf16",
               (True, False): "as set by PRECISION; the CPU has no native bf16, so this is slow",
               (False, True): "as set by PRECISION"}[(bf16, native)]
        log(f"WARNING: no CUDA GPU found: training on the CPU in {'bfloat16' if bf16 else 'float32'} ({why}), "
            "which is only practical for small models")
    elif not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bfloat16 support (pre-Ampere); use an A100/H100/L4/RTX 30xx or newer")
    if cfg["LOAD_IN_4BIT"] and (problem := quantization_problem(cuda)):
        raise UserError(problem)
    model_config = AutoConfig.from_pretrained(cfg["MODEL_NAME"])
    attn, why = choose_attention(model_config, cfg["ATTN_IMPLEMENTATION"], cuda)
    log(f"attention: {attn} ({why})")
    padding_free = cfg["PADDING_FREE"]
    if padding_free == "auto":
        padding_free = attn == "flash_attention_2"
    log("batching: " + batching_plan(padding_free, attn))
    # Training arguments come before the model: under DeepSpeed ZeRO-3 they switch on sharded loading.
    args = SFTConfig(
        output_dir=str(run_dir), run_name=run_dir.name, seed=cfg["SEED"], data_seed=cfg["SEED"],
        num_train_epochs=cfg["NUM_TRAIN_EPOCHS"], max_steps=cfg["MAX_STEPS"],
        per_device_train_batch_size=cfg["BATCH_SIZE"], per_device_eval_batch_size=cfg["BATCH_SIZE"],
        gradient_accumulation_steps=cfg["GRADIENT_ACCUMULATION_STEPS"], learning_rate=cfg["LEARNING_RATE"],
        lr_scheduler_type=cfg["LR_SCHEDULER"], warmup_steps=cfg["WARMUP_RATIO"], weight_decay=cfg["WEIGHT_DECAY"],
        max_grad_norm=cfg["MAX_GRAD_NORM"], bf16=bf16, logging_steps=cfg["LOGGING_STEPS"],
        eval_strategy="steps" if eval_set is not None and cfg["EVAL_STEPS"] > 0 else "no",
        eval_steps=cfg["EVAL_STEPS"] or None,
        save_strategy="steps" if cfg["SAVE_STEPS"] > 0 else "no", save_steps=cfg["SAVE_STEPS"] or 500,
        save_total_limit=cfg["SAVE_TOTAL_LIMIT"], report_to=cfg["REPORT_TO"], disable_tqdm=True,
        activation_checkpointing=cfg["GRADIENT_CHECKPOINTING"],
        activation_checkpointing_kwargs={"use_reentrant": False},  # the reentrant variant breaks with frozen bases
        max_length=cfg["MAX_SEQ_LENGTH"] if not padding_free else None, padding_free=padding_free,
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenized and masked above
        train_sampling_strategy="random" if padding_free else "group_by_length",
        remove_unused_columns=True, use_cpu=not cuda,
    )
    model_kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": attn}
    if cfg["LOAD_IN_4BIT"]:
        model_kwargs["quantization_config"] = quantization_config()
        model_kwargs["device_map"] = {"": state.local_process_index}
    # A local folder is recorded by its absolute path in adapter_config.json, so that chat.py and
    # merge_adapter.py find the base from any working directory.
    model_path = str(Path(cfg["MODEL_NAME"]).resolve()) if Path(cfg["MODEL_NAME"]).is_dir() else cfg["MODEL_NAME"]
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    model.generation_config.eos_token_id = stop_token_ids(fmt, model.generation_config)  # it stops after its reply
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    peft_config = lora_config(cfg)
    # PEFT trains these rows apart from the frozen embedding; with tied embeddings it serves them to the LM head too
    token_rows = control_tokens_to_train(model, tokenizer, train_set, cfg, state, log)
    peft_config.trainable_token_indices = sorted(token_rows) or None

    # --- train
    progress = ProgressPrinter(log, run_dir)
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=train_set.remove_columns(["conversation_index"]),
        eval_dataset=eval_set.remove_columns(["conversation_index"]) if eval_set is not None else None,
        processing_class=tokenizer, peft_config=peft_config, callbacks=[progress.callback],
    )
    if token_rows:
        head = trainer.model.get_output_embeddings()
        if not hasattr(head, "bias"):
            # TRL's fused loss reads lm_head.weight and lm_head.bias. PEFT's wrapper around a tied LM head serves
            # the weight with the trained rows, but answers no bias: the head it wraps has none (tied heads don't).
            head.bias = getattr(head.token_adapter.base_layer, "bias", None)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our own progress line replaces its raw dicts
    n_proc = state.num_processes
    log(f"effective batch: {cfg['BATCH_SIZE']} per device x {cfg['GRADIENT_ACCUMULATION_STEPS']} accumulation "
        f"x {n_proc} process{'es' if n_proc > 1 else ''} = {cfg['BATCH_SIZE'] * cfg['GRADIENT_ACCUMULATION_STEPS'] * n_proc}"
        " examples per optimizer step")
    if eval_set is not None and not cfg["RESUME"]:
        trainer.evaluate()
    resume_from = None
    if cfg["RESUME"]:
        resume_from = last_checkpoint(run_dir)
        if resume_from is None:
            raise UserError(f"{run_dir} has no complete checkpoint to resume from; start a new run")
        log(f"resuming from {resume_from}")
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLoss as error:
        good = last_checkpoint(run_dir)
        raise UserError(
            f"the loss became NaN or infinite at step {error.args[0]}; training stopped before that update. "
            + (f"The last good checkpoint is {good}. " if good else "No checkpoint was written yet. ")
            + "Lower --learning_rate, check the data for broken examples, or keep float32/bfloat16 (not float16)."
        ) from None
    except torch.OutOfMemoryError:
        raise UserError(
            "out of GPU memory. Try, in this order: --batch_size=1 with a larger --gradient_accumulation_steps "
            "(same effective batch); a smaller --max_seq_length; --gradient_checkpointing=True; "
            "--load_in_4bit=True (QLoRA)."
        ) from None
    except KeyboardInterrupt:
        if state.is_main_process:
            print("\ninterrupted: saving a checkpoint ...", flush=True)
        trainer._save_checkpoint(trainer.model, trial=None)
        raise UserError(f"stopped by Ctrl-C at step {trainer.state.global_step}; checkpoint saved in {run_dir}. "
                        f"Resume with: --resume=True --run_name={run_dir.name}") from None
    if eval_set is not None:
        trainer.evaluate()

    # --- save: adapter, tokenizer with its chat template, generation config, config
    if trainer.is_fsdp_enabled:  # Trainer.save_model writes nothing for a sharded state dict: gather the adapter
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run_dir))
    if state.is_main_process:
        model.generation_config.save_pretrained(run_dir)
        plot = plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
        sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled  # generating needs every process there
        if eval_conversations and cfg["REPLY_PROMPTS"] > 0 and not sharded:
            reply_report(trainer.model, tokenizer, fmt, eval_conversations, cfg, run_dir, log)
            log(f"sample replies: {run_dir / 'samples.md'}")
        shutil.rmtree(run_dir / ".prepared", ignore_errors=True)  # only needed while processes start
        (run_dir / "DONE").write_text("finished\n")
        if plot:
            log(f"loss plot: {plot}")
    log(f"saved the LoRA adapter, tokenizer and generation config to {run_dir}")
    return run_dir


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(2)
