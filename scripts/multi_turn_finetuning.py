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
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chat_format.py, shared with chat.py
from chat_format import (  # noqa: E402  (one place decides how a conversation is rendered)
    ChatFormat, UserError, check_rendering, control_token_ids, conversation_examples, describe, detect_chat_format,
    load_chat_template, prompt_text, split_inline_reasoning,
)
from token_ids import IGNORE_INDEX, encode_examples  # noqa: E402  (ids exact to the tokenizer's own encoding)

# ----------------------------------------------------------------------------------------------------
# data
DATA_PATH = "data/conversations.json"  # JSON/JSONL: lists of messages, {"messages": [...]}, or ShareGPT
EVAL_DATA_PATH = ""  # same formats; "" = none (see EVAL_FRACTION)
EVAL_FRACTION = 0.0  # share of whole conversations held out for evaluation when EVAL_DATA_PATH is ""
STRICT = False  # True: soft data problems (merged turns, dropped turns, skipped conversations) are errors
ROLE_MAP = {}  # the data's own role names: {"bing": "assistant", "chatgpt": "assistant", "bard": None}; None leaves
#               out the conversations holding that role (adds to human/gpt/function_call/observation/...)
TRAIN_ON = "all"  # "all": every assistant turn is trained; "last": only the last one of each conversation
TRAIN_REASONING = True  # train the assistant's reasoning (where the template renders it); False: context only
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
    roles = ("user", "assistant", "system", "tool", None)
    if not all(isinstance(k, str) and v in roles for k, v in c["ROLE_MAP"].items()):
        raise UserError(f"role_map must map the data's role names to 'user', 'assistant', 'system', 'tool' or None, "
                        f"e.g. {{'bing': 'assistant', 'bard': None}}; got {c['ROLE_MAP']!r}")
    if not all(isinstance(k, str) for k in c["CHAT_TEMPLATE_KWARGS"]):
        raise UserError(f"chat_template_kwargs must map names to values, e.g. {{'enable_thinking': False}}; "
                        f"got {c['CHAT_TEMPLATE_KWARGS']!r}")


# ----------------------------------------------------------------------------------------------------
# data: loading and validation (everything here runs before any model weights load)

ROLE_ALIASES = {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool",
                "human": "user", "gpt": "assistant",  # ShareGPT
                "function_call": "assistant", "observation": "tool",  # ShareGPT with tools (LLaMA-Factory)
                "function": "tool", "ipython": "tool"}  # older names of a tool's result


def _read_json_or_jsonl(path: Path):
    """Return (records, is_jsonl): a .jsonl file as a generator, line by line (memory does not grow with the
    file); a .json file parsed whole (or line by line if it turns out to be JSON Lines). Errors name the line and
    column."""
    if not path.exists():
        raise UserError(f"{path}: file not found (set DATA_PATH, or --data_path=...)")
    if path.suffix == ".jsonl":  # one record per line, even when there is only one line
        with path.open(encoding="utf-8-sig") as f:
            head = f.read(1 << 16)
        if not head.strip():
            raise UserError(f"{path}: the file is empty; expected a JSON list of conversations or JSONL, one per line")
        return _jsonl_records(path, path.open(encoding="utf-8-sig")), True
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark from Windows editors
    if not text.strip():
        raise UserError(f"{path}: the file is empty; expected a JSON list of conversations or JSONL, one per line")
    try:
        return json.loads(text), False
    except json.JSONDecodeError as e:
        if text.lstrip()[:1] == "{" and sum(1 for line in text.splitlines() if line.strip()) > 1:
            return list(_jsonl_records(path, text.splitlines())), True
        raise UserError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _jsonl_records(path: Path, lines):
    with contextlib.closing(lines) if hasattr(lines, "close") else contextlib.nullcontext():
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: invalid JSON on line {lineno}, column {e.colno}: {e.msg}") from None


def dataset_source(path: str):
    """DATA_PATH as a Hugging Face dataset: a Parquet file, a folder written by Dataset.save_to_disk, or a dataset
    id with an optional split ("org/name:train"; a local dataset repository folder works the same). None for a
    JSON/JSONL file. Read by `datasets` itself, memory-mapped from Arrow files."""
    import datasets

    file = Path(path)
    if file.suffix == ".parquet":
        if not file.is_file():
            raise UserError(f"{path}: file not found (set DATA_PATH, or --data_path=...)")
        return datasets.Dataset.from_parquet(str(file))
    if file.is_dir() and ((file / "state.json").exists() or (file / "dataset_dict.json").exists()):
        data = datasets.load_from_disk(str(file))
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else next(iter(data.values()))
        return data
    name, _, split = path.partition(":") if not file.exists() else (path, "", "")
    if file.suffix in (".json", ".jsonl") or not (file.is_dir() or ("/" in name and not file.exists())):
        return None
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as error:  # no such dataset, no such split, no network: one line that says which
        raise UserError(f"{path}: cannot load it as a dataset ({type(error).__name__}: {str(error).strip()[:200]}); "
                        "DATA_PATH is a .json/.jsonl/.parquet file, a save_to_disk folder or a dataset id "
                        "such as org/name:train") from None


def load_conversations(path: str) -> tuple[list[list[dict]], str]:
    """Read a data file or dataset into a list of conversations of raw messages; return them and the format found."""
    conversations, found = read_conversations(path)
    return list(conversations), found


