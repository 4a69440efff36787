"""A deterministic, fast stand-in tokenizer and the simulator's output words.

Text is cut by one compiled regex into pieces (a word of at most 6 letters with its leading space, a run of
digits, punctuation, whitespace); each piece's id is a stable hash modulo the vocabulary. English comes out
at roughly 4 characters per token, like a real BPE tokenizer. The module is called ``tokens`` rather than
``tokenizer`` because ``workersim/tokenizer/`` is the HuggingFace tokenizer folder shipped for routers.

Output text is made of words from a small list, one token each, so that the text of an answer tokenizes back
into exactly the ids the simulator generated: a conversation that re-sends the answer hits the blocks cached
from it, as with a real chat template.
"""

from __future__ import annotations

import re
import zlib

VOCAB_SIZE = 50_000

# Special ids live above the hashed vocabulary, so no text can produce them.
BOS = VOCAB_SIZE
MSG_START = VOCAB_SIZE + 1
MSG_SEP = VOCAB_SIZE + 2
MSG_END = VOCAB_SIZE + 3
TOOLS_START = VOCAB_SIZE + 4
TOOLS_END = VOCAB_SIZE + 5
CALL_START = VOCAB_SIZE + 6
CALL_SEP = VOCAB_SIZE + 7
CALL_END = VOCAB_SIZE + 8
CALL_ID = VOCAB_SIZE + 9
NUM_SPECIAL = 10

_PIECE_RE = re.compile(r" ?[^\W\d_]{1,6}| ?\d{1,3}| ?[^\w\s]{1,3}|_+|\s+")

# Short lowercase words (at most 6 letters): each is one token, with or without a leading space.
OUTPUT_WORDS: tuple[str, ...] = (
    "the", "model", "cache", "token", "block", "prefix", "worker", "route", "answer", "simple",
    "result", "value", "query", "system", "user", "reply", "stream", "chunk", "prompt", "sample",
    "data", "node", "queue", "batch", "load", "fast", "slow", "light", "state", "order",
    "with", "from", "into", "over", "under", "after", "before", "while", "about", "there",
    "here", "when", "then", "each", "every", "other", "same", "first", "last", "next",
    "some", "many", "more", "less", "most", "good", "clear", "plain", "small", "large",
    "short", "long", "quick", "ready",
)


class Tokenizer:
    """Text to token ids. Caches piece ids and the ids of whole texts (system prompts and tool lists recur).

    The caches are bounded: when one grows past its limit it is simply cleared.
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        max_pieces: int = 500_000,
        max_text_chars: int = 4_000_000,
    ) -> None:
        self.vocab_size = vocab_size
        self._max_pieces = max_pieces
        self._max_text_chars = max_text_chars
        self._piece_ids: dict[str, int] = {}
        self._text_ids: dict[str, tuple[int, ...]] = {}
        self._text_chars = 0

    def pieces(self, text: str) -> list[str]:
        """The text cut into token pieces; ``"".join(pieces(t)) == t``."""
        return _PIECE_RE.findall(text)

    def piece_id(self, piece: str) -> int:
        pid = self._piece_ids.get(piece)
        if pid is None:
            pid = zlib.crc32(piece.encode()) % self.vocab_size
            if len(self._piece_ids) >= self._max_pieces:
                self._piece_ids.clear()
            self._piece_ids[piece] = pid
        return pid

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        self.extend(out, text)
        return out

    def extend(self, out: list[int], text: str) -> None:
        """Append the ids of ``text`` to ``out``."""
        cached = self._text_ids.get(text)
        if cached is None:
            pieces = _PIECE_RE.findall(text)
            try:
                cached = tuple(map(self._piece_ids.__getitem__, pieces))
            except KeyError:
                cached = tuple([self.piece_id(p) for p in pieces])
            if self._text_chars + len(text) > self._max_text_chars:
                self._text_ids.clear()
                self._text_chars = 0
            self._text_ids[text] = cached
            self._text_chars += len(text)
        out.extend(cached)

    def count(self, text: str) -> int:
        return len(_PIECE_RE.findall(text))


class OutputWords:
    """Deterministic answer text: ``count`` words for a prompt whose hash is ``seed``.

    The first word is capitalised and has no leading space; the others have one. Each word is one token of
    ``Tokenizer``, and the ids returned are what the text re-tokenizes into. Words follow a fixed
    pseudo-random sequence of ``sequence_len`` entries, entered at an offset given by the seed, so that an
    answer is two list slices.
    """

    def __init__(
        self, tokenizer: Tokenizer, words: tuple[str, ...] = OUTPUT_WORDS, sequence_len: int = 4096
    ) -> None:
        n = len(words)
        order = [(i * 37 + (i * i) // 7) % n for i in range(sequence_len)]
        first = [w.capitalize() for w in words]
        rest = [" " + w for w in words]
        self._first_pieces = [first[i] for i in order]
        self._first_ids = [tokenizer.piece_id(first[i]) for i in order]
        self._rest_pieces = [rest[i] for i in order]
        self._rest_ids = [tokenizer.piece_id(rest[i]) for i in order]

    def answer(self, seed: int, count: int) -> tuple[list[str], list[int]]:
        """The text pieces and token ids of an answer of ``count`` tokens."""
        if count <= 0:
            return [], []
        size = len(self._rest_pieces)
        off = seed % size
        pieces = [self._first_pieces[off]]
        ids = [self._first_ids[off]]
        remaining = count - 1
        off += 1
        while remaining > 0:
            off %= size
            end = min(size, off + remaining)
            pieces += self._rest_pieces[off:end]
            ids += self._rest_ids[off:end]
            remaining -= end - off
            off = end
        return pieces, ids
