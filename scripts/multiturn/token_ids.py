"""Token ids and labels of training examples, exact to the id: the ids a model is trained on are the ids a server
feeds it and the ids it must generate.

An example's text is the chat template's own rendering (chat_format.py). It is tokenized whole, as a server
tokenizes the prompt it renders (apply_chat_template(tokenize=True) encodes the rendered text with
add_special_tokens=False): merges across the edge of a message and the template text around it are the
tokenizer's own, and no message gets a SentencePiece prefix space of its own. The rule for labels: a token is
trained where its first character is trained text. Usually each reply runs from the end of its prompt to a
control token (its closing), and its tokens are read off the control tokens of an encoding without offsets (the
cheaper one: preparation as fast as before ids were exact); otherwise off the characters each token covers.

For every trained reply, the ids before it must be exactly the tokenizer's encoding of its prompt, and its
trained ids must start at a token boundary. Where a merge across the prompt's end breaks that (a reply that starts
with a newline after a header that ends with one, in a template that keeps it), the reply is trained in an
example of its own: the prompt's encoding, then the reply encoded as the continuation the model generates.

A message's text that holds a control-token string ("<end_of_turn>" typed in a chat) is encoded as plain text,
apart from the template text around it, so that it can never open or close a turn. Only such examples are cut.
"""

import bisect
import re
from collections import Counter

import numpy as np

from .errors import UserError

IGNORE_INDEX = -100  # label of a token that does not count in the loss

_TAIL_CACHE_LIMIT = 100_000
_tokenizer_info: dict = {}


class _Info:
    """What is read once per tokenizer: its special tokens (as ids and as strings to find in text) and a cache of
    the encodings of prompt tails (a template has a handful: its headers)."""

    def __init__(self, tokenizer):
        self.strings = frozenset(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
        self.special_ids = frozenset(tokenizer.convert_tokens_to_ids(sorted(self.strings)))
        self.is_special = np.zeros(max(len(tokenizer), max(self.special_ids, default=0) + 1), dtype=bool)
        self.is_special[list(self.special_ids)] = True
        # the pattern finds where one may start: one alternative per shape, digits generalised ("<unused0>" ...
        # "<unused6241>", 6,242 of Gemma 3's 6,249), since a pattern of every string takes half a second to compile,
        # in every process; holds_control then looks for the strings themselves there
        shapes = {re.sub(r"\d+", r"\\d+", re.escape(t)) for t in self.strings}
        self.pattern = re.compile("|".join(sorted(shapes, key=len, reverse=True))) if shapes else None
        self.lengths = sorted({len(t) for t in self.strings}, reverse=True)
        self.tails: dict = {}

    def _next(self, text: str, at: int) -> tuple[int, int] | None:
        """The first special token's string in text from `at` on (the longest where several start there, as the
        tokenizer matches them)."""
        while self.pattern is not None and (found := self.pattern.search(text, at)):
            start, end = found.span()
            room = len(text) - start
            longer = (n for n in self.lengths if end - start < n <= room and text[start:start + n] in self.strings)
            n = next(longer, end - start if found.group() in self.strings else 0)
            if not n:  # not one of the strings (the shape only): the strings of every length there
                n = next((n for n in self.lengths if n <= room and text[start:start + n] in self.strings), 0)
            if n:
                return start, start + n
            at = start + 1
        return None

    def holds_control(self, text: str) -> bool:
        """Whether the text holds a special token's string."""
        return self._next(text, 0) is not None

    def controls(self, text: str) -> list[tuple[int, int]]:
        """Where the special tokens' strings are in text: (start, end) of each."""
        out, at = [], 0
        while (span := self._next(text, at)) is not None:
            out.append(span)
            at = span[1]
        return out


def _info(tokenizer) -> _Info:
    key = (id(tokenizer), len(tokenizer))
    if key not in _tokenizer_info:
        _tokenizer_info[key] = _Info(tokenizer)
    return _tokenizer_info[key]


class _Tokens:
    """Where a text's characters fall among its tokens, read from the tokenizer's own Encoding (its char-to-token
    map, in Rust): a few lookups at the pieces' edges instead of reading every token's offsets. A token belongs to
    where its first character is."""

    def __init__(self, encoding, length: int):
        self.count, self.length = len(encoding), length
        self._token, self._chars = encoding.char_to_token, encoding.token_to_chars

    def chars(self, t: int) -> tuple[int, int]:
        return self._chars(t)

    def before(self, s: int) -> int:
        """How many tokens start before character s."""
        for c in range(s, self.length):  # characters no token covers (a normalizer dropped them) are skipped
            t = self._token(c)
            if t is not None:
                return t if self._chars(t)[0] >= s else t + 1
        return self.count

    def straddles(self, s: int) -> bool:
        """Whether one token covers both character s - 1 and character s (a merge across that edge)."""
        t = self._token(s) if 0 < s < self.length else None
        return t is not None and self._chars(t)[0] < s


class _Offsets(_Tokens):
    """The same from (start, end) offsets, for ids assembled from several encodings."""

    def __init__(self, offsets: list[tuple]):
        self.count, self.offsets = len(offsets), offsets
        self.starts = np.fromiter((a for a, _ in offsets), dtype=np.int64, count=len(offsets))
        self.ends = np.fromiter((b for _, b in offsets), dtype=np.int64, count=len(offsets))

    def chars(self, t: int) -> tuple[int, int]:
        return self.offsets[t]

    def before(self, s: int) -> int:
        return int(np.searchsorted(self.starts, s, side="left"))

    def straddles(self, s: int) -> bool:
        t = int(np.searchsorted(self.ends, s, side="right"))  # the first token that ends after s
        return t < self.count and self.starts[t] < s


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"the tokenizer ({type(tokenizer).__name__}) has no fast (Rust) backend, which exact "
                        "masking needs for token offsets: save it with a tokenizer.json")
    return backend