def read_conversations(path: str):
    """The raw conversations of a data file or dataset, one at a time (a generator), and the format found. A JSONL
    file is read line by line and a dataset row by row, so memory does not grow with the data; a JSON list is
    parsed whole (use JSONL or Parquet for data larger than memory)."""
    dataset = dataset_source(path)
    if dataset is not None:
        if len(dataset) == 0:
            raise UserError(f"{path}: the dataset holds no rows")
        columns = set(dataset.column_names)
        key = "messages" if "messages" in columns else "conversations" if "conversations" in columns else None
        if key is None:
            raise UserError(f"{path}: expected a 'messages' or 'conversations' column; found {sorted(columns)}")
        name = {"messages": "rows with 'messages'", "conversations": "ShareGPT rows ('conversations')"}[key]
        rows = (record_messages(row, key, f"{path}: conversation {i}") for i, row in enumerate(dataset))
        return rows, f"{name} ({type(dataset).__name__} of {len(dataset)} rows)"
    file = Path(path)
    records, is_jsonl = _read_json_or_jsonl(file)
    if not is_jsonl and not isinstance(records, list):
        raise UserError(f"{file}: expected a list of conversations at the top level, found {type(records).__name__}")
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise UserError(f"{file}: the file holds no conversations")
    if isinstance(first, list):
        found, key = "list of message lists", None
    elif isinstance(first, dict) and "messages" in first:
        found, key = "objects with 'messages'", "messages"
    elif isinstance(first, dict) and "conversations" in first:
        found, key = "ShareGPT ('conversations' of from/value)", "conversations"
    else:
        raise UserError(
            f"{file}: conversation 0: expected a list of messages, an object with 'messages', or a ShareGPT object "
            f"with 'conversations'; found {json.dumps(first)[:80]}"
        )
    every = itertools.chain([first], records)
    conversations = (record_messages(record, key, f"{file}: conversation {i}") for i, record in enumerate(every))
    return conversations, found + (" (JSONL)" if is_jsonl else " (JSON)")


def record_messages(record, key: str | None, where: str) -> list:
    """One record's raw messages. Its tool definitions ({"messages": [...], "tools": [...]}) and a ShareGPT
    record's own system prompt ({"conversations": [...], "system": "..."}) travel with them: the tools as the
    first message's "tools" (see conversation_tools), the system prompt as a leading system message."""
    if key is None:
        messages = record
    elif isinstance(record, dict) and key in record:
        messages = record[key]
    else:
        raise UserError(f"{where}: expected an object with '{key}' like conversation 0")
    if not isinstance(messages, list):
        raise UserError(f"{where}: expected a list of messages, found {type(messages).__name__}")
    if isinstance(record, dict):
        system = record.get("system")
        if isinstance(system, str) and system.strip() and not (
                messages and isinstance(messages[0], dict) and messages[0].get("role", messages[0].get("from")) == "system"):
            messages = [{"role": "system", "content": system}] + messages
        if record.get("tools") not in (None, "", []):
            if not messages or not isinstance(messages[0], dict):
                raise UserError(f"{where}: has tools but no messages")
            messages = [dict(messages[0], tools=record["tools"])] + messages[1:]
    return messages


