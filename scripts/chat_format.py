"""How a conversation is rendered with the model's own chat template: the one place that decides it for
training (multi_turn_finetuning.py), the samples written after training and chat.py, so that they can never
drift apart.

Nothing here knows a model family. Everything is read off the template by rendering conversations whose
contents are placeholders (private-use sentinels that no template touches):

- how a system message is handled: natively, placed on the final user turn (Mistral v0.3, Nemo), or not
  at all, in which case its text is folded into the first user turn, separated by a blank line;
- for every assistant reply, the prompt the model sees at inference (the conversation so far rendered with
  add_generation_prompt=True) and what it must generate after it: any template text before the reply's
  content (a think block the template writes), the content, and its closing: the run of control tokens that
  ends the turn (never the template's whitespace after it);
- which replies one rendering of a conversation can train in their inference context. Prefix-preserving
  templates train every reply in one example; templates that render history differently from the prompt
  (Qwen3 drops think blocks of earlier turns, Mistral v0.3 moves the system prompt to the final user turn,
  gpt-oss closes the final turn with <|return|>) get the fewest examples that keep every context exact.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

_SENTINEL = "\ue000{}\ue001"  # private-use characters: never in real text, never touched by a template
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


class UserError(Exception):
    """A problem the user can fix (bad data, bad setting, a template that cannot render the data).
    The scripts print it as one ERROR line, without a traceback."""


@dataclass(frozen=True)
class ChatFormat:
    """What the tokenizer's chat template does, read off probe renderings (see detect_chat_format)."""

    kwargs: str  # CHAT_TEMPLATE_KWARGS as JSON (hashable, for the caches), passed to every rendering
    system: str  # "native", "final user turn" (the template moves it there) or "folded" (into the first user turn)
    strip_roles: frozenset  # roles whose content the template strips of surrounding whitespace
    closing: str  # the trained closing of a reply in the probe, e.g. "<end_of_turn>"
    closing_ids: tuple  # its token ids; the last one is the stop token saved in generation_config.json
    prefix_preserving: bool  # one rendering of a multi-turn probe trains every reply in its inference context
    generation_extra: str  # text add_generation_prompt adds that a rendered reply does not have (R1: "<think>\n")
    default_system: str  # text the template writes when no system message is given (Qwen2.5's "You are Qwen...")
    system_addition: str  # prose the template adds to every system turn (Llama 3.1's date header)
    stop_ids: tuple = ()  # the model's own stop tokens (tokenizer eos, generation config eos)

    @property
    def template_kwargs(self) -> dict:
        return json.loads(self.kwargs)


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


def render(tokenizer, messages: list[dict], kwargs: dict, add_generation_prompt: bool = False) -> str:
    """The template's text for these messages. A template error becomes one UserError quoting its message."""
    try:
        return tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages], tokenize=False,
            add_generation_prompt=add_generation_prompt, **kwargs)
    except UserError:
        raise
    except Exception as error:  # jinja2's TemplateError from raise_exception, or a TypeError on a missing variable
        message = str(error).strip() or type(error).__name__
        raise UserError(
            f"the chat template cannot render a conversation of roles {[m['role'] for m in messages]}: {message}. "
            "It may need inputs plain chat data does not give (tools, documents): pass them with "
            "CHAT_TEMPLATE_KWARGS, or set CHAT_TEMPLATE to a .jinja template that renders plain chat") from None


def control_token_ids(tokenizer) -> frozenset:
    """Special tokens: the template's markers (<end_of_turn>, <|im_end|>, </s>, ...)."""
    return frozenset(tokenizer.all_special_ids) | frozenset(
        i for i, token in tokenizer.added_tokens_decoder.items() if token.special)


def _sentinels(roles, start: int = 0) -> list[dict]:
    return [{"role": r, "content": _SENTINEL.format(start + i)} for i, r in enumerate(roles)]


def _span(text: str, index: int):
    """(start, end) of sentinel `index` in text; None if the template did not render that message."""
    found = [m.span() for m in _SENTINEL_RE.finditer(text) if int(m.group(1)) == index]
    if len(found) > 1:
        raise UserError(f"the chat template renders message {index} twice; it cannot be masked reliably")
    return found[0] if found else None


