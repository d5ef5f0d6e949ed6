"""Probe conversations: messages whose contents are placeholders (sentinels: private-use characters that no
template touches), their shapes, and the template's rendering of them. chat_format reads the examples of a
conversation off such renderings, and template_probes reads what a template does."""

import json
import re

from .errors import UserError

SENTINEL = "\ue000{}\ue001"  # private-use characters: never in real text, never touched by a template
SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
REASONING = 1_000_000  # sentinel numbers from here on stand for a message's reasoning: message n - REASONING
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")  # where templates read an assistant's reasoning
TEMPLATE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", *REASONING_FIELDS}


def render(tokenizer, messages: list[dict], kwargs: dict, add_generation_prompt: bool = False) -> str:
    """The template's text for these messages (in the template's own fields, see template_message). A template
    error becomes one UserError quoting its message."""
    try:
        return tokenizer.apply_chat_template(
            [{k: v for k, v in m.items() if k in TEMPLATE_KEYS} for m in messages], tokenize=False,
            add_generation_prompt=add_generation_prompt, **kwargs)
    except UserError:
        raise
    except Exception as error:  # jinja2's TemplateError from raise_exception, or a TypeError on a missing variable
        message = str(error).strip() or type(error).__name__
        raise UserError(
            f"the chat template cannot render a conversation of roles {[m['role'] for m in messages]}: {message}. "
            "It may need inputs plain chat data does not give (tools, documents): pass them with "
            "CHAT_TEMPLATE_KWARGS, or set CHAT_TEMPLATE to a .jinja template that renders this data") from None


def control_token_ids(tokenizer) -> frozenset:
    """Special tokens: the template's markers (<end_of_turn>, <|im_end|>, </s>, ...). Read once per tokenizer:
    reading its added tokens takes milliseconds, and agent data asks for them for almost every conversation."""
    key = (id(tokenizer), len(tokenizer))
    if key not in _control_ids:
        _control_ids[key] = frozenset(tokenizer.all_special_ids) | frozenset(
            i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return _control_ids[key]


_control_ids: dict = {}


def edges(text: str) -> tuple[str, str]:
    """The whitespace that text starts and ends with."""
    start, end = len(text) - len(text.lstrip()), len(text.rstrip())
    return (text[:start], text[end:]) if start < end else (text, "")


def shape(m: dict) -> tuple:
    """What a message is apart from its free text: the key under which its renderings are cached.

    A message's content and reasoning are free text (replaced by sentinels in probe renderings); its tool calls,
    tool_call_id and name are rendered by the template as they are, so they belong to the shape. The whitespace
    around the content and the reasoning does too: templates strip it, each in its own way and sometimes only in
    some turns (Qwen3's content.lstrip('\n') in the final reply, reasoning_content.strip('\n')), so the probe
    renders it and the example keeps whatever the template keeps, as template text."""
    role, calls = m["role"], m.get("tool_calls")
    content = m.get("content") or ""
    content_sentinel = not (role == "assistant" and calls and not content)
    reasoning = m.get("reasoning") or ""
    extra = tuple((k, m[k]) for k in ("tool_call_id", "name") if m.get(k) is not None)
    return (role, content_sentinel, edges(reasoning) if reasoning.strip() else None,
            json.dumps(calls, sort_keys=False) if calls else None, extra, edges(content) if content_sentinel else ("", ""))


def template_message(m_shape: tuple, fmt, content: str, reasoning: str = "") -> dict:
    """A message as the template reads it: its content (the text inside the whitespace the shape holds), reasoning
    under the field the template renders (reasoning_content, reasoning or thinking), tool calls, tool_call_id and
    name. `fmt` (a ChatFormat, or None in the first probes) says which fields the template reads."""
    role, content_sentinel, edges, calls, extra, content_edges = m_shape
    out = {"role": role, "content": content_edges[0] + content + content_edges[1]}
    if not content_sentinel:  # a call without text: in the form the template renders calls for
        empty = fmt.call_content if fmt else "empty"
        out["content"] = {"empty": "", "none": None}.get(empty)
        if empty == "absent":
            del out["content"]
    field = fmt.reasoning_field if fmt else ""
    if edges is not None and field:
        out[field] = edges[0] + reasoning + edges[1]
    if calls:
        out["tool_calls"] = json.loads(calls)
        if fmt and fmt.arguments_as_text:  # DeepSeek's templates concatenate the arguments into their text
            for call in out["tool_calls"]:
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    out.update(extra)
    return out


def sentinel_messages(shapes, fmt=None, start: int = 0) -> list[dict]:
    return [template_message(sh, fmt, SENTINEL.format(start + i), SENTINEL.format(REASONING + start + i))
            for i, sh in enumerate(shapes)]


def plain_shapes(roles) -> tuple:
    return tuple((r, True, None, None, (), ("", "")) for r in roles)


def span(text: str, index: int):
    """(start, end) of sentinel `index` in text; None if the template did not render it."""
    found = [m.span() for m in SENTINEL_RE.finditer(text) if int(m.group(1)) == index]
    if len(found) > 1:
        raise UserError(f"the chat template renders message {index % REASONING} twice; it cannot be masked reliably")
    return found[0] if found else None


def core(text: str) -> str:
    """A message's text inside its surrounding whitespace (which the shape holds)."""
    lead, trail = edges(text)
    return text[len(lead):len(text) - len(trail)]