def _json(value, what: str, where: str):
    """A JSON-encoded string decoded (tools, tool calls and arguments are often stored so); other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: {what} is not valid JSON ({error.msg} at character {error.pos}): "
                        f"{value[:80]!r}") from None


def validate_tool_calls(value, where: str) -> list[dict]:
    """Tool calls in transformers' form: [{"type": "function", "function": {"name", "arguments": {...}}, "id"?}].
    Accepted as given there, flat ({"name", "arguments"}), JSON-encoded, or one call alone."""
    calls = _json(value, "tool_calls", where)
    calls = [calls] if isinstance(calls, dict) else calls
    if not isinstance(calls, list) or not calls:
        raise UserError(f"{where}: tool_calls must be a non-empty list of calls, found {json.dumps(value)[:80]}")
    out = []
    for k, call in enumerate(calls):
        here = f"{where}, tool call {k}"
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise UserError(f"{here}: expected {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                            f"\"arguments\": {{...}}}}}}, found {json.dumps(call)[:80]}")
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{here}: the call has no function name (\"function\": {{\"name\": ...}})")
        arguments = function.get("arguments", function.get("parameters"))
        arguments = {} if arguments is None else _json(arguments, f"the arguments of {name!r}", here)
        if not isinstance(arguments, dict):
            raise UserError(f"{here}: the arguments of {name!r} must be a JSON object, found {json.dumps(arguments)[:80]}")
        normal = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if isinstance(call, dict) and call.get("id") is not None:
            normal["id"] = str(call["id"])
        out.append(normal)
    return out


def validate_tools(value, where: str) -> list[dict]:
    """A conversation's tool definitions (JSON schema), as transformers passes them: [{"type": "function",
    "function": {"name", "description", "parameters"}}]; flat definitions ({"name", ...}) are wrapped so."""
    tools = _json(value, "tools", where)
    if not isinstance(tools, list):
        raise UserError(f"{where}: tools must be a list of function definitions, found {type(tools).__name__}")
    out = []
    for k, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise UserError(f"{where}: tool {k} has no name; expected {{\"type\": \"function\", \"function\": "
                            f"{{\"name\": ..., \"description\": ..., \"parameters\": {{...}}}}}}")
        out.append(tool if "function" in tool else {"type": "function", "function": tool})
    return out


class UnknownRole(UserError):
    """A message of a role that neither the built-in names nor ROLE_MAP know."""

    def __init__(self, message: str, role):
        super().__init__(message)
        self.role = role


class LeftOut(Exception):
    """A conversation holding a role that ROLE_MAP maps to None: left out, counted."""

    def __init__(self, role: str):
        super().__init__(role)
        self.role = role


def validate_message(message, where: str, role_map: dict | None = None, mapped: dict | None = None) -> dict:
    """Check one raw message and return it in our form: {"role", "content", "train"}, and where given "reasoning"
    (from reasoning_content, reasoning or thinking), "tool_calls", "tool_call_id", "name", and on the first
    message "tools". Raise UserError naming the place. Missing fields may be null (Parquet and datasets rows
    carry every field of every message)."""
    if not isinstance(message, dict):
        raise UserError(f"{where}: expected an object with 'role' and 'content', found {type(message).__name__}")
    message = {k: v for k, v in message.items() if v is not None}
    role_map, mapped = role_map or {}, {} if mapped is None else mapped
    out = {}
    if "from" in message and "role" not in message:  # ShareGPT
        if "value" not in message:
            raise UserError(f"{where}: missing 'value'; each ShareGPT message needs 'from' and 'value'")
        role, content = message["from"], message["value"]
        if role == "function_call":  # LLaMA-Factory: the value is the call(s) as JSON
            out["tool_calls"], content = validate_tool_calls(content, where), ""
    elif "role" not in message or ("content" not in message and "tool_calls" not in message):
        missing = [k for k in ("role", "content") if k not in message]
        raise UserError(f"{where}: missing {' and '.join(repr(k) for k in missing)}; each message needs both")
    else:
        role, content = message["role"], message.get("content", "")
    if isinstance(role, str) and role in role_map:
        if role_map[role] is None:
            raise LeftOut(role)
        mapped[role] = role_map[role]
        role = role_map[role]
    if not isinstance(role, str) or role not in ROLE_ALIASES:
        raise UnknownRole(f"{where}: unknown role {role!r}; expected 'user', 'assistant', 'system' or 'tool' "
                          "(or set ROLE_MAP)", role)
    role = ROLE_ALIASES[role]
    if role == "tool" and isinstance(content, (dict, list)):  # a structured result: the model reads it as JSON
        content = json.dumps(content, ensure_ascii=False)
    if not isinstance(content, str):
        raise UserError(f"{where}: content must be a string, found {type(content).__name__}")
    train = message.get("train", True)
    if not isinstance(train, bool):
        raise UserError(f"{where}: 'train' must be true or false, found {train!r}")
    out.update(role=role, content=content, train=train)
    if message.get("tool_calls") not in (None, []):
        if role != "assistant":
            raise UserError(f"{where}: only an assistant message can carry tool_calls (this one is {role!r})")
        out["tool_calls"] = validate_tool_calls(message["tool_calls"], where)
    reasoning = next((message[k] for k in ("reasoning_content", "reasoning", "thinking") if message.get(k)), None)
    if reasoning is not None:
        if role != "assistant" or not isinstance(reasoning, str):
            raise UserError(f"{where}: reasoning must be a string on an assistant message")
        out["reasoning"] = reasoning
    if role == "tool":
        for k in ("tool_call_id", "name"):
            if k in message:
                out[k] = str(message[k])
    if "tools" in message:
        out["tools"] = validate_tools(message["tools"], where)
    return out


def conversation_tools(messages: list[dict]):
    """A conversation's tool definitions: they travel on its first message (see record_messages)."""
    return messages[0].get("tools") if messages else None


def clean_conversations(raw, path: str, strict: bool, kept: list | None = None) -> tuple[list[list[dict]], Counter]:
    """Validate every conversation; fix or skip the soft problems and count them (see clean_conversation).
    `kept`, if given, receives the index in `raw` of each conversation kept."""
    problems = Counter()
    cleaned = []
    for i, conversation in enumerate(raw):
        out = clean_conversation(conversation, f"{path}: conversation {i}", strict, problems)
        if out is not None:
            cleaned.append(out)
            if kept is not None:
                kept.append(i)
    return cleaned, problems


