"""Token ids and labels of training examples, exact to the id: the ids a model is trained on are the ids a server
feeds it and the ids it must generate.

An example's text is the chat template's own rendering (chat_format.py). It is tokenized whole, as a server
tokenizes the prompt it renders (apply_chat_template(tokenize=True) encodes the rendered text with
add_special_tokens=False): merges across the edge of a message and the template text around it are the
tokenizer's own, and no message gets a SentencePiece prefix space of its own. The labels come from the characters
each token covers (its offsets): a token is trained where its first character is trained text.

For every trained reply, the ids before it must be exactly the tokenizer's encoding of its prompt, and its
trained ids must start at a token boundary. Where a merge across the prompt's end breaks that (a reply that starts
with a newline after a header that ends with one, in a template that keeps it), the reply is trained in an
example of its own: the prompt's encoding, then the reply encoded as the continuation the model generates.

A message's text that holds a control-token string ("<end_of_turn>" typed in a chat) is encoded as plain text,
apart from the template text around it, so that it can never open or close a turn. Only such examples are cut.
"""

import re
from collections import Counter

import numpy as np

from .errors import UserError

IGNORE_INDEX = -100  # label of a token that does not count in the loss

_TAIL_CACHE_LIMIT = 100_000
_tokenizer_info: dict = {}


class _Info:
    """What is read once per tokenizer: its special tokens (as ids and as a pattern over text) and a cache of the
    encodings of prompt tails (a template has a handful: its headers)."""

    def __init__(self, tokenizer):
        strings = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len,
                         reverse=True)
        self.special_ids = np.array(sorted(tokenizer.convert_tokens_to_ids(strings)), dtype=np.int64)
        self.pattern = re.compile("|".join(map(re.escape, strings))) if strings else None
        self.tails: dict = {}


def _info(tokenizer) -> _Info:
    key = (id(tokenizer), len(tokenizer))
    if key not in _tokenizer_info:
        _tokenizer_info[key] = _Info(tokenizer)
    return _tokenizer_info[key]


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"the tokenizer ({type(tokenizer).__name__}) has no fast (Rust) backend, which exact "
                        "masking needs for token offsets: save it with a tokenizer.json")
    return backend


def encode(tokenizer, texts: list[str], as_text: bool = False) -> list[tuple[list[int], list[tuple]]]:
    """(ids, character offsets) of each text, as tokenizer(text, add_special_tokens=False) gives them; with
    as_text=True control-token strings in the texts are encoded as plain text."""
    backend = _backend(tokenizer)
    previous = backend.encode_special_tokens
    backend.encode_special_tokens = as_text
    try:
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = previous


def _continuation(tokenizer, text: str, anchor: str) -> tuple[list[int], list[tuple]]:
    """Text encoded as it is after the anchor (a control token, which always ends a stretch of text the
    tokenizer encodes apart), without the anchor: no SentencePiece prefix space at its start."""
    (anchor_ids, _), (ids, offsets) = encode(tokenizer, [anchor, anchor + text])
    if ids[:len(anchor_ids)] != anchor_ids:
        raise UserError(f"the tokenizer merges the control token {anchor!r} with the text after it "
                        f"({text[:40]!r}): the reply cannot be encoded exactly")
    shift = len(anchor)
    return ids[len(anchor_ids):], [(a - shift, b - shift) for a, b in offsets[len(anchor_ids):]]


def _after_newline(tokenizer, text: str, as_text: bool) -> tuple[list[int], list[tuple]]:
    """Text in the middle of a rendering: encoded after a newline (where SentencePiece adds no prefix space), which
    is then taken off again; alone where the newline merges with the text."""
    (newline, _), (ids, offsets) = encode(tokenizer, ["\n", "\n" + text], as_text)
    if ids[:len(newline)] == newline and (len(ids) == len(newline) or offsets[len(newline)][0] >= 1):
        return ids[len(newline):], [(a - 1, b - 1) for a, b in offsets[len(newline):]]
    return encode(tokenizer, [text], as_text)[0]


