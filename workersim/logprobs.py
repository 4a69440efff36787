"""Deterministic log-probabilities for the simulated answers, in OpenAI's chat and completions shapes."""

from __future__ import annotations

from typing import Any

from workersim.output import coin

_ALTERNATIVES = (" the", " a", " of", " to", " and", " in", " is", " it", " for", " on", " that", " with",
                 " as", " at", " by", " be", " this", " from", " or", " an")


def _logprob(seed: int, i: int) -> float:
    return round(-2.0 * coin(seed, 1000 + i), 4)


def chat_entry(piece: str, seed: int, i: int, top: int) -> dict[str, Any]:
    """One token's entry of ``choices[].logprobs.content``."""
    lp = _logprob(seed, i)
    alternatives = [{"token": piece, "logprob": lp, "bytes": list(piece.encode())}]
    for k in range(1, top):
        alt = _ALTERNATIVES[(seed + i + k) % len(_ALTERNATIVES)]
        alternatives.append({"token": alt, "logprob": round(lp - 0.75 * k, 4), "bytes": list(alt.encode())})
    return {"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": alternatives[:top]}


def completion_logprobs(pieces: list[str], seed: int, top: int, offset: int = 0) -> dict[str, Any]:
    """``choices[].logprobs`` of a text completion for ``pieces`` (``offset``: their first index)."""
    tokens, values, tops, offsets = [], [], [], []
    at = 0
    for n, piece in enumerate(pieces):
        entry = chat_entry(piece, seed, offset + n, max(top, 1))
        tokens.append(piece)
        values.append(entry["logprob"])
        tops.append({t["token"]: t["logprob"] for t in entry["top_logprobs"][:top]} if top else None)
        offsets.append(at)
        at += len(piece)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
