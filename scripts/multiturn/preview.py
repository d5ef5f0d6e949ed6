"""What the run will train, shown before the model loads: the data summary, and examples with their trained
tokens marked."""

from collections import Counter

from .chat_format import ChatFormat, UserError, conversation_examples
from .examples import for_template, only_last_reply_trained, tokenize_batch
from .token_ids import IGNORE_INDEX
from .validation import conversation_tools


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
    return many_token_kinds(tokenizer, fmt, [(messages, input_ids)], cfg)[0]


def many_token_kinds(tokenizer, fmt: ChatFormat, rows: list[tuple], cfg: dict) -> list:
    """token_kinds of many (messages, input_ids) at once: one tokenizer call for all their examples."""
    per_row = []
    for messages, _ in rows:
        messages = for_template(messages, fmt)
        if cfg["TRAIN_ON"] == "last":
            messages = only_last_reply_trained(messages)
        per_row.append(conversation_examples(tokenizer, fmt, messages, conversation_tools(messages),
                                             cfg["TRAIN_REASONING"]))
    encoded = iter(tokenize_batch(tokenizer, [e for examples in per_row for e in examples], kinds=True))
    out = []
    for (_, input_ids), examples in zip(rows, per_row):
        mine = [next(encoded) for _ in examples]
        out.append(next((kinds for ids, _, kinds in mine if ids == list(input_ids)), None))
    return out


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
    names = features["_messages with a speaker's name"]
    if names:
        log(f"NOTE: {names} messages carry a speaker's 'name', which is given to the chat template of {model}"
            + ("" if fmt.renders_names else ", which does not render it: the names are left out"))
    left_out = features["assistant messages with reasoning" if fmt.drops_inline_reasoning else "_reasoning given apart"]
    if left_out and not fmt.reasoning_field:
        log(f"NOTE: {left_out} assistant messages carry reasoning, which the chat template of {model} does not "
            "render in a finished reply (it reads none of reasoning_content, reasoning, thinking"
            + (", and cuts <think>...</think> out of the content" if fmt.drops_inline_reasoning else "")
            + "): it is left out, and only the replies are trained. Set CHAT_TEMPLATE to a template that renders "
            "reasoning to train it")


def print_summary(log, data, counts: dict, cut_stats: Counter, name: str, held_out: int = 0) -> list:
    """One part's summary (a validation.Data): its sources, what was read and how, what was repaired or left out,
    and its examples. Returns its rows (name, value)."""
    log(f"data ({name}): {data.found}")
    share = counts["trained_tokens"] / counts["tokens"] if counts["tokens"] else 0.0
    weighted = any(s["weight"] != 1 for s in data.sources)
    rows = [("conversations read", data.read), *([("held out for evaluation", held_out)] if held_out else []),
            ("conversations " + ("taken (source weights)" if weighted else "kept"), data.kept),
            *sorted(data.read_as.items()), *sorted(data.problems.items()), *sorted(cut_stats.items()),
            ("training examples", counts["examples"]), ("tokens", counts["tokens"]),
            ("trained tokens", f"{counts['trained_tokens']} ({share:.1%})"),
            ("example length p50 / p90 / p99 / max",
             f"{counts['p50']} / {counts['p90']} / {counts['p99']} / {counts['max']}")]
    if len(data.sources) > 1 or weighted:  # read / kept / held out / taken, per source
        rows[1:1] = [(f"source {s['path']} (weight {s['weight']:g})",
                      f"{s['read']} read / {s['kept']} kept / {s['held']} held out / {s['taken']} taken")
                     for s in data.sources]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")
    return [("format", data.found)] + rows


def summarize(log, train, evaluation, train_set, eval_set, cut_stats: Counter, features: Counter, fmt: ChatFormat,
              cfg: dict) -> tuple[dict, list]:
    """The data summary of each part, then the features the data holds (both parts); returns the rows of each part
    and of the features, for the report page. A run with no trained token left stops here."""
    from .examples import token_counts

    counts = token_counts(train_set)
    held_out = evaluation.kept if evaluation and cfg["EVAL_DATA_PATH"] in ("", []) else 0
    parts = {"train": print_summary(log, train, counts, cut_stats, "train", held_out)}
    if eval_set is not None:
        parts["eval"] = print_summary(log, evaluation, token_counts(eval_set), Counter(), "eval")
    if counts["trained_tokens"] == 0:
        raise UserError("no token is left to train on: every assistant reply was dropped or marked train=false")
    shown = [(name, n) for name, n in features.items() if not name.startswith("_")]
    for name, n in shown:
        log(f"  {name}: {n}")
    return parts, shown


def show_examples(log, train, train_set, tokenizer, fmt: ChatFormat, cfg: dict) -> None:
    """The first PREVIEW_EXAMPLES examples with their trained tokens marked (coloured on a terminal)."""
    import json
    import os
    import sys

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for k in range(min(cfg["PREVIEW_EXAMPLES"], len(train_set))):
        row = train_set[k]
        conversation = json.loads(train.conversations[row["conversation_index"]]["conversation"]) \
            if train.conversations is not None else None
        kinds = token_kinds(tokenizer, fmt, conversation, row["input_ids"], cfg) if conversation else None
        log(f"--- example {k} ({len(row['input_ids'])} tokens; {legend(kinds, color)})")
        log(render_mask(tokenizer, row["input_ids"], row["labels"], color, kinds))
        log("---")