def clean_conversation(conversation: list, at: str, strict: bool, problems: Counter, role_map: dict | None = None,
                       places: dict | None = None) -> list[dict] | None:
    """One conversation validated and repaired, or None where nothing is left to train; soft problems counted.

    Structural problems raise UserError naming the message. Soft ones are repaired as a user would expect:
    consecutive messages of one role are merged with a blank line, a leading assistant message and trailing
    user or tool messages are dropped, an empty assistant reply stays as context but is not trained, a
    conversation with nothing left to train is skipped, and tool calls no result answers are counted. With
    strict=True each of these is an error.
    """
    def soft(kind: str, where: str):
        if strict:
            raise UserError(f"{where}: {kind} (STRICT is on; fix the data or set --strict=False)")
        problems[kind] += 1
        if places is not None and len(places.setdefault(kind, [])) < REPORT_PLACES:
            places[kind].append(where)

    mapped = {}
    try:
        messages = [validate_message(m, f"{at}, message {j}", role_map, mapped) for j, m in enumerate(conversation)]
    except LeftOut as left:
        problems[f"conversations left out: role {left.role!r} (ROLE_MAP)"] += 1
        return None
    for name, target in mapped.items():
        problems[f"conversations with role {name!r} read as {target!r} (ROLE_MAP)"] += 1
    tools = next((m.pop("tools") for m in messages if "tools" in m), None)
    for j, m in enumerate(messages):
        if m["role"] == "system" and j > 0:
            raise UserError(f"{at}, message {j}: a system message may only come first")
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns, numbers = [], []  # the cleaned messages, and where each came from (for the messages to fix)
    for j, m in enumerate(messages[len(system):], len(system)):
        previous = turns[-1] if turns else None
        if previous and previous["role"] == m["role"] and m["role"] != "tool":
            if previous.get("tool_calls") or m.get("reasoning"):
                raise UserError(f"{at}, message {j}: two {m['role']} messages in a row that cannot be merged "
                                "(the first carries tool calls, or the second reasoning): a tool result must "
                                "answer the calls, or the two belong in one message")
            soft("consecutive messages of one role merged", f"{at}, message {j}")
            turns[-1] = dict(previous, content=previous["content"] + "\n\n" + m["content"],
                             train=previous["train"] and m["train"],
                             **({"tool_calls": m["tool_calls"]} if "tool_calls" in m else {}))
        else:
            turns.append(dict(m))
            numbers.append(j)
    check_tool_results(turns, numbers, at, soft)
    if turns and turns[0]["role"] == "assistant":
        soft("leading assistant message dropped", f"{at}, message {numbers[0]}")
        turns, numbers = turns[1:], numbers[1:]
    while turns and turns[-1]["role"] in ("user", "tool"):
        soft(f"trailing {turns[-1]['role']} message dropped", f"{at}, message {numbers[-1]}")
        turns, numbers = turns[:-1], numbers[:-1]
    for m in turns:
        if m["role"] == "assistant" and m["train"] and not (
                m["content"].strip() or m.get("tool_calls") or (m.get("reasoning") or "").strip()):
            soft("empty assistant reply kept as context, not trained", at)
            m["train"] = False
    if not any(m["role"] == "assistant" and m["train"] for m in turns):
        soft("conversation skipped: no assistant reply to train", at)
        return None
    if turns and turns[0]["role"] == "tool":
        raise UserError(f"{at}, message {numbers[0]}: a tool result must follow the assistant message that "
                        "called the tool")
    out = system + turns
    if tools:
        out[0] = dict(out[0], tools=tools)
    return out


def check_tool_results(turns: list[dict], numbers: list[int], at: str, soft) -> None:
    """Every tool result answers a call of the assistant message before it (by tool_call_id where both have
    ids); a call that no result answers is a soft problem (a trajectory cut short)."""
    calls, answered = [], 0
    for m, j in zip(turns, numbers):
        if m["role"] == "tool":
            if not calls:
                raise UserError(f"{at}, message {j}: a tool result with no tool call before it; it must follow "
                                "an assistant message with tool_calls (or other results of those calls)")
            if answered == len(calls):
                raise UserError(f"{at}, message {j}: more tool results than the {len(calls)} call(s) of the "
                                "assistant message before them")
            ids = [c.get("id") for c in calls]
            if m.get("tool_call_id") and any(ids) and m["tool_call_id"] not in ids:
                raise UserError(f"{at}, message {j}: tool_call_id {m['tool_call_id']!r} answers none of the calls "
                                f"before it (ids {', '.join(map(repr, filter(None, ids)))})")
            answered += 1
            continue
        if answered < len(calls):
            soft("tool calls no result answers", f"{at}, message {j}")
        calls, answered = (m.get("tool_calls") or [], 0) if m["role"] == "assistant" else ([], 0)
    if answered < len(calls):
        soft("tool calls no result answers", f"{at}, message {numbers[-1]}")


def conversation_features(messages: list[dict]) -> Counter:
    """What a conversation holds beyond plain chat, for the summary and for checking that the template can render
    it. Keys starting with "_" are for that check only."""
    found = Counter()
    found["conversations with tool definitions"] += bool(conversation_tools(messages))
    for m in messages:
        found["assistant messages with tool calls"] += bool(m.get("tool_calls"))
        found["tool results (context, never trained)"] += m["role"] == "tool"
        apart = bool((m.get("reasoning") or "").strip())
        found["_reasoning given apart"] += apart
        found["assistant messages with reasoning"] += apart or split_inline_reasoning(m) is not m  # inline
    return found


@dataclass
class Data:
    """A data source validated: its conversations (None where this process does not keep them), its counts."""

    conversations: object  # datasets.Dataset of "conversation" (JSON) and "source" (for error messages), on disk
    found: str  # the format found, for the summary
    read: int  # conversations read
    kept: int  # conversations kept
    problems: Counter  # soft problems repaired
    features: Counter  # conversation_features, summed


