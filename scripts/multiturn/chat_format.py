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
from dataclasses import dataclass

from .errors import UserError
from .sentinels import (
    REASONING, SENTINEL, SENTINEL_RE, control_token_ids, core, plain_shapes, render, sentinel_messages, shape, span,
    template_message,
)
from .token_ids import first_divergence

_CACHE_LIMIT = 50_000  # entries per cache: agent data makes almost every conversation's shape new


@dataclass(frozen=True)
class ChatFormat:
    """What the tokenizer's chat template does, read off probe renderings (template_probes.detect_chat_format)."""

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
    reasoning_field: str = ""  # the message field the template renders reasoning from ("" = none renders)
    renders_tools: bool = False  # the template shows tool definitions given as tools=
    renders_tool_calls: bool = False  # the template shows an assistant message's tool_calls
    tool_results_json: bool = False  # the template writes a tool result as a JSON string (quoted, escaped)
    drops_inline_reasoning: bool = False  # the template cuts <think>...</think> out of every reply (DeepSeek-R1)
    call_content: str = "empty"  # a tool-call message without text gets content "" ("empty"), None ("none") or no
    #                              content key ("absent"): whichever form the template renders the calls for
    arguments_as_text: bool = False  # the template writes a call's arguments as given, so they go as a JSON string
    renders_names: bool = False  # the template shows a user message's "name" (the speaker)

    @property
    def template_kwargs(self) -> dict:
        return json.loads(self.kwargs)


def _closing(tokenizer, tail: str, control: frozenset, stops: frozenset, last_run: bool = False) -> str | None:
    """The start of `tail` through its first (or, last_run, its last) run of control tokens; None if it has none.

    Any text before the run is kept (Llama 2's " </s>", DeepSeek Coder's "\n<|EOT|>", a tool call's text): the
    model generates it. The run stops at the template's text after it (Gemma's "\n"), and after the last of the
    model's own stop tokens in it (where a template always appends the next header, as Command R7B's tool-use
    template does): generation ends there. A turn with tool calls ends at its last run: the calls' own text may
    hold control tokens (gpt-oss's <|channel|>, Mistral's [TOOL_CALLS])."""
    if not tail:
        return None
    encoded = tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    marks = [k for k, t in enumerate(ids) if t in control]
    if not marks:
        return None
    if last_run:
        first = last = marks[-1]
        while first > 0 and ids[first - 1] in control:
            first -= 1
    else:
        first = last = marks[0]
        while last + 1 < len(ids) and ids[last + 1] in control:
            last += 1
    last = max((k for k in range(first, last + 1) if ids[k] in stops), default=last)
    return tail[:offsets[last][1]]


@dataclass(frozen=True)
class _Turn:
    """One assistant reply of a conversation shape, in sentinel space."""

    context: str  # what the model sees before it generates the reply: the prompt at inference
    completion: str  # what it generates: template text before the content, reasoning, content, tool calls, closing
    full: str  # the example text that ends with this reply: context + completion + the template's text after it
    whole: bool  # full is the template's rendering through this reply (after drop/appended): one render checks it
    drop: int  # characters at the end of that rendering that the example leaves out
    appended: str  # the closing the example adds where the rendering closes nothing (Qwen1.5)
    extra: str  # generation-prompt text that the rendering of the finished reply lacks (R1's "<think>\n")


_turn_cache: dict = {}
_plan_cache: dict = {}