def encodings(tokenizer, texts: list[str], as_text: bool = False, offsets: bool = True) -> list:
    """The tokenizer's Encoding of each text, as tokenizer(text, add_special_tokens=False) makes it; with
    as_text=True control-token strings in the texts are encoded as plain text; with offsets=False the ids alone
    are reliable (the cheaper encoding)."""
    backend = _backend(tokenizer)
    previous = backend.encode_special_tokens
    backend.encode_special_tokens = as_text
    try:
        return (backend.encode_batch if offsets else backend.encode_batch_fast)(texts, add_special_tokens=False)
    finally:
        backend.encode_special_tokens = previous


def encode(tokenizer, texts: list[str], as_text: bool = False) -> list[tuple[list[int], list[tuple]]]:
    """(ids, character offsets) of each text (see encodings)."""
    return [(e.ids, e.offsets) for e in encodings(tokenizer, texts, as_text)]


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
        if is_content and info.holds_control(text):
            flush(stretch, False)
            stretch = ""
            flush(text, True)
        else:
            stretch += text
    flush(stretch, False)
    return ids, offsets


def _labels(ids: list[int], tokens: _Tokens, pieces: list, starts: list[int], kinds: bool):
    """Each token's label (its id where its first character is trained text) and, with kinds, its kind: the pieces'
    token ranges, found at the edges where what is trained (or the kind) changes."""
    labels, names = [IGNORE_INDEX] * len(ids), [] if kinds else None
    begin, at = 0, 0
    for p in range(len(pieces)):
        last = p + 1 == len(pieces)
        if not last and pieces[p + 1][2] == pieces[begin][2] and (not kinds or pieces[p + 1][3] == pieces[begin][3]):
            continue
        end = len(ids) if last else tokens.before(starts[p + 1])
        if pieces[begin][2]:
            labels[at:end] = ids[at:end]
        if kinds:
            names += [pieces[begin][3]] * (end - at)
        begin, at = p + 1, end
    return labels, names


def _piece_starts(pieces: list) -> list[int]:
    starts, at = [], 0
    for p in pieces:
        starts.append(at)
        at += len(p[0])
    return starts


class _Reply:
    """A trained reply of an example: its characters [start, end), the tokens [k, m) it trains, its prompt's last
    control token (token j, string anchor) and the text from there to the reply (tail); ok: the ids before it are
    its prompt's own encoding and its edges are token edges."""

    __slots__ = ("turn", "start", "end", "anchor", "ok", "j", "tail", "k", "m")

    def __init__(self, turn, start, end, anchor, ok, j, tail, k, m):
        self.turn, self.start, self.end, self.anchor, self.ok = turn, start, end, anchor, ok
        self.j, self.tail, self.k, self.m = j, tail, k, m