def validate_data(path: str, strict: bool, folder: Path | None, name: str, log, role_map: dict | None = None) -> Data:
    """Read, validate and repair a data source one conversation at a time, writing what is kept to an Arrow file
    in `folder` (memory-mapped back, as `datasets` does): peak memory depends on the batch, not the data size.
    The whole source is read before any problem stops the run: one report names each kind of problem once, with
    its count and first places (data_report); under STRICT the soft ones too. ROLE_MAP reads the data's own roles.
    Without a folder (processes other than the main one) nothing is kept: the errors and counts are the same."""
    from datasets import Dataset, Features, Value
    from datasets.arrow_writer import ArrowWriter

    conversations, found = read_conversations(path)
    problems, features, read, kept = Counter(), Counter(), 0, 0
    writer = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        writer = ArrowWriter(features=Features({"conversation": Value("string"), "source": Value("string")}),
                             path=str(folder / f"{name}-conversations.arrow"), writer_batch_size=1000)
    start = time.time()
    errors, places = {}, {}  # hard problems: kind -> (count, first places); soft ones' first places
    for i, raw in enumerate(conversations):
        read += 1
        where = f"{path}: conversation {i}"
        try:
            messages = clean_conversation(raw, where, False, problems, role_map, places)
        except UserError as error:  # read on: every problem of the file is reported at once
            note_error(errors, error, where)
            messages = None
        if read % 200_000 == 0:
            log(f"validated {read:,} conversations of {path} ({read / (time.time() - start):,.0f}/s)")
        if messages is None:
            continue
        kept += 1
        features.update(conversation_features(messages))
        if writer is not None:
            writer.write({"conversation": json.dumps(messages), "source": where})
    if writer is not None:
        writer.finalize()
        writer.close()
    if errors:
        raise UserError(data_report(path, errors, "problems that stop the run (the first of each conversation)"))
    soft_places = {k: v for k, v in places.items() if "(ROLE_MAP)" not in k}
    if strict and soft_places:
        raise UserError(data_report(path, {k: (problems[k], v) for k, v in soft_places.items()},
                                    "soft problems (STRICT is on; fix the data or set --strict=False)"))  # noqa: E501
    dataset = Dataset.from_file(str(folder / f"{name}-conversations.arrow")) if writer is not None else None
    return Data(dataset, found, read, kept, problems, +features)


REPORT_PLACES = 3  # places named for each kind of problem
REPORT_KINDS = 20  # kinds of problem listed before the report stops


def note_error(errors: dict, error: UserError, where: str) -> None:
    """Count a conversation's hard problem under its kind (its message without the place), keeping the first places.
    Unknown roles are one kind per role."""
    text = str(error)
    detail = text[len(where):].lstrip(",") if text.startswith(where) else text
    place, _, kind = detail.partition(": ") if detail.startswith(" message") else ("", "", detail.lstrip(": "))
    kind = f"unknown role {error.role!r}" if isinstance(error, UnknownRole) else kind
    count, first = errors.get(kind, (0, []))
    if len(first) < REPORT_PLACES:
        first = first + [where + ("," + place if place else "")]
    errors[kind] = (count + 1, first)


def data_report(path: str, problems: dict, what: str) -> str:
    """One report of a file's problems: each kind once, with its count and first places, at most REPORT_KINDS kinds;
    unknown roles together, with the ROLE_MAP that would read them."""
    roles = {k: v for k, v in problems.items() if k.startswith("unknown role ")}
    lines = []
    if roles:
        listed = ", ".join(f"{k[len('unknown role '):]} ({n} conversation{'s' * (n != 1)}, first: {first[0]})"
                           for k, (n, first) in sorted(roles.items(), key=lambda kv: -kv[1][0]))
        example = ", ".join(f"{k[len('unknown role '):]}: 'assistant'" for k in list(roles)[:3])
        lines.append(f"unknown role{'s' * (len(roles) > 1)} {listed}; expected 'user', 'assistant', 'system' or "
                     "'tool': map each with ROLE_MAP to one of them, or to None to leave out the conversations "
                     f"holding it, e.g. --role_map=\"{{{example}}}\"")
    others = sorted(((k, v) for k, v in problems.items() if k not in roles), key=lambda kv: -kv[1][0])
    for kind, (count, first) in others[:REPORT_KINDS - bool(roles)]:
        also = f"; also {'; '.join(first[1:])}" if len(first) > 1 else ""
        lines.append(f"{first[0]}: {kind} ({count} in all{also})")
    if len(others) > REPORT_KINDS - bool(roles):
        lines.append(f"... and {len(others) - REPORT_KINDS + bool(roles)} more kinds")
    total = sum(n for n, _ in problems.values())
    return (f"{path}: {total} conversation{'s' * (total != 1)} with {what}, of {len(problems)} "
            f"kind{'s' * (len(problems) != 1)} (the whole file was read):\n"
            + "\n".join("  " + line for line in lines))


# ----------------------------------------------------------------------------------------------------
# tokenization and labels (the rendering itself is decided in chat_format.py)

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
    per_conversation = []
    for messages, source in zip(conversations, batch["source"]):
        try:
            examples = conversation_examples(tokenizer, fmt, messages, conversation_tools(messages),
                                             cfg["TRAIN_REASONING"])
            for example in examples:
                check_rendering(tokenizer, fmt, messages, example)
        except UserError as error:  # the template's own message (Llama 3.1: one call per turn), and where
            raise UserError(f"{source}: {error}") from None
        per_conversation.append(examples)
    tokenized = iter(encode_examples(tokenizer, [e for examples in per_conversation for e in examples]))
    out = {"input_ids": [], "labels": [], "conversation_index": [], "stats": []}

    for index, messages, rendered in zip(indices, conversations, per_conversation):
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
                         "conversation_index": Value("int64"), "stats": Value("string")})
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
    stats = Counter()
    for chunk in dataset.data.column("stats").chunks:  # chunk by chunk: a million rows never sit in Python lists
        for s in chunk.filter(pc.not_equal(chunk, "{}")).to_pylist():
            stats.update(json.loads(s))
    lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
    if (lengths == 0).any():
        dataset = dataset.select((lengths > 0).nonzero()[0])
    dataset = dataset.remove_columns(["stats"])
    return dataset, stats


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