def _remember(cache: dict, key, value):
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def reply_turn(tokenizer, fmt_key, shapes: tuple, i: int, kwargs: dict, control: frozenset, stops: frozenset,
          fmt=None) -> _Turn:
    """Reply i of a conversation of these shapes: its inference context and what the model generates after it.

    The context is the prompt rendered with add_generation_prompt=True. The generated text is read off the
    template's rendering of the finished reply: what follows the header the prompt ends with, through the
    turn's closing. Where the prompt adds text that the finished reply does not have (DeepSeek-R1 opens
    "<think>\n" that the data has no reasoning for), that text is left out of the context and reported."""
    key = (fmt_key, shapes[:i + 1])
    if key in _turn_cache:
        return _turn_cache[key]
    roles = [sh[0] for sh in shapes[:i + 1]]
    sentinels = sentinel_messages(shapes[:i + 1], fmt)
    full = render(tokenizer, sentinels, kwargs)
    prompt = render(tokenizer, sentinels[:i], kwargs, add_generation_prompt=True)
    own = sorted(s for s in (span(full, i), span(full, REASONING + i)) if s)
    calls = shapes[i][3] is not None
    if not own and not calls:
        raise UserError(f"the chat template does not render the assistant message of a conversation of roles "
                        f"{roles}; it cannot be trained")
    _check_rendered(shapes, i, prompt, full)
    # the header: the prompt's text after the last message it shows, and the same stretch of the finished turn
    marks = list(SENTINEL_RE.finditer(prompt))
    header = prompt[marks[-1].end():] if marks else prompt
    previous = span(full, int(marks[-1].group(1))) if marks else (0, 0)
    start = own[0][0] if own else len(full)
    if previous is None or previous[1] > start or SENTINEL_RE.search(full[previous[1]:start]):
        raise UserError(f"the chat template renders a conversation of roles {roles} with messages "
                        "out of order; it cannot be masked reliably")
    rendered = full[previous[1]:]
    common = 0
    while common < min(len(header), len(rendered)) and header[common] == rendered[common]:
        common += 1
    extra = header[common:]
    context = prompt[:len(prompt) - len(extra)]
    body = rendered[common:]  # the turn as generated, then whatever the template writes after it
    own_end = max(e for _, e in own) - previous[1] - common if own else 0
    closing = _closing(tokenizer, body[own_end:], control, stops, last_run=calls)
    if closing is not None:
        completion = body[:own_end] + closing
        trailing, drop, appended = body[len(completion):], 0, ""
    else:  # nothing closes the final reply (Qwen1.5, SOLAR): its closing is what follows it when the chat goes on
        end = len(full) - len(body) + own_end
        more = render(tokenizer, sentinels + sentinel_messages(plain_shapes(["user"]), fmt, i + 1), kwargs)
        closing = _closing(tokenizer, more[end:], control, stops) if more[:end] == full[:end] else None
        if closing is None:
            raise UserError(f"the chat template closes an assistant reply with {full[end:]!r}, which holds no "
                            "control token: the model could not learn where its reply ends. Set CHAT_TEMPLATE to a "
                            "template that ends each reply with an end-of-turn token")
        completion = body[:own_end] + closing
        trailing, drop, appended = "", len(full) - end, closing
    if calls:
        _check_calls(json.loads(shapes[i][3]), completion)
    text = context + completion + trailing
    turn = _Turn(context=context, completion=completion, full=text,
                 whole=text == full[:len(full) - drop] + appended, drop=drop, appended=appended, extra=extra)
    return _remember(_turn_cache, key, turn)


def _check_rendered(shapes: tuple, i: int, prompt: str, full: str) -> None:
    """Nothing the data holds is lost by the template: the text of each message since the previous reply is in
    reply i's prompt (where the model reads it at inference), and the reply's own text in its rendering. Earlier
    text may leave later prompts (Mistral's system prompt rides on the final user turn only; templates drop old
    reasoning): the model never sees it there at inference either."""
    since = max((j for j in range(i) if shapes[j][0] == "assistant"), default=-1) + 1
    for j in range(since, i):
        if shapes[j][1] and span(prompt, j) is None:
            raise UserError(f"the chat template leaves the text of message {j} ({shapes[j][0]}) out of the prompt "
                            f"of the reply after it (roles {[sh[0] for sh in shapes[:i + 1]]}): that text would "
                            "never reach the model. Set CHAT_TEMPLATE to a template that renders it, or leave it out")
    if shapes[i][1] and span(full, i) is None:
        raise UserError("the chat template leaves out the text of an assistant message with tool calls (it renders "
                        "only the calls): put the text in an assistant message of its own before the calls")


def _check_calls(calls: list[dict], completion: str) -> None:
    """Every tool call of a reply, its name and its arguments' names, is in the text the model is trained to
    generate. A template that renders fewer calls (gpt-oss renders the first of a message's calls) would train
    calls the data does not hold, followed by results that answer none."""
    names = [c["function"]["name"] for c in calls]
    lost = [n for n in dict.fromkeys(names) if completion.count(n) < names.count(n)]
    lost += [f"{c['function']['name']}({key})" for c in calls for key in c["function"]["arguments"]
             if str(key) not in completion and c["function"]["name"] not in lost]
    if lost:
        raise UserError(f"the chat template renders only part of the {len(calls)} tool call(s) of an assistant "
                        f"message ({', '.join(names)}): it leaves out {', '.join(lost)}. Give each assistant message "
                        "the calls this template renders (one call per message: the call, its result, the next "
                        "call), or set CHAT_TEMPLATE to a template that renders every call")


