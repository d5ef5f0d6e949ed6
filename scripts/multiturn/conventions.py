"""Reading one message as its author's convention means it: our own fields, OpenAI's fine-tuning chat format
(content parts, weight, refusal, name), ShareGPT, and other trainers' per-message flags (Axolotl, torchtune,
LLaMA-Factory). Every key of a message is either read or counted as not read, for the summary."""

import json
from collections import Counter

from .data import ROLE_ALIASES
from .errors import UserError

# Per-message flags that say whether an assistant message is trained: key -> (value that trains, value that keeps
# the message as context only, whose convention). Only these two values have a meaning the masks can honour.
TRAIN_FLAGS = {
    "train": (True, False, "this project"),
    "training": (True, False, "Axolotl"),
    "weight": (1, 0, "OpenAI, Axolotl"),
    "loss_weight": (1, 0, "LLaMA-Factory"),
    "masked": (False, True, "torchtune"),
}
TEXT_PARTS = ("text", "input_text", "output_text")  # a content part's "type" for text (OpenAI chat, its responses API)
MEDIA_PARTS = {"image_url": "image", "image": "image", "input_image": "image", "input_audio": "audio",
               "audio": "audio", "audio_url": "audio", "file": "file", "input_file": "file", "video": "video",
               "video_url": "video"}
PART_SEPARATOR = "\n"  # text parts joined as vLLM joins them for a template that takes string content
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
# every key read from a message (tool_call_id on tool messages only, refusal where there is no content)
READ_KEYS = {"role", "content", "from", "value", "tool_calls", "name", "tools", "refusal", "tool_call_id",
             *REASONING_KEYS, *TRAIN_FLAGS}


class UnknownRole(UserError):
    """A message of a role that neither the built-in names nor ROLE_MAP know (reported together: note_roles)."""


class LeftOut(Exception):
    """A conversation that a setting leaves out, counted under `kind` (ROLE_MAP maps its role to None;
    NON_TEXT_CONVERSATIONS="leave_out" and it holds an image part)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class MediaPart(UserError):
    """A content part that is not text (an image, audio, a file): text-only fine-tuning cannot train it."""

    def __init__(self, where: str, part_type: str):
        self.kind = MEDIA_PARTS[part_type]
        super().__init__(f"{where}: {self.kind} part ({part_type!r}): text-only fine-tuning cannot read it; "
                         "leave such conversations out with --non_text_conversations=leave_out")


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


def is_parts(content) -> bool:
    """Content given as a list of typed parts ([{"type": "text", "text": ...}, ...])."""
    return isinstance(content, list) and bool(content) and all(isinstance(p, dict) and "type" in p for p in content)


def parts_text(parts: list, where: str, non_text: str) -> str:
    """The text of a message given as content parts: its text parts in order, joined by PART_SEPARATOR. A part
    that is not text raises MediaPart (or, with non_text="leave_out", leaves the conversation out)."""
    texts = []
    for k, part in enumerate(parts):
        kind = part.get("type")
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in MEDIA_PARTS:
            if non_text == "leave_out":
                raise LeftOut(f"conversations left out: {MEDIA_PARTS[kind]} part (NON_TEXT_CONVERSATIONS)")
            raise MediaPart(where, kind)
        else:
            raise UserError(f"{where}: content part {k} is neither text ({{\"type\": \"text\", \"text\": ...}}) nor "
                            f"a known media part; found {json.dumps(part)[:80]}")
    return PART_SEPARATOR.join(texts)


def train_flag(message: dict, role: str, where: str, read: Counter, unheeded: list) -> bool:
    """Whether the data asks for this message to be trained, from whichever flags it carries (TRAIN_FLAGS), each
    reading counted in `read`. Flags that disagree, or a value with no meaning here, stop with the place. A flag
    that asks to train a message that is not the assistant's goes to `unheeded` (such text is never trained)."""
    wishes = {}
    for key, (yes, no, whose) in TRAIN_FLAGS.items():
        if key not in message:
            continue
        value = message[key]
        if isinstance(yes, bool) and not isinstance(value, bool) or not isinstance(yes, bool) and (
                isinstance(value, bool) or value not in (yes, no)):
            allowed = "true or false" if isinstance(yes, bool) else f"{yes} (trained) or {no} (context only)"
            raise UserError(f"{where}: {key!r} must be {allowed} ({whose}), found {value!r}")
        wishes[key] = value == yes
    if len(set(wishes.values())) > 1:
        raise UserError(f"{where}: the message's flags disagree on training it: "
                        + ", ".join(f"{k!r}: {json.dumps(message[k])}" for k in wishes))
    wish = next(iter(wishes.values()), True)
    if role == "assistant":
        for key in wishes:
            if not wish:
                read[f"replies kept as context: {key!r}: {json.dumps(message[key])}"] += 1
        return wish
    if wishes and wish:
        unheeded.append(f"{role} message marked for training ({', '.join(map(repr, wishes))}): never trained here")
    return wish


