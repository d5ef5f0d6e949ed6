"""Reading data files: JSON, JSONL, Parquet, CSV, a saved dataset or a hub dataset, one record at a time, and the
messages of each record (plain lists, {"messages": [...]}, ShareGPT's "conversations"/"from"/"value")."""

import contextlib
import itertools
import json
from pathlib import Path

from .errors import UserError


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
    first message's "tools" (see conversation_tools), the system prompt as a leading system message. The record's
    other keys are named to the first message as "_record_keys": nothing reads them, and the summary says so."""
    if key is None:
        messages = record
    elif isinstance(record, dict) and key in record:
        messages = record[key]
    else:
        raise UserError(f"{where}: expected an object with '{key}' like conversation 0")
    if not isinstance(messages, list):
        raise UserError(f"{where}: expected a list of messages, found {type(messages).__name__}")
    if isinstance(record, dict):
        unread = sorted(k for k, v in record.items() if v is not None and k not in (key, "tools", "system"))
        if unread and messages and isinstance(messages[0], dict):  # counted with the first message's own keys
            messages = [dict(messages[0], _record_keys=unread)] + messages[1:]
        system = record.get("system")
        if isinstance(system, str) and system.strip() and not (
                messages and isinstance(messages[0], dict) and messages[0].get("role", messages[0].get("from")) == "system"):
            messages = [{"role": "system", "content": system}] + messages
        if record.get("tools") not in (None, "", []):
            if not messages or not isinstance(messages[0], dict):
                raise UserError(f"{where}: has tools but no messages")
            messages = [dict(messages[0], tools=record["tools"])] + messages[1:]
    return messages