def _encode_cut(tokenizer, pieces: list, info: _Info) -> tuple[list[int], list[tuple]]:
    """An example whose message texts hold control-token strings: those texts encoded as plain text, each stretch
    of template text and other messages around them as usual, and each trained reply from its first character."""
    ids, offsets, at, stretch = [], [], 0, ""

    def flush(text: str, as_text: bool):
        nonlocal at
        if not text:
            return
        got = _after_newline(tokenizer, text, as_text) if ids else encode(tokenizer, [text], as_text)[0]
        ids.extend(got[0])
        offsets.extend((a + at, b + at) for a, b in got[1])
        at += len(text)

    previous = None
    for text, is_content, _, _, turn in pieces:
        if turn is not None and turn != previous:  # a reply starts: the ids before it are its prompt's alone
            flush(stretch, False)
            stretch = ""
        previous = turn
        if is_content and info.pattern.search(text):
            flush(stretch, False)
            stretch = ""
            flush(text, True)
        else:
            stretch += text
    flush(stretch, False)
    return ids, offsets


def _labels(ids: list[int], offsets: list[tuple], pieces: list, starts: np.ndarray, kinds: bool):
    """Each token's label (its id where its first character is trained text) and, with kinds, its kind."""
    token_starts = np.fromiter((a for a, _ in offsets), dtype=np.int64, count=len(offsets))
    index = np.searchsorted(starts, token_starts, side="right") - 1
    trained = np.array([p[2] for p in pieces], dtype=bool)[index]
    labels = np.where(trained, np.asarray(ids, dtype=np.int64), IGNORE_INDEX).tolist()
    if not kinds:
        return labels, None
    names = [p[3] for p in pieces]
    return labels, [names[k] for k in index.tolist()]


def encode_examples(tokenizer, examples: list, kinds: bool = False) -> list[tuple[list[tuple], Counter]]:
    """The rows (input_ids, labels), with kinds=True (input_ids, labels, kinds), of each example (chat_format's
    Example), and what had to be done for it (counts for the summary).

    Usually one row per example: the encoding of its text. A reply whose prompt's encoding is not a prefix of that
    encoding goes to a row of its own (see the module's docstring)."""
    info = _info(tokenizer)
    texts = ["".join(p[0] for p in e.pieces) for e in examples]
    cut = [info.pattern is not None and any(p[1] and info.pattern.search(p[0]) for p in e.pieces) for e in examples]
    whole = iter(encode(tokenizer, [t for t, c in zip(texts, cut) if not c]))
    encoded = [_encode_cut(tokenizer, e.pieces, info) if c else next(whole) for e, c in zip(examples, cut)]

    # every trained reply's boundaries: (example, turn, start of its generated text, its end, tokens before it)
    checks = []
    for n, (example, (ids, offsets)) in enumerate(zip(examples, encoded)):
        if cut[n]:
            continue  # its control-token strings are text here, not what a server's encoding makes of them
        bounds, at = {}, 0
        for text, _, _, _, turn in example.pieces:
            if turn is not None:
                start, _ = bounds.get(turn, (at, at))
                bounds[turn] = (start, at + len(text))
            at += len(text)
        ends = np.fromiter((b for _, b in offsets), dtype=np.int64, count=len(offsets))
        is_special = np.isin(np.asarray(ids, dtype=np.int64), info.special_ids)
        for turn, (start, end) in bounds.items():
            checks.append((n, turn, start, end, ends, is_special))
    verdicts = _prefix_verdicts(tokenizer, info, texts, encoded, checks)

    out = []
    for n, (example, (ids, offsets)) in enumerate(zip(examples, encoded)):
        pieces, notes = example.pieces, Counter()
        starts = np.cumsum([0] + [len(p[0]) for p in pieces[:-1]])
        failed = [v for v in verdicts.get(n, ()) if not v[0]]
        if failed:  # those replies train in rows of their own; here they are context
            gone = {v[1] for v in failed}
            pieces = [p if p[4] not in gone else (p[0], p[1], False, p[3], None) for p in pieces]
        labels, token_kinds = _labels(ids, offsets, pieces, starts, kinds)
        rows = [(ids, labels, token_kinds) if kinds else (ids, labels)]
        last = max((p[4] for p in example.pieces if p[4] is not None), default=None)
        for _, turn, start, end, anchor in failed:  # the example's last reply keeps the template's text after it
            end = len(texts[n]) if turn == last else end
            rows.append(_own_row(tokenizer, texts[n], example.pieces, starts, turn, start, end, anchor, kinds))
            notes["replies given their own example: the prompt's tokens merge with the reply's first ones"] += 1
        if len(rows) > 1 and not any(x != IGNORE_INDEX for x in labels):
            rows = rows[1:]  # nothing left to train in the shared row
        if cut[n]:
            notes["examples whose messages hold control-token strings, encoded as plain text"] += 1
        if example.reshaped:
            notes["replies whose surrounding whitespace the template strips (trained as rendered)"] += example.reshaped
        out.append((rows, notes))
    return out