# ----------------------------------------------------------------------------------------------------
# showing what will be trained

# how the preview shows each kind of text: (plain-text brackets, terminal colour); untrained text is shown plain
MARKS = {"reply": ("[[", "]]", "42;30"), "reasoning": ("{{", "}}", "44;37"), "call": ("<<", ">>", "43;30"),
         "result": ("((", "))", "2")}
MARK_NAMES = {"reply": "trained reply", "reasoning": "trained reasoning", "call": "trained tool call",
              "result": "tool result, not trained"}


def render_mask(tokenizer, input_ids: list[int], labels: list[int], color: bool, kinds: list | None = None) -> str:
    """The example's text with trained spans marked (coloured on a terminal, [[...]] otherwise). Given each
    token's kind (token_kinds), trained reasoning and tool calls, and the untrained tool results, are marked
    each in their own way (MARKS)."""
    def mark(p):
        if labels[p] != IGNORE_INDEX:
            return kinds[p] if kinds and kinds[p] in ("reasoning", "call") else "reply"
        return "result" if kinds and kinds[p] == "result" else None

    out, start = [], 0
    while start < len(input_ids):
        kind, end = mark(start), start
        while end < len(input_ids) and mark(end) == kind:
            end += 1
        text = tokenizer.decode(input_ids[start:end])
        if kind:
            opening, closing, code = MARKS[kind]
            text = f"\033[{code}m{text}\033[0m" if color else f"{opening}{text}{closing}"
        out.append(text)
        start = end
    return "".join(out)


def legend(kinds: list | None, color: bool) -> str:
    """What the preview's marks mean, for the kinds this example holds."""
    shown = ["reply"] + [k for k in ("reasoning", "call", "result") if kinds and k in kinds]
    if color:
        return "; ".join(f"\033[{MARKS[k][2]}m{MARK_NAMES[k]}\033[0m" for k in shown)
    if shown == ["reply"]:
        return "trained text in [[ ]]"
    return "; ".join(f"{MARK_NAMES[k]} in {MARKS[k][0]} {MARKS[k][1]}" for k in shown)


def token_kinds(tokenizer, fmt: ChatFormat, messages: list[dict], input_ids: list[int], cfg: dict) -> list | None:
    """Each token's kind in the example with these ids, one of the conversation's (None where the example is a
    window that fit_conversation cut: the preview then marks trained text alone)."""
    messages = for_template(messages, fmt)
    if cfg["TRAIN_ON"] == "last":
        messages = only_last_reply_trained(messages)
    examples = conversation_examples(tokenizer, fmt, messages, conversation_tools(messages), cfg["TRAIN_REASONING"])
    for ids, _, kinds in tokenize_batch(tokenizer, examples, kinds=True):
        if ids == list(input_ids):
            return kinds
    return None


def check_template_support(fmt: ChatFormat, features: Counter, cfg: dict, log) -> None:
    """Tools, tool calls and reasoning the model's template cannot render: an error for tools and calls (the
    turns could not be trained as the model produces them), a note for reasoning (it is left out)."""
    model = cfg["MODEL_NAME"] + (f" with chat_template={cfg['CHAT_TEMPLATE']}" if cfg["CHAT_TEMPLATE"] else "")
    for feature, ok, what in (("conversations with tool definitions", fmt.renders_tools, "tool definitions (tools)"),
                              ("assistant messages with tool calls", fmt.renders_tool_calls, "tool calls")):
        if features[feature] and not ok:
            raise UserError(f"{features[feature]} {feature.split(' with ')[0]} carry {what}, which the chat template "
                            f"of {model} does not render: set CHAT_TEMPLATE to a .jinja template of this model "
                            "family that renders tools, or use a model whose template does")
    left_out = features["assistant messages with reasoning" if fmt.drops_inline_reasoning else "_reasoning given apart"]
    if left_out and not fmt.reasoning_field:
        log(f"NOTE: {left_out} assistant messages carry reasoning, which the chat template of {model} does not "
            "render in a finished reply (it reads none of reasoning_content, reasoning, thinking"
            + (", and cuts <think>...</think> out of the content" if fmt.drops_inline_reasoning else "")
            + "): it is left out, and only the replies are trained. Set CHAT_TEMPLATE to a template that renders "
            "reasoning to train it")


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
        if all(probs.get(t, 1.0) >= UNLEARNED for t in chosen):  # asked for (True), but the model knows them
            log(f"WARNING: train_control_tokens=True, but the rows of {found} cannot be trained here (the LM head "
                "is not tied to the embeddings); the model already gives them their place, so LoRA alone is trained")
            return {}
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
    """On the CPU, score the LM head in small tiles, and only where a token is trained.

    TRL's fused LM head never materialises the (tokens x vocabulary) logits; on a GPU its Triton kernel works on
    tiles of 4096 tokens x 32768 words. Its CPU path uses the same tiles through torch ops, which allocate several
    float32 copies of a tile (512 MiB each): about 4 GiB of transient memory per step for a 262k vocabulary, most
    of the quick start's peak. 1024 x 8192 tiles compute the same sums in the same order of words, with 1/16 of
    the memory (measured: peak 8.6 -> 4.9 GiB for a 4 x 1024-token fp32 step of Gemma 3 270M, slightly faster).

    Off Triton devices TRL also scores every position, padding and prompt included, so that the tile shapes stay
    fixed for compilers (Neuron). Nothing compiles on the CPU, and the head is over half of a step there (262k
    words against a 270M model), so it scores the trained positions only, as it does on a GPU: the same loss,
    about a fifth less head work on the quick start's data (79% of its tokens are trained). The settings are TRL's
    own module names; a TRL without them keeps its defaults."""
    try:
        import trl.kernels.chunked_logprob as kernel
        import trl.trainer.utils as trl_utils
    except ImportError:
        return
    if hasattr(kernel, "TOKEN_CHUNK_SIZE") and hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        kernel.TOKEN_CHUNK_SIZE = 1024
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 8192
    if getattr(trl_utils, "_use_triton", None) is kernel._use_triton:  # decides only which positions are scored
        trl_utils._use_triton = lambda device: kernel._use_triton(device) or device.type == "cpu"


