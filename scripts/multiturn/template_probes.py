"""Reading a chat template: what it does, found by rendering probe conversations whose contents are
placeholders (chat_format's sentinels), with no table of model families. The result, a ChatFormat, is all that
chat_format needs to render and mask any conversation."""

import json
from pathlib import Path

from .chat_format import ChatFormat, plan_examples, reply_turn
from .sentinels import (
    REASONING, REASONING_FIELDS, SENTINEL, SENTINEL_RE, control_token_ids, plain_shapes, render, sentinel_messages, span,
)
from .errors import UserError


def load_chat_template(tokenizer, path: str) -> None:
    """CHAT_TEMPLATE: "" keeps the tokenizer's own; a path to a .jinja file replaces it (saved with the tokenizer)."""
    if path:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"chat_template={path!r}: no such file; give the path of a .jinja chat template or ''")
        tokenizer.chat_template = file.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template (a base model?): set CHAT_TEMPLATE to a .jinja file, "
                        "e.g. --chat_template=path/to/template.jinja")


def detect_chat_format(tokenizer, kwargs: dict | None = None, stop_ids=()) -> ChatFormat:
    """Read off what the template does by rendering probe conversations (no family table, no header probe).

    stop_ids: the model's own stop tokens (its generation config's eos ids); the tokenizer's eos is added."""
    kwargs = dict(kwargs or {})
    stop_ids = tuple(sorted({*stop_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])}))
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template (a base model?): set CHAT_TEMPLATE to a .jinja file")
    probe = plain_shapes(["user", "assistant", "user", "assistant"])
    base = render(tokenizer, sentinel_messages(probe), kwargs)  # raises one clear error if even plain chat fails
    if [int(g) for g in SENTINEL_RE.findall(base)] != [0, 1, 2, 3]:
        raise UserError("the chat template does not render each message's content once and in order; "
                        "it cannot be masked reliably")
    system = _system_handling(tokenizer, kwargs)
    strip_roles = set()
    padded = " \n" + SENTINEL.format(9) + " \n"
    for role in ("system", "user", "assistant"):
        if role == "system" and system == "folded":
            continue
        messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u"}]  # as at inference: ending with a user turn
        if role == "system":
            messages.insert(0, {"role": "system", "content": padded})
        else:
            messages[0 if role == "user" else 1]["content"] = padded
        if padded not in render(tokenizer, messages, kwargs, add_generation_prompt=True):
            strip_roles.add(role)
    control = control_token_ids(tokenizer)
    draft = ChatFormat(json.dumps(kwargs, sort_keys=True), system, frozenset(strip_roles), "", (), True, "", "", "",
                       stop_ids)
    fmt_key = (id(tokenizer), tokenizer.chat_template, draft.kwargs, stop_ids, "", "empty", False, "")
    roles = plain_shapes(("system",) * (system != "folded") + ("user", "assistant", "user", "assistant"))
    last = len(roles) - 1
    turn = reply_turn(tokenizer, fmt_key, roles, last, kwargs, control, frozenset(stop_ids))
    closing = turn.completion[span(turn.completion, last)[1]:]  # what follows the content in the completion
    preserving = len(plan_examples(tokenizer, draft, roles, (last - 2, last))[0]) == 1
    default_system, addition = _system_texts(tokenizer, kwargs, system)
    tools = _tool_support(tokenizer, kwargs)
    return ChatFormat(draft.kwargs, system, frozenset(strip_roles), closing,
                      tuple(tokenizer(closing, add_special_tokens=False)["input_ids"]), preserving, turn.extra,
                      default_system, addition, stop_ids, _reasoning_field(tokenizer, kwargs),
                      *tools[:3], _drops_inline_reasoning(tokenizer, kwargs), *tools[3:],
                      _renders_names(tokenizer, kwargs))


def _renders_names(tokenizer, kwargs: dict) -> bool:
    """Whether the template shows a user message's "name" (OpenAI's speaker name) anywhere in its rendering."""
    name = "probe_speaker_name"
    try:
        return name in render(tokenizer, [{"role": "user", "content": "u", "name": name}], kwargs)
    except UserError:
        return False


def _drops_inline_reasoning(tokenizer, kwargs: dict) -> bool:
    """Whether the template cuts reasoning written inline (<think>...</think> opening the content) out of a
    finished reply, even the last one (DeepSeek-R1's distilled models): it never renders it to train."""
    inline = "<think>\n" + SENTINEL.format(5) + "\n</think>\n\n" + SENTINEL.format(6)
    try:
        text = render(tokenizer, [{"role": "user", "content": "u"}, {"role": "assistant", "content": inline}], kwargs)
    except UserError:
        return False
    return SENTINEL.format(5) not in text and SENTINEL.format(6) in text


def _reasoning_field(tokenizer, kwargs: dict) -> str:
    """The field the template renders an assistant's reasoning from, on the final turn: "" if none."""
    for field in REASONING_FIELDS:
        probe = [{"role": "user", "content": "u"},
                 {"role": "assistant", "content": "a", field: SENTINEL.format(REASONING)}]
        try:
            if SENTINEL.format(REASONING) in render(tokenizer, probe, kwargs):
                return field
        except UserError:
            continue
    return ""


PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool_name", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}