def _prefix_verdicts(tokenizer, info: _Info, texts, encoded, checks) -> dict:
    """For each trained reply: (ok, turn, start, end, anchor). ok: the ids before it are the tokenizer's encoding of
    the text before it (its prompt), and its first and last tokens start and end at its edges.

    The encoding of the prompt is checked from the prompt's last control token on: the tokenizer encodes the
    text between control tokens apart, so the ids before that token are the same in both encodings."""
    pending, out = [], {}
    for n, turn, start, end, ends, is_special in checks:
        ids, offsets = encoded[n]
        k = int(np.searchsorted(ends, start, side="right"))  # tokens that end by the reply's start
        m = int(np.searchsorted(ends, end, side="right"))
        edges = (k == len(ids) or offsets[k][0] >= start) and m >= 1 and ends[m - 1] == end and (
            m == len(ids) or offsets[m][0] >= end)
        before = np.flatnonzero(is_special[:k])
        j = int(before[-1]) if len(before) else 0
        from_char = offsets[j][0] if len(before) else 0
        anchor = texts[n][offsets[j][0]:offsets[j][1]] if len(before) else ""
        out.setdefault(n, []).append([edges, turn, start, end, anchor])
        pending.append((out[n][-1], texts[n][from_char:start], ids[j:k]))
    new = list({tail for _, tail, _ in pending if tail not in info.tails})
    if len(info.tails) + len(new) > _TAIL_CACHE_LIMIT:
        info.tails.clear()
        new = list({tail for _, tail, _ in pending})
    info.tails.update(zip(new, (ids for ids, _ in encode(tokenizer, new))))
    for verdict, tail, expected in pending:
        verdict[0] = verdict[0] and info.tails[tail] == list(expected)
    return {n: [tuple(v) for v in vs] for n, vs in out.items()}


def _own_row(tokenizer, text: str, pieces: list, starts, turn: int, start: int, end: int, anchor: str, kinds: bool):
    """A reply in a row of its own: its prompt's encoding, then the reply as the model generates it after it."""
    (context, context_offsets), = encode(tokenizer, [text[:start]])
    if anchor:
        reply, offsets = _continuation(tokenizer, text[start:end], anchor)
    else:
        reply, offsets = encode(tokenizer, [text[start:end]])[0]
    mine = [p if p[4] == turn else (p[0], p[1], False, p[3], None) for p in pieces]
    labels, token_kinds = _labels(reply, [(a + start, b + start) for a, b in offsets], mine, starts, kinds)
    ids = context + reply
    labels = [IGNORE_INDEX] * len(context) + labels
    if kinds:
        names = [p[3] for p in pieces]
        index = np.searchsorted(starts, [a for a, _ in context_offsets], side="right") - 1
        return ids, labels, [names[k] for k in index.tolist()] + token_kinds
    return ids, labels