def head_with_trained_rows(model):
    """The LM head of a PEFT model whose tied control-token rows are trained, made readable by TRL's fused loss.

    The loss reads lm_head.weight and lm_head.bias. PEFT's wrapper around a tied head serves the weight with the
    trained rows, but answers no bias: the head it wraps has none (tied heads don't)."""
    head = model.get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = getattr(head.token_adapter.base_layer, "bias", None)
    return head


@contextlib.contextmanager
def row_gradients_only(head):
    """While training, the trained control-token rows of a tied LM head get their gradient without the head's.

    TRL's fused loss takes the head's weight as one tensor. With rows trained (TRAIN_CONTROL_TOKENS) that tensor
    needs a gradient, so its backward multiplies every token's logit gradient by the hidden states over the whole
    vocabulary: one more (tokens x vocabulary x hidden) product per step, and a float32 gradient the size of the
    embedding (262k x 640 for Gemma 3, 0.6 GiB; 3.4 GiB for Gemma 2 9B), of which the few trained rows are kept.
    Here the loss sees the weight without a gradient (same values, so the same loss and hidden-state gradient),
    and each trained row k gets its exact gradient from the K columns alone: d log p(y_t) / d z_tk = [y_t = k] - p_tk,
    with p_tk = exp(z_tk - log Z_t) and log Z_t = z_t,y_t - log p(y_t). Measured in bench/cpu_train.py.
    A TRL without this function keeps its own (slower, equal) path."""
    import torch

    try:
        import trl.trainer.utils as trl_utils

        fused = trl_utils._ChunkedLogProbFunction
    except (ImportError, AttributeError):
        yield
        return
    adapter = head.token_adapter
    name = adapter.active_adapters[0]
    delta = adapter.trainable_tokens_delta[name]  # (K x hidden): the trained rows themselves
    index = torch.tensor(adapter.token_indices[name], device=delta.device)

    class RowGradients:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, *rest):
            if not (torch.is_grad_enabled() and weight.requires_grad):
                return fused.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, *rest)
            frozen = weight.detach()
            out = fused.apply(hidden, frozen, bias, targets, temperature, chunk_size, softcap, logit_scale, *rest)
            log_probs = out[0]
            dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(
                hidden.device.type) else hidden.dtype
            h = hidden.detach().float()

            def logits(raw, at):  # as the kernel forms them: rounded to the compute dtype, then scaled and capped
                z = raw.to(dtype).float() + (bias[at].float() if bias is not None else 0.0)
                z = z * logit_scale
                if softcap:
                    z = softcap * torch.tanh(z / softcap)
                return z / temperature

            z_rows = logits(h @ delta.float().t(), index)  # (tokens x K), with a gradient to the rows
            z_target = logits((h * frozen[targets].float()).sum(-1), targets)
            p_rows = torch.exp(z_rows.detach() - (z_target - log_probs.detach()).unsqueeze(-1))
            surrogate = (((targets.unsqueeze(-1) == index).float() - p_rows) * z_rows).sum(-1)
            return (log_probs + (surrogate - surrogate.detach()), *out[1:])  # value unchanged, gradient added

    trl_utils._ChunkedLogProbFunction = RowGradients
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = fused


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