def _tool_support(tokenizer, kwargs: dict) -> tuple[bool, bool, bool, str, bool]:
    """(renders tool definitions, renders tool calls, writes tool results as JSON strings, call_content,
    arguments_as_text), read off probes. A call without text is tried with content "" (most templates), None
    (DeepSeek's) and no content; its arguments as an object (most), then as a JSON string (DeepSeek's)."""
    user = [{"role": "user", "content": "u"}]
    try:
        tools = "probe_tool_name" in render(tokenizer, user, dict(kwargs, tools=[PROBE_TOOL]))
    except UserError:
        tools = False
    result = SENTINEL.format(7) + '"\n'
    reply = {"role": "tool", "content": result, "tool_call_id": "abcDEF123", "name": "probe_call_name"}
    for as_text in (False, True):
        arguments = '{"x": 1}' if as_text else {"x": 1}
        calls = [{"type": "function", "id": "abcDEF123",
                  "function": {"name": "probe_call_name", "arguments": arguments}}]
        for content in ("empty", "none", "absent"):
            call = {"role": "assistant", "tool_calls": calls,
                    **({"content": {"empty": "", "none": None}[content]} if content != "absent" else {})}
            try:
                text = render(tokenizer, user + [call, reply, {"role": "assistant", "content": "a"}], kwargs)
            except UserError:
                continue
            if "probe_call_name" in text:
                as_json = result not in text and json.dumps(result, ensure_ascii=False)[1:-1] in text
                return tools, True, as_json, content, as_text
    return tools, False, False, "empty", False


def _system_handling(tokenizer, kwargs: dict) -> str:
    # as at inference: the conversation ends with a user turn (Mistral v0.3 and Nemo drop the system prompt of a
    # conversation that ends with a reply: it belongs to the final user turn)
    s = sentinel_messages(plain_shapes(["system", "user", "assistant", "user"]))
    try:
        text = tokenizer.apply_chat_template(s, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:  # "System role not supported" (Gemma), "Only user and assistant roles" (Mistral v0.1)
        return "folded"
    order = [int(g) for g in SENTINEL_RE.findall(text)]
    if 0 not in order:  # the template silently drops it (Phi-3 mini): fold it rather than lose it
        return "folded"
    if order.index(0) > order.index(1):
        return "final user turn"
    if order.count(0) != 1:
        raise UserError("the chat template renders the system message more than once; it cannot be masked reliably")
    return "native"


def _system_texts(tokenizer, kwargs: dict, system: str) -> tuple[str, str]:
    """(text written when no system message is given, prose added to every system turn), for the summary."""
    if system == "folded":
        return "", ""
    s = sentinel_messages(plain_shapes(["system", "user"]))
    without = render(tokenizer, s[1:], kwargs)
    with_system = render(tokenizer, s, kwargs)
    before = without[:without.index(s[1]["content"])]
    sys_start = with_system.index(s[0]["content"])
    sys_end = sys_start + len(s[0]["content"])
    around = with_system[:with_system.index(s[1]["content"])]
    head = 0
    while head < min(len(before), sys_start) and before[head] == around[head]:
        head += 1
    tail = 0
    while tail < min(len(before) - head, len(around) - sys_end) and before[-1 - tail] == around[-1 - tail]:
        tail += 1
    default = before[head:len(before) - tail].strip()
    control = control_token_ids(tokenizer)
    lead = around[:sys_start]
    encoded = tokenizer(lead, add_special_tokens=False, return_offsets_mapping=True)
    after_marker = max((end for t, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"]) if t in control),
                       default=0)
    addition = lead[after_marker:].strip()
    if len(addition.split()) < 5 and "\n" not in addition:  # a role header ("system", "GPT4 Correct System:")
        addition = ""
    return default, addition


def describe(fmt: ChatFormat) -> list[str]:
    """What the template does, in a few lines for the run's summary."""
    lines = []
    system = {"native": "given to the template as the system role",
              "final user turn": "placed by the template on the final user turn only",
              "folded": "folded into the first user turn (the template has no system role)"}[fmt.system]
    lines.append(f"system messages: {system}")
    if fmt.default_system:
        lines.append(f"without a system message the template writes its own: {_short(fmt.default_system)}")
    if fmt.system_addition:
        lines.append(f"the template adds to every system turn: {_short(fmt.system_addition)}")
    lines.append(f"trained closing of each reply: {fmt.closing!r}")
    if fmt.prefix_preserving:
        lines.append("rendering: prefix-preserving (one example per conversation trains every reply in context)")
    else:
        lines.append("rendering: history differs from the prompt at inference, so a conversation becomes several "
                     "examples, each reply trained in the context the model will see (cost in the table below)")
    rendered = [what for what, ok in (("tool definitions", fmt.renders_tools), ("tool calls", fmt.renders_tool_calls))
                if ok]
    lines.append(f"tools: renders {' and '.join(rendered)}" if rendered else "tools: renders none (plain chat only)")
    if fmt.reasoning_field:
        lines.append(f"reasoning: read from each assistant message's {fmt.reasoning_field!r}")
    elif fmt.drops_inline_reasoning:
        lines.append("reasoning: cut out of every reply (<think>...</think>), so never trained")
    if fmt.generation_extra:
        lines.append(f"NOTE: the generation prompt adds {fmt.generation_extra!r}, which the template's rendering of "
                     "a finished reply does not have (the data holds no reasoning for it): replies are trained as "
                     "the template renders them, right after the assistant header")
    return lines


def _short(text: str, limit: int = 100) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 4] + "...'"