def encode_examples(tokenizer, examples: list, kinds: bool = False) -> list[tuple[list[tuple], Counter]]:
    """The rows (input_ids, labels), with kinds=True (input_ids, labels, kinds), of each example (chat_format's
    Example), and what had to be done for it (counts for the summary).

    Usually one row per example: the encoding of its text. A reply whose prompt's encoding is not a prefix of that
    encoding goes to a row of its own (see the module's docstring).

    Where each reply is trained whole and ends with a control token (the usual case), its tokens are read off the
    control tokens and its prompt's tail, and the text is encoded without offsets (the cheaper encoding);
    otherwise they are read from the offsets, by the rule that a token belongs to where its first character is.
    Both give the same rows (tested: kinds=True reads the offsets)."""
    info = _info(tokenizer)
    count = len(examples)
    texts = ["".join([p[0] for p in e.pieces]) for e in examples]
    starts = [_piece_starts(e.pieces) for e in examples]
    controls = [info.controls(text) for text in texts]
    cut = [_holds_control(info, spans, e.pieces, at) for spans, e, at in zip(controls, examples, starts)]
    ids_of, tokens_of, replies = [None] * count, [None] * count, [None] * count
    quick = [n for n, e in enumerate(examples) if not cut[n] and not kinds and all(p[2] or p[4] is None
                                                                                  for p in e.pieces)]
    for n, encoding in zip(quick, encodings(tokenizer, [texts[n] for n in quick], offsets=False)):
        ids_of[n] = encoding.ids
        replies[n] = _replies_at_controls(info, examples[n].pieces, starts[n], texts[n], controls[n], ids_of[n])
    slow = [n for n in range(count) if not cut[n] and replies[n] is None]
    for n, encoding in zip(slow, encodings(tokenizer, [texts[n] for n in slow])):
        ids_of[n], tokens_of[n] = encoding.ids, _Tokens(encoding, len(texts[n]))
        replies[n] = _replies_at_offsets(info, examples[n].pieces, starts[n], texts[n], ids_of[n], tokens_of[n])
    for n in (n for n in range(count) if cut[n]):  # not checked: a server's encoding makes control tokens of them
        ids, offsets = _encode_cut(tokenizer, examples[n].pieces, info)
        ids_of[n], tokens_of[n], replies[n] = ids, _Offsets(offsets), []
    _check_prompts(tokenizer, info, ids_of, replies)

    out = []
    for n, example in enumerate(examples):
        ids, notes = ids_of[n], Counter()
        failed = [r for r in replies[n] if not r.ok]
        if tokens_of[n] is None:  # each reply trained whole: its tokens [k, m)
            labels = [IGNORE_INDEX] * len(ids)
            for r in replies[n]:
                if r.ok:
                    labels[r.k:r.m] = ids[r.k:r.m]
            rows = [(ids, labels)]
        else:
            gone = {r.turn for r in failed}  # those replies train in rows of their own; here they are context
            pieces = [p if p[4] not in gone else (p[0], p[1], False, p[3], None) for p in example.pieces]
            rows = [_row(ids, tokens_of[n], pieces, starts[n], kinds)]
        last = max((r.turn for r in replies[n]), default=None)
        for r in failed:  # the example's last reply keeps the template's text after it
            end = len(texts[n]) if r.turn == last else r.end
            rows.append(_own_row(tokenizer, texts[n], example.pieces, starts[n], r.turn, r.start, end, r.anchor,
                                 kinds))
            notes["replies given their own example: the prompt's tokens merge with the reply's first ones"] += 1
        if len(rows) > 1 and not any(x != IGNORE_INDEX for x in rows[0][1]):
            rows = rows[1:]  # nothing left to train in the shared row
        if cut[n]:
            notes["examples whose messages hold control-token strings, encoded as plain text"] += 1
        if example.reshaped:
            notes["replies whose surrounding whitespace the template strips (trained as rendered)"] += example.reshaped
        out.append((rows, notes))
    return out


def _reply_bounds(pieces: list, starts: list[int]) -> dict:
    """Each trained reply's (start, end): the characters of its generated text."""
    bounds = {}
    for p, at in zip(pieces, starts):
        turn = p[4]
        if turn is not None:
            bounds[turn] = (bounds[turn][0] if turn in bounds else at, at + len(p[0]))
    return bounds


def _holds_control(info: _Info, spans: list[tuple[int, int]], pieces: list, starts: list[int]) -> bool:
    """Whether a message's text in the example holds a special token's string. Only where one found in the whole
    text reaches into a message's text are those texts searched."""
    for start, end in spans:
        p = bisect.bisect_right(starts, start) - 1
        while p < len(pieces) and starts[p] < end:
            if pieces[p][1]:
                return any(q[1] and info.holds_control(q[0]) for q in pieces)
            p += 1
    return False