@contextlib.contextmanager
def removed_on_error(run_dir: Path, folder: Path | None):
    """On an error, remove the prepared data, and the run folder if nothing else is in it: a failed start leaves
    nothing behind."""
    try:
        yield
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
        raise


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

    texts = [prompt_text(tokenizer, fmt, for_template(p, fmt), conversation_tools(p)) for p in prompts]
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
    # The LM head gets the last position of each prompt, a strided view of the batch's hidden states. On the CPU,
    # PyTorch multiplies a strided bf16 input by a frozen weight through a slow path that allocated 3.5 GB and
    # took 12 s per batch here (Gemma 3 270M, 13 prompts of up to 1008 tokens), against 0.05 s for a contiguous
    # copy of the same 13 rows.
    contiguous = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        for batch in batches:
            inputs = tokenizer([texts[i] for i in batch], add_special_tokens=False, padding=True,
                               padding_side="left", return_tensors="pt").to(model.device)
            with torch.no_grad():
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                           eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
            for i, row in zip(batch, generated[:, inputs["input_ids"].shape[1]:].tolist()):
                end = next((n for n, t in enumerate(row) if t in stop_ids), None)
                kept = row if end is None else row[:end]
                out[i] = {"text": tokenizer.decode(kept, skip_special_tokens=True).strip(), "tokens": len(kept),
                          "stopped": end is not None}
    finally:
        contiguous.remove()
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
        answer = next(m for m in conversation[last_user + 1:] if m["role"] == "assistant")
        if answer.get("tool_calls"):  # a reply that calls a tool: its stop is a call, not the end of a turn
            continue
        reference = for_template([answer], fmt)[0]["content"] if fmt.reasoning_field else answer["content"]
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
    rows = [{"prompt": prompt[-1]["content"], "reference": reference, "before": before, "after": after}
            for prompt, reference, before, after in zip(prompts, references, replies["before"], replies["after"])]
    (run_dir / "replies.json").write_text(json.dumps({**report, "replies": rows}, indent=1) + "\n")
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

    # --- data: read and validate one conversation at a time, before anything heavy. The main process keeps what
    # it validated in Arrow files in the run folder (memory-mapped: memory does not grow with the data); the
    # others validate alike, for the same errors, and later load the main process's prepared examples.
    run_name = cfg["RUN_NAME"] or (time.strftime("%Y%m%d-%H%M%S") if not cfg["RESUME"] else "")
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        run_name = broadcast_object_list([run_name])[0]
    run_dir = new_run_dir(cfg["OUTPUT_DIR"], run_name, cfg["RESUME"])
    folder = run_dir / ".prepared" if state.is_main_process else None  # removed when the run ends
    with removed_on_error(run_dir, folder):
        train = validate_data(cfg["DATA_PATH"], cfg["STRICT"], folder, "train", log, cfg["ROLE_MAP"])
    if cfg["EVAL_DATA_PATH"]:
        with removed_on_error(run_dir, folder):
            evaluation = validate_data(cfg["EVAL_DATA_PATH"], cfg["STRICT"], folder, "eval", log, cfg["ROLE_MAP"])
    elif cfg["EVAL_FRACTION"] > 0 and train.kept:
        order = list(range(train.kept))
        random.Random(cfg["SEED"]).shuffle(order)
        held = set(order[:max(1, round(cfg["EVAL_FRACTION"] * train.kept))])
        split = {part: [i for i in range(train.kept) if (i in held) == (part == "eval")] for part in ("train", "eval")}
        evaluation = Data(None, train.found, len(held), len(held), Counter(), Counter())
        if train.conversations is not None:
            evaluation.conversations = train.conversations.select(split["eval"])
            train.conversations = train.conversations.select(split["train"])
        train.kept -= len(held)
    else:
        evaluation = None
    if not train.kept:
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
    features = train.features + (evaluation.features if evaluation else Counter())
    check_template_support(fmt, features, cfg, log)

    # --- tokenize and mask (once, on the main process; the others load its result)
    with removed_on_error(run_dir, folder):
        train_set, eval_set, cut_stats = prepare_once(state, run_dir, train, evaluation, tokenizer, fmt, cfg)
    counts = token_counts(train_set)
    held_out = evaluation.kept if evaluation and not cfg["EVAL_DATA_PATH"] else 0
    print_summary(log, train.found, fmt, train.problems, train.read, train.kept, counts, cut_stats, "train", held_out)
    if eval_set is not None:
        print_summary(log, evaluation.found, fmt, evaluation.problems, evaluation.read, evaluation.kept,
                      token_counts(eval_set), Counter(), "eval")
    if counts["trained_tokens"] == 0:
        raise UserError("no token is left to train on: every assistant reply was dropped or marked train=false")
    for name, n in features.items():
        if not name.startswith("_"):
            log(f"  {name}: {n}")
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for k in range(min(cfg["PREVIEW_EXAMPLES"], len(train_set))):
        row = train_set[k]
        conversation = json.loads(train.conversations[row["conversation_index"]]["conversation"]) \
            if train.conversations is not None else None
        kinds = token_kinds(tokenizer, fmt, conversation, row["input_ids"], cfg) if conversation else None
        log(f"--- example {k} ({len(row['input_ids'])} tokens; {legend(kinds, color)})")
        log(render_mask(tokenizer, row["input_ids"], row["labels"], color, kinds))
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
            shutil.rmtree(run_dir / ".prepared", ignore_errors=True)
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
    # peft asks the model a deprecated question while wrapping it; the warning is noise to a user
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
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
    head = head_with_trained_rows(trainer.model) if token_rows else None
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
        with row_gradients_only(head) if token_rows else contextlib.nullcontext():
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
        if evaluation and evaluation.conversations is not None and cfg["REPLY_PROMPTS"] > 0 and not sharded:
            held = (json.loads(row["conversation"]) for row in evaluation.conversations)  # read as needed
            reply_report(trainer.model, tokenizer, fmt, held, cfg, run_dir, log)
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