def plan_examples(tokenizer, fmt: ChatFormat, shapes: tuple, trained: tuple, tools: str = ""):
    """The examples that train the `trained` replies of a conversation of these shapes, in sentinel space.

    Each is (segments, index of its last reply, that reply's _Turn): the example's text through one reply, cut
    into template text and message contents, each marked trained or not. A reply is trained in an example only
    where the text before it is exactly its inference context.
    Greedy from the last reply: the rendering through the last untrained-yet reply trains every earlier one
    it keeps in context, which gives one example for a prefix-preserving template."""
    key = (id(tokenizer), tokenizer.chat_template, fmt, shapes, trained, tools)
    if key in _plan_cache:
        return _plan_cache[key]
    control = control_token_ids(tokenizer)
    fmt_key = (id(tokenizer), tokenizer.chat_template, fmt.kwargs, fmt.stop_ids, fmt.reasoning_field, fmt.call_content,
               fmt.arguments_as_text, tools)
    kwargs = _kwargs(fmt, tools)
    turns = {i: reply_turn(tokenizer, fmt_key, shapes, i, kwargs, control, frozenset(fmt.stop_ids), fmt) for i in trained}
    todo, examples = set(trained), []
    while todo:
        last = max(todo)
        text = turns[last].full
        covered = sorted(i for i in todo if text.startswith(turns[i].context + turns[i].completion))
        spans = [(len(turns[i].context), len(turns[i].context) + len(turns[i].completion), i) for i in covered]
        examples.append((_segments(text, spans), last, turns[last]))
        todo -= set(covered)
    reshaped = frozenset(i for i in trained if shapes[i][5] != ("", "") and not _keeps_edges(
        tokenizer, fmt_key, shapes, i, kwargs, control, fmt, turns[i]))
    return _remember(_plan_cache, key, (examples[::-1], reshaped))


def _keeps_edges(tokenizer, fmt_key, shapes: tuple, i: int, kwargs: dict, control, fmt, turn: _Turn) -> bool:
    """Whether the template renders reply i with the whitespace around its content as given: its turn equals the
    turn of the same reply without that whitespace, with the whitespace put back around the content."""
    lead, trail = shapes[i][5]
    plain = reply_turn(tokenizer, fmt_key, shapes[:i] + (shapes[i][:5] + (("", ""),),), i, kwargs, control,
                  frozenset(fmt.stop_ids), fmt)
    sentinel = SENTINEL.format(i)
    return turn.completion == plain.completion.replace(sentinel, lead + sentinel + trail)


def _segments(text: str, spans: list) -> tuple:
    """Cut a sentinel-space rendering into (template text or sentinel number, trained turn or None) segments."""
    cuts = {0, len(text)} | {p for span in spans for p in span[:2]}
    for m in SENTINEL_RE.finditer(text):
        cuts |= {m.start(), m.end()}
    cuts = sorted(cuts)
    out = []
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        turn = next((i for s, e, i in spans if s <= a and b <= e), None)
        m = SENTINEL_RE.fullmatch(piece)
        out.append((int(m.group(1)) if m else piece, turn))
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

    pieces: list  # (text, is_content, trained, kind, turn): the template's own text or a message's text; kind says
    #               what it is for the preview: "reply", "reasoning", "call" (a tool call), "result" (a tool's),
    #               "user", "system" (their text), "" (the template's); turn: the index of the trained reply whose
    #               generated text it is part of, or None
    last: int  # index (after system folding) of its last reply, a trained one
    turn: _Turn  # that reply in sentinel space: how the example relates to the template's renderings
    tools: str = ""  # the conversation's tool definitions as JSON, given to the template as tools=
    reshaped: int = 0  # trained replies whose surrounding whitespace the template strips here (trained as rendered)

    @property
    def text(self) -> str:
        return "".join(p[0] for p in self.pieces)


def _tools_json(tools) -> str:
    return json.dumps(tools) if tools else ""


def _kwargs(fmt: ChatFormat, tools: str) -> dict:
    return dict(fmt.template_kwargs, **({"tools": json.loads(tools)} if tools else {}))