def _closing(tokenizer, tail: str, control: frozenset, stops: frozenset) -> str | None:
    """The start of `tail` through its first run of control tokens, or None if it has no control token.

    Any text before the first control token is kept (Llama 2's " </s>", DeepSeek Coder's "\n<|EOT|>"): the model
    generates it. The run stops at the template's text after it (Gemma's "\n"), and after the last of the model's
    own stop tokens in it (where a template always appends the next header, as Command R7B's tool-use template
    does): generation ends there."""
    if not tail:
        return None
    encoded = tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    first = next((k for k, t in enumerate(ids) if t in control), None)
    if first is None:
        return None
    last = first
    while last + 1 < len(ids) and ids[last + 1] in control:
        last += 1
    last = max((k for k in range(first, last + 1) if ids[k] in stops), default=last)
    return tail[:offsets[last][1]]


@dataclass(frozen=True)
class _Turn:
    """One assistant reply of a role sequence, in sentinel space."""

    context: str  # what the model sees before it generates the reply: the prompt at inference
    completion: str  # what it generates: template text before the content, the content, the closing
    full: str  # the example text that ends with this reply: context + completion + the template's text after it
    whole: bool  # full is the template's rendering through this reply (after drop/appended): one render checks it
    drop: int  # characters at the end of that rendering that the example leaves out
    appended: str  # the closing the example adds where the rendering closes nothing (Qwen1.5)
    extra: str  # generation-prompt text that the rendering of the finished reply lacks (R1's "<think>\n")


_turn_cache: dict = {}
_plan_cache: dict = {}


def _turn(tokenizer, fmt_key, roles: tuple, i: int, kwargs: dict, control: frozenset, stops: frozenset) -> _Turn:
    """Reply i of a conversation with these roles: its inference context and what the model generates after it.

    The context is the prompt rendered with add_generation_prompt=True. The generated text is read off the
    template's rendering of the finished reply: what follows the header the prompt ends with. Where the prompt
    adds text that the finished reply does not have (DeepSeek-R1 opens "<think>\n" that the data has no
    reasoning for), that text is left out of the context and reported."""
    key = (fmt_key, roles[:i + 1])
    if key in _turn_cache:
        return _turn_cache[key]
    sentinels = _sentinels(roles[:i + 1])
    full = render(tokenizer, sentinels, kwargs)
    prompt = render(tokenizer, sentinels[:i], kwargs, add_generation_prompt=True)
    span = _span(full, i)
    if span is None:
        raise UserError(f"the chat template does not render the assistant message of a conversation of roles "
                        f"{list(roles[:i + 1])}; it cannot be trained")
    start, end = span
    # the header: the prompt's text after the last message it shows, and the same stretch of the finished turn
    marks = list(_SENTINEL_RE.finditer(prompt))
    header = prompt[marks[-1].end():] if marks else prompt
    previous = _span(full, int(marks[-1].group(1))) if marks else (0, 0)
    if previous is None or _SENTINEL_RE.search(full[previous[1]:start]):
        raise UserError(f"the chat template renders a conversation of roles {list(roles[:i + 1])} with messages "
                        "out of order; it cannot be masked reliably")
    rendered_header = full[previous[1]:start]
    common = 0
    while common < min(len(header), len(rendered_header)) and header[common] == rendered_header[common]:
        common += 1
    extra = header[common:]
    context = prompt[:len(prompt) - len(extra)]
    closing = _closing(tokenizer, full[end:], control, stops)
    if closing is not None:
        trailing, drop, appended = full[end + len(closing):], 0, ""
    else:  # nothing closes the final reply (Qwen1.5, SOLAR): its closing is what follows it when the chat goes on
        more = render(tokenizer, sentinels + _sentinels(["user"], i + 1), kwargs)
        closing = _closing(tokenizer, more[end:], control, stops) if more[:end] == full[:end] else None
        if closing is None:
            raise UserError(f"the chat template closes an assistant reply with {full[end:]!r}, which holds no "
                            "control token: the model could not learn where its reply ends. Set CHAT_TEMPLATE to a "
                            "template that ends each reply with an end-of-turn token")
        trailing, drop, appended = "", len(full) - end, closing
    completion = rendered_header[common:] + full[start:end] + closing
    text = context + completion + trailing
    turn = _Turn(context=context, completion=completion, full=text,
                 whole=text == full[:len(full) - drop] + appended, drop=drop, appended=appended, extra=extra)
    _turn_cache[key] = turn
    return turn


