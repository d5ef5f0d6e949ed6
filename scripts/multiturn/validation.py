"""Validating and repairing conversations before anything heavy loads: roles, contents, tool calls and results; one
report of a data file's problems, each kind once."""

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .chat_format import split_inline_reasoning
from .conventions import LeftOut, UnknownRole, validate_message
from .data import ROLE_ALIASES, read_conversations
from .errors import UserError


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
                       places: dict | None = None, read: Counter | None = None,
                       non_text: str = "error") -> list[dict] | None:
    """One conversation validated and repaired, or None where nothing is left to train; soft problems counted.

    Structural problems raise UserError naming the message. Soft ones are repaired as a user would expect:
    consecutive messages of one role are merged with a blank line, a leading assistant message and trailing
    user or tool messages are dropped, an empty assistant reply stays as context but is not trained, a
    conversation with nothing left to train is skipped, and tool calls no result answers are counted; so is
    what the data asks that is not done (keys nothing reads). With strict=True each of these is an error. `read`
    counts how the data's conventions were read (conventions.validate_message).
    """
    def soft(kind: str, where: str):
        if strict:
            raise UserError(f"{where}: {kind} (STRICT is on; fix the data or set --strict=False)")
        problems[kind] += 1
        if places is not None and len(places.setdefault(kind, [])) < REPORT_PLACES:
            places[kind].append(where)

    mapped, seen = {}, Counter()
    try:
        messages = [validate_message(m, f"{at}, message {j}", role_map, mapped, seen, non_text)
                    for j, m in enumerate(conversation)]
    except LeftOut as left:
        problems[left.kind] += 1
        return None
    if read is not None:
        read.update(seen)
    for name, target in mapped.items():
        problems[f"conversations with role {name!r} read as {target!r} (ROLE_MAP)"] += 1
    for j, m in enumerate(messages):
        for kind in m.pop("_unheeded", ()):
            soft(kind, f"{at}, message {j}")
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
        found["_messages with a speaker's name"] += m["role"] != "tool" and "name" in m
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
    read_as: Counter = field(default_factory=Counter)  # how the data's conventions were read (weight 0, parts...)
    sources: list = field(default_factory=list)  # per source: {"path", "weight", "read", "kept", "held", "taken"}
    path: str = ""  # the source it was read from


def validate_data(path: str, strict: bool, folder: Path | None, name: str, log, role_map: dict | None = None,
                  non_text: str = "error") -> Data:
    """Read, validate and repair a data source one conversation at a time, writing what is kept to an Arrow file
    in `folder` (memory-mapped back, as `datasets` does): peak memory depends on the batch, not the data size.
    The whole source is read before any problem stops the run: one report names each kind of problem once, with
    its count and first places (data_report); under STRICT the soft ones too. ROLE_MAP reads the data's own roles;
    non_text="leave_out" leaves out conversations with image, audio or file parts (NON_TEXT_CONVERSATIONS).
    Without a folder (processes other than the main one) nothing is kept: the errors and counts are the same."""
    from datasets import Dataset, Features, Value
    from datasets.arrow_writer import ArrowWriter

    conversations, found = read_conversations(path)
    problems, features, read_as, read, kept = Counter(), Counter(), Counter(), 0, 0
    writer = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        writer = ArrowWriter(features=Features({"conversation": Value("string"), "source": Value("string")}),
                             path=str(folder / f"{name}-conversations.arrow"), writer_batch_size=1000)
    start = time.time()
    errors, places = {}, {}  # hard problems: kind -> (count, first places); soft ones' first places
    roles: dict = {}  # unknown roles: role -> [messages, conversations, first places]
    failed = softened = 0  # conversations with a hard problem; with a soft one

    def soft_count():
        return sum(n for kind, n in problems.items() if not by_setting(kind))

    for i, raw in enumerate(conversations):
        read += 1
        where = f"{path}: conversation {i}"
        before = soft_count() if strict else 0
        try:
            messages = clean_conversation(raw, where, False, problems, role_map, places, read_as, non_text)
            softened += strict and soft_count() > before
        except UserError as error:  # read on: every problem of the file is reported at once
            failed += 1
            if not isinstance(error, UnknownRole):
                note_error(errors, error, where)
            note_roles(roles, raw, where, role_map or {})  # every message's role, not only the first unknown one
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
    if errors or roles:
        raise UserError(data_report(path, errors, "problems that stop the run (the first of each conversation)",
                                    failed, roles))
    soft_places = {k: v for k, v in places.items() if not by_setting(k)}
    if strict and soft_places:
        raise UserError(data_report(path, {k: (problems[k], v) for k, v in soft_places.items()},
                                    "soft problems (STRICT is on; fix the data or set --strict=False)", softened))
    dataset = Dataset.from_file(str(folder / f"{name}-conversations.arrow")) if writer is not None else None
    return Data(dataset, found, read, kept, problems, +features, read_as, path=path)