def _replies_at_controls(info: _Info, pieces: list, starts: list[int], text: str, spans: list,
                         ids: list[int]) -> list | None:
    """The replies read off the control tokens: the i-th special id of the ids is the i-th special token's string
    in the text; a reply ends with one (its closing), and its first token follows its prompt's tail (checked in
    _check_prompts). None where that does not hold: then the offsets are read."""
    at = np.flatnonzero(info.is_special[np.asarray(ids, dtype=np.int64)]).tolist()
    if len(at) != len(spans):
        return None
    ending = {end: i for i, (_, end) in enumerate(spans)}
    span_starts = [start for start, _ in spans]
    out = []
    for turn, (start, end) in _reply_bounds(pieces, starts).items():
        i = bisect.bisect_left(span_starts, start) - 1  # the prompt's last control token
        if end not in ending or (i >= 0 and spans[i][1] > start):
            return None
        j, a, b = (at[i], *spans[i]) if i >= 0 else (0, 0, 0)
        out.append(_Reply(turn, start, end, text[a:b], True, j, text[a:start], None, at[ending[end]] + 1))
    return out


def _replies_at_offsets(info: _Info, pieces: list, starts: list[int], text: str, ids: list[int],
                        tokens: _Tokens) -> list:
    """The replies read off the tokens' offsets: the tokens that end by its start come before it; ok so far where
    no token crosses its start or its end."""
    out = []
    for turn, (start, end) in _reply_bounds(pieces, starts).items():
        k = tokens.before(start) - tokens.straddles(start)
        m = tokens.before(end) - tokens.straddles(end)
        edges = not tokens.straddles(start) and not tokens.straddles(end) and m >= 1 and tokens.chars(m - 1)[1] == end
        j = k - 1
        while j >= 0 and ids[j] not in info.special_ids:  # the prompt's last control token
            j -= 1
        a, b = tokens.chars(j) if j >= 0 else (0, 0)
        out.append(_Reply(turn, start, end, text[a:b], edges, max(j, 0), text[a:start], k, m))
    return out


def _check_prompts(tokenizer, info: _Info, ids_of: list, replies: list) -> None:
    """Each reply is ok where the ids before it are the tokenizer's encoding of the text before it (its prompt).

    The encoding of the prompt is checked from the prompt's last control token on (its tail): the tokenizer
    encodes the text between control tokens apart, so the ids before that token are the same in both encodings.
    Tails are few (a template's headers) and their encodings are kept."""
    tails = {r.tail for rs in replies for r in rs if r.tail not in info.tails}
    if len(info.tails) + len(tails) > _TAIL_CACHE_LIMIT:
        info.tails.clear()
        tails = {r.tail for rs in replies for r in rs}
    tails = list(tails)
    info.tails.update(zip(tails, (e.ids for e in encodings(tokenizer, tails, offsets=False))))
    for ids, rs in zip(ids_of, replies):
        for r in rs:
            expected = info.tails[r.tail]
            k = r.j + len(expected)
            r.ok = r.ok and ids[r.j:k] == expected and (r.k is None or r.k == k)
            r.k = k if r.k is None else r.k
            r.ok = r.ok and r.m > r.k


def _own_row(tokenizer, text: str, pieces: list, starts, turn: int, start: int, end: int, anchor: str, kinds: bool):
    """A reply in a row of its own: its prompt's encoding, then the reply as the model generates it after it."""
    (context, context_offsets), = encode(tokenizer, [text[:start]])
    if anchor:
        reply, offsets = _continuation(tokenizer, text[start:end], anchor)
    else:
        reply, offsets = encode(tokenizer, [text[start:end]])[0]
    mine = [p if p[4] == turn else (p[0], p[1], False, p[3], None) for p in pieces]
    ids = context + reply
    return _row(ids, _Offsets(context_offsets + [(a + start, b + start) for a, b in offsets]), mine, starts, kinds)


def _row(ids: list[int], tokens: _Tokens, pieces: list, starts: list[int], kinds: bool) -> tuple:
    labels, token_kinds = _labels(ids, tokens, pieces, starts, kinds)
    return (ids, labels, token_kinds) if kinds else (ids, labels)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The index of the first token where two id sequences differ (None where they are equal)."""
    for n, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return n
    return None if len(a) == len(b) else min(len(a), len(b))