def _plan(tokenizer, fmt: ChatFormat, roles: tuple, trained: tuple):
    """The examples that train the `trained` replies of a conversation with these roles, in sentinel space.

    Each is (segments, index of its last reply, that reply's _Turn): the example's text through one reply, cut
    into template text and message contents, each marked trained or not. A reply is trained in an example only
    where the text before it is exactly its inference context.
    Greedy from the last reply: the rendering through the last untrained-yet reply trains every earlier one
    it keeps in context, which gives one example for a prefix-preserving template."""
    key = (id(tokenizer), tokenizer.chat_template, fmt, roles, trained)
    if key in _plan_cache:
        return _plan_cache[key]
    control = control_token_ids(tokenizer)
    fmt_key = (id(tokenizer), tokenizer.chat_template, fmt.kwargs, fmt.stop_ids)
    turns = {i: _turn(tokenizer, fmt_key, roles, i, fmt.template_kwargs, control, frozenset(fmt.stop_ids))
             for i in trained}
    todo, examples = set(trained), []
    while todo:
        last = max(todo)
        text = turns[last].full
        covered = sorted(i for i in todo if text.startswith(turns[i].context + turns[i].completion))
        spans = [(len(turns[i].context), len(turns[i].context) + len(turns[i].completion)) for i in covered]
        examples.append((_segments(text, spans), last, turns[last]))
        todo -= set(covered)
    plan = examples[::-1]
    _plan_cache[key] = plan
    return plan


def _segments(text: str, spans: list) -> tuple:
    """Cut a sentinel-space rendering into (template text or message index, trained) segments, in order."""
    cuts = {0, len(text)} | {p for span in spans for p in span}
    for m in _SENTINEL_RE.finditer(text):
        cuts |= {m.start(), m.end()}
    cuts = sorted(cuts)
    out = []
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        trained = any(s <= a and b <= e for s, e in spans)
        m = _SENTINEL_RE.fullmatch(piece)
        out.append((int(m.group(1)) if m else piece, trained))
    return tuple(out)


def fold_system(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """Where the template cannot show a system message, its text goes at the top of the first user turn."""
    if fmt.system != "folded" or not messages or messages[0]["role"] != "system":
        return messages
    system, first, rest = messages[0], messages[1], messages[2:]
    return [dict(first, content=system["content"] + "\n\n" + first["content"])] + rest


@dataclass
class Example:
    """One training example: its pieces, and how it relates to the template's rendering (for the check)."""

    pieces: list  # (text, is_content, trained): the template's own text or a message's content
    last: int  # index (after system folding) of its last reply, a trained one
    turn: _Turn  # that reply in sentinel space: how the example relates to the template's renderings

    @property
    def text(self) -> str:
        return "".join(p[0] for p in self.pieces)


def conversation_examples(tokenizer, fmt: ChatFormat, messages: list[dict]) -> list[Example]:
    """The training examples of one conversation (usually one; see _plan).

    Joined, an example's pieces are the template's rendering of the conversation through its last trained
    reply (check_rendering proves it for the real contents). Replies marked train=False stay as context."""
    messages = fold_system(messages, fmt)
    roles = tuple(m["role"] for m in messages)
    trained = tuple(i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True))
    out = []
    for segments, last, turn in _plan(tokenizer, fmt, roles, trained):
        pieces = []
        for part, is_trained in segments:
            if isinstance(part, int):
                m = messages[part]
                content = m["content"].strip() if m["role"] in fmt.strip_roles else m["content"]
                pieces.append((content, True, is_trained))
            else:
                pieces.append((part, False, is_trained))
        out.append(Example([p for p in pieces if p[0]], last, turn))
    return out