def validate_message(message, where: str, role_map: dict | None = None, mapped: dict | None = None,
                     read: Counter | None = None, non_text: str = "error") -> dict:
    """Check one raw message and return it in our form: {"role", "content", "train"}, and where given "reasoning"
    (from reasoning_content, reasoning or thinking), "tool_calls", "tool_call_id", "name", and on the first
    message "tools". Raise UserError naming the place. Missing fields may be null (Parquet and datasets rows
    carry every field of every message). `read` counts how the message's conventions were read; what the data
    asks that is not done (keys nothing reads, a user message marked for training) is listed under "_unheeded",
    for the caller to count as soft problems."""
    if not isinstance(message, dict):
        raise UserError(f"{where}: expected an object with 'role' and 'content', found {type(message).__name__}")
    message = {k: v for k, v in message.items() if v is not None}
    role_map, mapped = role_map or {}, {} if mapped is None else mapped
    read = Counter() if read is None else read
    out, unheeded = {}, []
    for key in message.pop("_record_keys", ()):  # the record's keys that nothing reads (data.record_messages)
        unheeded.append(f"record keys not read: {key!r}")
    if "from" in message and "role" not in message:  # ShareGPT
        if "value" not in message:
            raise UserError(f"{where}: missing 'value'; each ShareGPT message needs 'from' and 'value'")
        role, content = message["from"], message["value"]
        if role == "function_call":  # LLaMA-Factory: the value is the call(s) as JSON
            out["tool_calls"], content = validate_tool_calls(content, where), ""
    elif "role" in message and "content" not in message and isinstance(message.get("refusal"), str):
        role, content = message["role"], message["refusal"]  # OpenAI: what the assistant said is its refusal
        read["refusals trained as the reply"] += 1
    elif "role" not in message or ("content" not in message and "tool_calls" not in message):
        missing = [k for k in ("role", "content") if k not in message]
        raise UserError(f"{where}: missing {' and '.join(repr(k) for k in missing)}; each message needs both")
    else:
        role, content = message["role"], message.get("content", "")
    if isinstance(role, str) and role in role_map:
        if role_map[role] is None:
            raise LeftOut(f"conversations left out: role {role!r} (ROLE_MAP)")
        mapped[role] = role_map[role]
        role = role_map[role]
    if not isinstance(role, str) or role not in ROLE_ALIASES:
        raise UnknownRole(f"{where}: unknown role {role!r}; expected 'user', 'assistant', 'system' or 'tool' "
                          "(or set ROLE_MAP)")
    role = ROLE_ALIASES[role]
    if is_parts(content):
        content = parts_text(content, where, non_text)
        read["messages given as content parts (text joined by a newline)"] += 1
    if role == "tool" and isinstance(content, (dict, list)):  # a structured result: the model reads it as JSON
        content = json.dumps(content, ensure_ascii=False)
    if not isinstance(content, str):
        raise UserError(f"{where}: content must be a string or a list of content parts, found "
                          f"{type(content).__name__}")
    out.update(role=role, content=content, train=train_flag(message, role, where, read, unheeded))
    if message.get("tool_calls") not in (None, []):
        if role != "assistant":
            raise UserError(f"{where}: only an assistant message can carry tool_calls (this one is {role!r})")
        out["tool_calls"] = validate_tool_calls(message["tool_calls"], where)
    reasoning = next((message[k] for k in REASONING_KEYS if message.get(k)), None)
    if reasoning is not None:
        if role != "assistant" or not isinstance(reasoning, str):
            raise UserError(f"{where}: reasoning must be a string on an assistant message")
        out["reasoning"] = reasoning
    if "name" in message:  # the tool's name on a result; a speaker's name elsewhere (templates that render it)
        out["name"] = str(message["name"])
    if role == "tool" and "tool_call_id" in message:
        out["tool_call_id"] = str(message["tool_call_id"])
    if "tools" in message:
        out["tools"] = validate_tools(message["tools"], where)
    unread = set(message) - READ_KEYS | ({"tool_call_id"} & set(message) if role != "tool" else set())
    if "refusal" in message and "content" in message:  # a refusal beside content: the content is the reply
        unread.add("refusal")
    unheeded += [f"message keys not read: {key!r}" for key in sorted(unread)]
    if unheeded:
        out["_unheeded"] = unheeded
    return out