def by_setting(kind: str) -> bool:
    """A count of what a setting chose (ROLE_MAP, NON_TEXT_CONVERSATIONS), not a problem of the data."""
    return "(ROLE_MAP)" in kind or "(NON_TEXT_CONVERSATIONS)" in kind


REPORT_PLACES = 3  # places named for each kind of problem


REPORT_KINDS = 20  # kinds of problem listed before the report stops


def note_error(errors: dict, error: UserError, where: str) -> None:
    """Count a conversation's hard problem under its kind (its message without the place), keeping the first
    places."""
    text = str(error)
    detail = text[len(where):].lstrip(",") if text.startswith(where) else text
    place, _, kind = detail.partition(": ") if detail.startswith(" message") else ("", "", detail.lstrip(": "))
    count_problem(errors, kind, where + ("," + place if place else ""))


def count_problem(errors: dict, kind: str, place: str) -> None:
    """One more conversation with this kind of problem, its place kept among the first REPORT_PLACES."""
    count, first = errors.get(kind, (0, []))
    errors[kind] = (count + 1, first + [place] if len(first) < REPORT_PLACES else first)


def note_roles(roles: dict, conversation, where: str, role_map: dict) -> None:
    """Count the messages of a conversation whose role neither the built-in names nor ROLE_MAP know."""
    seen = set()
    for j, message in enumerate(conversation if isinstance(conversation, list) else []):
        role = message.get("role", message.get("from")) if isinstance(message, dict) else None
        if role is None or (isinstance(role, str) and (role in ROLE_ALIASES or role in role_map)):
            continue
        key = repr(role)
        entry = roles.setdefault(key, [0, 0, []])
        entry[0] += 1
        if key not in seen:
            seen.add(key)
            entry[1] += 1
            if len(entry[2]) < REPORT_PLACES:
                entry[2].append(f"{where}, message {j}")


def data_report(path: str, problems: dict, what: str, conversations: int, roles: dict | None = None) -> str:
    """One report of a file's problems: each kind once, with its count and first places, at most REPORT_KINDS kinds;
    unknown roles in one line, with the ROLE_MAP that would read them."""
    roles = roles or {}
    lines = []
    if roles:
        order = sorted(roles.items(), key=lambda kv: -kv[1][0])
        listed = ", ".join(f"{role} ({n} message{'s' * (n != 1)} in {c} conversation{'s' * (c != 1)}, first: "
                           f"{first[0]})" for role, (n, c, first) in order)
        example = ", ".join(f"{role}: 'assistant'" for role, _ in order[:3])
        lines.append(f"unknown role{'s' * (len(roles) > 1)} {listed}; expected 'user', 'assistant', 'system' or "
                     "'tool': map each with ROLE_MAP to one of them, or to None to leave out the conversations "
                     f"holding it, e.g. --role_map=\"{{{example}}}\"")
    others = sorted(problems.items(), key=lambda kv: -kv[1][0])
    room = REPORT_KINDS - bool(roles)
    for kind, (count, first) in others[:room]:
        also = f"; also {'; '.join(first[1:])}" if len(first) > 1 else ""
        lines.append(f"{first[0]}: {kind} ({count} in all{also})")
    if len(others) > room:
        lines.append(f"... and {len(others) - room} more kinds")
    kinds = len(problems) + len(roles)
    return (f"{path}: {conversations} conversation{'s' * (conversations != 1)} with {what}, of {kinds} "
            f"kind{'s' * (kinds != 1)} (the whole file was read):\n"
            + "\n".join("  " + line for line in lines))