def check_rendering(tokenizer, fmt: ChatFormat, messages: list[dict], example: Example) -> None:
    """An example's pieces must join to exactly the template's own text for the real conversation.

    Usually the example is the rendering through its last reply, and one render proves it. Where the prompt
    differs from the rendered history (a split template), the example is that reply's prompt followed by the
    reply as the finished turn renders it: both renders are checked."""
    messages = fold_system(messages, fmt)
    turn, text, kwargs = example.turn, example.text, fmt.template_kwargs
    full = render(tokenizer, messages[:example.last + 1], kwargs)
    full = full[:len(full) - turn.drop] + turn.appended
    if turn.whole:
        ok = text == full
    else:
        prompt = render(tokenizer, messages[:example.last], kwargs, add_generation_prompt=True)
        context = prompt[:len(prompt) - len(turn.extra)]
        rest = text[len(context):]
        ok = text.startswith(context) and full.endswith(rest)
    if not ok:
        raise UserError(
            "the chat template renders this conversation differently from its probe (it changes message text in a "
            "way the masking cannot follow); first message: " + repr(messages[0]["content"][:60]))


def prompt_messages(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """The messages as the template is given them, at training and at inference alike."""
    return fold_system([{"role": m["role"], "content": m["content"]} for m in messages], fmt)


def prompt_text(tokenizer, fmt: ChatFormat, messages: list[dict]) -> str:
    """What the model sees before it writes the next reply: the conversation so far with the generation prompt."""
    return render(tokenizer, prompt_messages(messages, fmt), fmt.template_kwargs, add_generation_prompt=True)


def detect_chat_format(tokenizer, kwargs: dict | None = None, stop_ids=()) -> ChatFormat:
    """Read off what the template does by rendering probe conversations (no family table, no header probe).

    stop_ids: the model's own stop tokens (its generation config's eos ids); the tokenizer's eos is added."""
    kwargs = dict(kwargs or {})
    stop_ids = tuple(sorted({*stop_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])}))
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template (a base model?): set CHAT_TEMPLATE to a .jinja file")
    probe = ["user", "assistant", "user", "assistant"]
    base = render(tokenizer, _sentinels(probe), kwargs)  # raises one clear error if even plain chat fails
    if [int(g) for g in _SENTINEL_RE.findall(base)] != [0, 1, 2, 3]:
        raise UserError("the chat template does not render each message's content once and in order; "
                        "it cannot be masked reliably")
    system = _system_handling(tokenizer, kwargs)
    strip_roles = set()
    padded = " \n" + _SENTINEL.format(9) + " \n"
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
    fmt_key = (id(tokenizer), tokenizer.chat_template, draft.kwargs, stop_ids)
    roles = ("system",) * (system != "folded") + tuple(probe)
    last = len(roles) - 1
    turn = _turn(tokenizer, fmt_key, roles, last, kwargs, control, frozenset(stop_ids))
    closing = turn.completion[_span(turn.completion, last)[1]:]  # what follows the content in the completion
    preserving = len(_plan(tokenizer, draft, roles, (last - 2, last))) == 1
    default_system, addition = _system_texts(tokenizer, kwargs, system)
    return ChatFormat(draft.kwargs, system, frozenset(strip_roles), closing,
                      tuple(tokenizer(closing, add_special_tokens=False)["input_ids"]), preserving, turn.extra,
                      default_system, addition, stop_ids)


def _system_handling(tokenizer, kwargs: dict) -> str:
    # as at inference: the conversation ends with a user turn (Mistral v0.3 and Nemo drop the system prompt of a
    # conversation that ends with a reply: it belongs to the final user turn)
    s = _sentinels(["system", "user", "assistant", "user"])
    try:
        text = tokenizer.apply_chat_template(s, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:  # "System role not supported" (Gemma), "Only user and assistant roles" (Mistral v0.1)
        return "folded"
    order = [int(g) for g in _SENTINEL_RE.findall(text)]
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
    s = _sentinels(["system", "user"])
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
    if fmt.generation_extra:
        lines.append(f"NOTE: the generation prompt adds {fmt.generation_extra!r}, which the template's rendering of "
                     "a finished reply does not have (the data holds no reasoning for it): replies are trained as "
                     "the template renders them, right after the assistant header")
    return lines


def _short(text: str, limit: int = 100) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 4] + "...'"
