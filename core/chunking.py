"""Token-aware chunking that keeps structure and exact positions.

Every chunk, with the model's document prefix in front of it, fits the model's context, so the
embedder never cuts anything. Text is split on the largest structure that makes pieces small
enough — Markdown headings, then paragraphs, lines, sentences (including CJK full stops),
words, and for text without spaces (Chinese, Japanese, long identifiers) characters — and the
pieces are packed greedily into chunks of at most ``chunk_tokens`` tokens, with about
``overlap`` tokens repeated between neighbours.

Each chunk is an exact slice of the source: ``source[char_start:char_end] == chunk.text``,
and ``line_start``/``line_end`` (1-based, inclusive) are the lines it spans, for citations.
Tokens are counted with the model's own tokenizer (any ``count_tokens`` callable that returns
tokens per text, special tokens included).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CountTokens = Callable[[Sequence[str]], list[int]]

#: Split points, from the largest structure to the smallest. Each pattern matches the place
#: *between* two pieces; the separator stays with the piece before it.
SEPARATORS: tuple[str, ...] = (
    r"\n(?=#{1,6}\s)",  # before a Markdown heading
    r"\n[ \t]*\n\s*",  # between paragraphs
    r"\n",  # between lines
    r"(?<=[.!?;:])\s+|(?<=[。！？；])",  # between sentences
    r"\s+",  # between words
)
VERSION = "lokal-structure-1"
_HEADING = re.compile(r"#{1,6}\s")
#: A chunk smaller than this (a heading line, a title) is not closed at the next heading.
_MIN_SECTION_TOKENS = 16
#: A piece longer than this many characters per token of the limit is split without being
#: measured whole (a 5 MB line would be one long tokenizer call no check can interrupt).
_MAX_CHARS_PER_TOKEN = 64
#: The most characters handed to the tokenizer in one call by ``_count_all``.
_CALL_CHARS = 256 * 1024


@dataclass(frozen=True)
class TextChunk:
    text: str
    ordinal: int
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    tokens: int


class Chunker:
    """Splits text into chunks that fit a model's context.

    Args:
        count_tokens: tokens per text with the model's tokenizer (special tokens included),
            e.g. ``Embedder.count_tokens``.
        context: the most tokens one embedded text may have (the model's context).
        prefix: the document prefix the embedder puts in front of every chunk.
        chunk_tokens: target chunk size in tokens (at most what fits the context).
        overlap: tokens repeated from the end of one chunk at the start of the next.
    """

    def __init__(
        self,
        count_tokens: CountTokens,
        context: int,
        *,
        prefix: str = "",
        chunk_tokens: int | None = None,
        overlap: int = 32,
    ) -> None:
        self._count = count_tokens
        self.specials = count_tokens([""])[0]
        prefix_tokens = count_tokens([prefix])[0] - self.specials if prefix else 0
        room = context - self.specials - prefix_tokens
        if room < 8:
            msg = f"a context of {context} tokens leaves {room} for text after the prefix"
            raise ValueError(msg)
        self.context = context
        self.prefix = prefix
        self.budget = min(chunk_tokens or room, room)
        self._prefix_tokens = prefix_tokens
        #: The most tokens ``prefix + chunk`` may have, special tokens included.
        self.limit = min(context, self.budget + prefix_tokens + self.specials)
        if overlap < 0 or overlap >= self.budget:
            msg = f"overlap must be in 0..{self.budget - 1} tokens, got {overlap}"
            raise ValueError(msg)
        self.overlap = overlap
        self._check: Callable[[], None] = _nothing

    def settings(self) -> dict[str, object]:
        return {
            "chunker": VERSION,
            "chunk_tokens": self.budget,
            "overlap": self.overlap,
            "context": self.context,
            "prefix": self.prefix,
        }

    def _count_all(self, texts: list[str]) -> list[int]:
        """Counts of many texts, in calls of at most :data:`_CALL_CHARS` characters, with a
        check between calls."""
        out: list[int] = []
        i = 0
        while i < len(texts):
            self._check()
            j, size = i, 0
            while j < len(texts) and (j == i or size + len(texts[j]) <= _CALL_CHARS):
                size += len(texts[j])
                j += 1
            out.extend(self._count(texts[i:j]))
            i = j
        return out

    def _measure(self, piece: str) -> tuple[bool, int]:
        """Whether ``prefix + piece`` fits (exactly, by the tokenizer), and the piece's tokens."""
        n = self._count([self.prefix + piece])[0]
        return n <= self.limit, n - self._prefix_tokens - self.specials

    def chunks(self, text: str, check: Callable[[], None] | None = None) -> list[TextChunk]:
        """The chunks of ``text``. ``check`` is called every few thousand characters of work;
        what it raises (a time limit, a stop request) ends the call."""
        self._check = check or _nothing
        try:
            return self._chunks(text)
        finally:
            self._check = _nothing

    def _chunks(self, text: str) -> list[TextChunk]:
        spans = self._spans(text, 0, len(text), 0)
        groups = self._pack(text, spans)
        out: list[TextChunk] = []
        line_start, counted = 1, 0  # lines before ``counted``: counted once, left to right
        for start, end in self._fit(text, groups):
            start, end = _trim(text, start, end)
            if start >= end:
                continue
            piece = text[start:end]
            line_start += text.count("\n", counted, start)
            counted = start
            out.append(
                TextChunk(
                    piece, len(out), start, end, line_start, line_start + piece.count("\n"), 0
                )
            )
        counts = self._count_all([self.prefix + c.text for c in out])
        return [
            TextChunk(c.text, c.ordinal, c.char_start, c.char_end, c.line_start, c.line_end, n)
            for c, n in zip(out, counts, strict=True)
        ]

    # ---- splitting ---------------------------------------------------------------------------

    def _spans(
        self, text: str, start: int, end: int, level: int, total: int | None = None
    ) -> list[tuple[int, int, int]]:
        """(start, end, tokens) pieces of ``text[start:end]``, each within the budget.
        ``total``: the piece's measured count (prefix and special tokens included), if known;
        a piece of more than :data:`_MAX_CHARS_PER_TOKEN` characters per token of the limit is
        split without being measured whole.

        Linear in the piece's length: each level measures its pieces in one batch, and only
        the pieces that do not fit go down a level."""
        if start >= end:
            return []
        if total is None and end - start <= self.limit * _MAX_CHARS_PER_TOKEN:
            total = self._count_all([self.prefix + text[start:end]])[0]
        if total is not None and total <= self.limit:
            return [(start, end, total - self._prefix_tokens - self.specials)]
        while level < len(SEPARATORS):
            cuts = [
                m.end()
                for m in re.finditer(SEPARATORS[level], text[start:end])
                if 0 < m.end() < end - start
            ]
            if cuts:
                bounds = [start, *(start + c for c in cuts), end]
                pieces = [(a, b) for a, b in itertools.pairwise(bounds) if a < b]
                out: list[tuple[int, int, int]] = []
                for (a, b), n in zip(pieces, self._counts_of(text, pieces), strict=True):
                    out.extend(self._spans(text, a, b, level + 1, n))
                return out
            level += 1
        return self._by_characters(text, start, end, total)

    def _counts_of(self, text: str, pieces: list[tuple[int, int]]) -> list[int | None]:
        """Measured counts of pieces; None for a piece too long to fit whatever its text."""
        most = self.limit * _MAX_CHARS_PER_TOKEN
        short = [(a, b) for a, b in pieces if b - a <= most]
        counts = iter(self._count_all([self.prefix + text[a:b] for a, b in short]))
        return [next(counts) if b - a <= most else None for a, b in pieces]

    def _by_characters(
        self, text: str, start: int, end: int, total: int | None
    ) -> list[tuple[int, int, int]]:
        """Cut a piece with no usable separator (CJK, a long identifier, base64) by length.

        Each cut is the longest prefix that fits, searched outward from a guess (the last
        cut's length; at first the piece's characters per token times the budget), so one cut
        costs a few measures of about one chunk's length, whatever the piece's length: linear
        overall (a search over the whole remaining piece made a 200k-character line cost 88 s).
        """
        out = []
        guess = max(1, (end - start) * self.budget // max(total or end - start, 1))
        while start < end:
            self._check()
            size, n = self._longest_fit(text, start, end - start, guess)
            out.append((start, start + size, n))
            start += size
            guess = size
        return out

    def _longest_fit(self, text: str, start: int, room: int, guess: int) -> tuple[int, int]:
        """A longest ``k`` in 1..room with ``text[start:start + k]`` fitting (1 if none does),
        and its tokens. Interpolates on characters per token from ``guess`` (one or two
        measures on text of an even shape), then bisects what is left: at most a few dozen
        measures, each of about ``k`` characters."""
        target = self.limit - self._prefix_tokens - self.specials  # text tokens that fit
        lo, lo_n, hi = 0, 0, room + 1  # text[:lo] fits (0: none known), text[:hi] does not
        k = max(1, min(room, guess))
        for probe in itertools.count():
            ok, n = self._measure(text[start : start + k])
            if ok:
                lo, lo_n = k, n
                if n >= target or k == room:
                    break  # full, or the whole rest fits
            else:
                hi = k
            if hi - lo <= 1:
                break
            if probe < 4:  # the next guess: where the text's own density says target falls
                k = round(k + (target - n) * k / max(n, 1))
            else:
                k = (lo + hi) // 2
            k = min(max(k, lo + 1), hi - 1)
        if lo == 0:  # not even one character fits (never, with the room the context leaves)
            return 1, self._measure(text[start : start + 1])[1]
        return lo, lo_n

    # ---- packing -----------------------------------------------------------------------------

    def _pack(
        self, text: str, spans: list[tuple[int, int, int]]
    ) -> list[list[tuple[int, int, int]]]:
        """Greedy packing of consecutive spans, with an overlap of trailing spans. A Markdown
        heading starts a new chunk unless the current one is tiny (sections stay
        whole where they can), and is not overlapped into."""
        groups: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        size = 0
        for span in spans:
            section = _HEADING.match(text, span[0]) is not None and (
                span[0] == 0 or text[span[0] - 1] == "\n"
            )
            full = size + span[2] > self.budget
            if current and (full or (section and size >= _MIN_SECTION_TOKENS)):
                groups.append(current)
                carry: list[tuple[int, int, int]] = []
                carried = 0
                for prev in reversed(current if not section else []):
                    if (
                        carried + prev[2] > self.overlap
                        or carried + prev[2] + span[2] > self.budget
                    ):
                        break
                    carry.insert(0, prev)
                    carried += prev[2]
                if len(carry) == len(current):  # never repeat a whole chunk
                    carry, carried = [], 0
                current, size = carry, carried
            current.append(span)
            size += span[2]
        if current:
            groups.append(current)
        return groups

    def _fit(self, text: str, groups: list[list[tuple[int, int, int]]]) -> list[tuple[int, int]]:
        """Check each packed chunk with a real count (token counts are not exactly additive)
        and split any that does not fit."""
        out: list[tuple[int, int]] = []
        pending = list(groups)
        while pending:
            counts = self._count_all([self.prefix + text[g[0][0] : g[-1][1]] for g in pending])
            nxt = []
            for group, n in zip(pending, counts, strict=True):
                if n <= self.limit or len(group) == 1:  # one span was measured exactly
                    out.append((group[0][0], group[-1][1]))
                else:
                    half = len(group) // 2
                    nxt.extend([group[:half], group[half:]])
            pending = nxt
        return sorted(out)


def _nothing() -> None:
    return None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