def conversation_examples(tokenizer, fmt: ChatFormat, messages: list[dict], tools=None,
                          train_reasoning: bool = True) -> list[Example]:
    """The training examples of one conversation (usually one; see plan_examples).

    Joined, an example's pieces are the template's rendering of the conversation through its last trained
    reply (check_rendering proves it for the real contents). Replies marked train=False stay as context;
    train_reasoning=False keeps every reasoning as context too (the template's markers around it stay trained)."""
    messages = fold_system(messages, fmt)
    shapes = tuple(shape(m) for m in messages)
    trained = tuple(i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True))
    tools = _tools_json(tools)
    out = []
    plan, reshaped = plan_examples(tokenizer, fmt, shapes, trained, tools)
    for segments, last, turn in plan:
        pieces, after_own = [], set()
        for part, in_turn in segments:
            is_trained = in_turn is not None
            if isinstance(part, int):
                m = messages[part % REASONING]
                if part >= REASONING:
                    pieces.append((m["reasoning"].strip(), True, is_trained and train_reasoning, "reasoning", in_turn))
                    continue
                content = core(m["content"])
                if m["role"] == "tool" and fmt.tool_results_json:
                    content = json.dumps(content, ensure_ascii=False)[1:-1]
                kind = {"assistant": "reply", "tool": "result"}.get(m["role"], m["role"])
                pieces.append((content, True, is_trained, kind, in_turn))
                if m["role"] == "assistant":
                    after_own.add(part)
            else:
                call = is_trained and messages[in_turn].get("tool_calls") and (
                    in_turn in after_own or not shapes[in_turn][1])
                pieces.append((part, False, is_trained, "call" if call else "reply" if is_trained else "", in_turn))
        mine = {t for _, t in segments if t is not None}
        out.append(Example([p for p in pieces if p[0]], last, turn, tools, len(mine & reshaped)))
    return out


def check_rendering(tokenizer, fmt: ChatFormat, messages: list[dict], example: Example) -> None:
    """An example's pieces must join to exactly the template's own text for the real conversation.

    Usually the example is the rendering through its last reply, and one render proves it. Where the prompt
    differs from the rendered history (a split template), the example is that reply's prompt followed by the
    reply as the finished turn renders it: both renders are checked."""
    messages = template_messages(fold_system(messages, fmt), fmt)
    turn, text, kwargs = example.turn, example.text, _kwargs(fmt, example.tools)
    full = render(tokenizer, messages[:example.last + 1], kwargs)
    full = full[:len(full) - turn.drop] + turn.appended
    if turn.whole:
        expected = full
    else:
        prompt = render(tokenizer, messages[:example.last], kwargs, add_generation_prompt=True)
        context = prompt[:len(prompt) - len(turn.extra)]
        rest = text[len(context):]
        expected = context + full[len(full) - len(rest):] if text.startswith(context) else context
    if text != expected:
        raise UserError(
            "the chat template renders this conversation differently from its probe (it changes message text in a "
            "way the masking cannot follow)",
            f"{first_difference(tokenizer, text, expected)}; first message: {messages[0]['content'][:60]!r}")


def first_difference(tokenizer, ours: str, template: str) -> str:
    """Where the ids of an example first differ from the ids of the template's own rendering, in a few tokens."""
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (ours, template))
    i = first_divergence(a, b) or 0  # (the same ids for different texts: shown from the start)

    def show(ids):
        tokens = " ".join(tokenizer.convert_ids_to_tokens(ids[max(0, i - 3):i + 4])) or "(nothing)"
        return tokens.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # one line

    return f"at token {i} the example has {show(a)} where the template's rendering has {show(b)}"


def template_messages(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """Messages in the template's own fields, with their real text."""
    return [template_message(shape(m), fmt, core(m.get("content") or ""), (m.get("reasoning") or "").strip())
            for m in messages]


def prompt_messages(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """The messages as the template is given them, at training and at inference alike."""
    return template_messages(fold_system(messages, fmt), fmt)


def prompt_text(tokenizer, fmt: ChatFormat, messages: list[dict], tools=None) -> str:
    """What the model sees before it writes the next reply: the conversation so far with the generation prompt."""
    return render(tokenizer, prompt_messages(messages, fmt), _kwargs(fmt, _tools_json(tools)),
                  add_generation_prompt=True)


def split_inline_reasoning(message: dict) -> dict:
    """An assistant message whose content opens with <think>...</think>: the reasoning moved to its own field,
    for a template that reads reasoning from a field (it renders it where the model will see it). The content
    after </think> loses its leading newlines, as such templates render it."""
    content = message.get("content") or ""
    head = content.lstrip()
    if message["role"] != "assistant" or message.get("reasoning") or not head.startswith("<think>") \
            or "</think>" not in head:
        return message
    reasoning, _, rest = head[len("<think>"):].partition("</think>")
    return dict(message, content=rest.lstrip("\n"), reasoning=reasoning)
