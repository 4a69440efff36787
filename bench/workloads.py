"""Workloads for the routing replay: a synthetic agentic-coding load and the Mooncake conversation trace.

Text is made of short lowercase words (at most 6 letters, each with a leading space), which the
simulator's tokenizer reads as one token each, so token counts are easy to reason about.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xxhash import xxh3_64_intdigest

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TRACE = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
TRACE_FALLBACK = Path("/work/shared/traces/mooncake_conversation_trace.jsonl")


def word(seed: int) -> str:
    n = 2 + seed % 5
    out = []
    for _ in range(n):
        seed, r = divmod(seed, 26)
        out.append(LETTERS[r])
    return " " + "".join(out)


def words(rng: random.Random, n: int) -> str:
    return "".join(word(rng.getrandbits(40)) for _ in range(n))


def block_text(block_id: int, tokens: int) -> str:
    """The same id always gives the same text of ``tokens`` tokens."""
    return "".join(word(xxh3_64_intdigest(f"{block_id}:{j}".encode())) for j in range(tokens))


# --- (b) synthetic agentic coding ------------------------------------------------------------------
@dataclass
class AgenticConfig:
    partners: int = 3
    sessions: int = 32
    turns: int = 20
    system_tokens: int = 1500
    tool_list_tokens: int = 500
    tool_result_tokens: tuple[int, int] = (40, 600)
    answer_tokens: int = 24
    start_spread_s: float = 2.0  # sessions start spread over this many seconds
    think_s: tuple[float, float] = (0.0, 0.05)
    seed: int = 7
    bursts: int = 0  # > 0: sessions start in this many bursts, ``burst_gap_s`` apart, all at once within each
    burst_gap_s: float = 0.0


@dataclass
class Session:
    partner: int
    session_id: str
    start_s: float
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tool_results: list[int] = field(default_factory=list)  # tokens of each turn's tool result


def agentic_sessions(cfg: AgenticConfig) -> list[Session]:
    rng = random.Random(cfg.seed)
    partners = []
    for p in range(cfg.partners):
        system = f"partner {p} coding agent." + words(rng, cfg.system_tokens)
        tools = [{"type": "function", "function": {
            "name": f"tool_{p}_{t}", "description": words(rng, cfg.tool_list_tokens // 6),
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}} for t in range(6)]
        partners.append((system, tools))
    sessions = []
    for s in range(cfg.sessions):
        p = s % cfg.partners
        system, tools = partners[p]
        task = f"task {s}:" + words(rng, 60)
        if cfg.bursts:
            start = (s * cfg.bursts // cfg.sessions) * cfg.burst_gap_s + rng.uniform(0, 0.02)
        else:
            start = rng.uniform(0, cfg.start_spread_s)
        sessions.append(Session(p, f"sess-{cfg.seed}-{s}", start, tools,
                                [{"role": "system", "content": system}, {"role": "user", "content": task}],
                                [rng.randint(*cfg.tool_result_tokens) for _ in range(cfg.turns)]))
    return sessions


def hard_agentic(quick: bool) -> AgenticConfig:
    """The hardest agentic load: four partners with long hot system prompts and tool lists, sessions of
    32 turns (20 quick) whose think time lets other sessions evict them, starting in bursts of eight (six
    quick) sessions at once; a burst arrives while the one before is still running, so the sessions
    alive at once fit the caches together only if they are spread evenly over them."""
    return AgenticConfig(partners=4, sessions=24 if quick else 48, turns=20 if quick else 32, system_tokens=2000,
                         tool_list_tokens=800, tool_result_tokens=(40, 600), answer_tokens=24,
                         think_s=(0.2, 1.2), bursts=4 if quick else 6, burst_gap_s=12.0 if quick else 16.0, seed=11)


def tool_result(session: Session, turn: int) -> str:
    rng = random.Random(xxh3_64_intdigest(f"{session.session_id}:{turn}".encode()))
    return words(rng, session.tool_results[turn])


# --- (a) the Mooncake conversation trace --------------------------------------------------------------
@dataclass
class TraceRequest:
    at_s: float
    prompt: str
    max_tokens: int
    session: str  # the conversation: its first private block (every row shares block 0)


def trace_path() -> Path:
    return TRACE if TRACE.exists() else TRACE_FALLBACK


def mooncake(requests: int, block_tokens: int, duration_s: float, max_output: int = 32,
             offset: int = 0) -> Iterator[TraceRequest]:
    """The first ``requests`` rows (after ``offset``), each 512-token block id as ``block_tokens`` tokens
    of its own text, the clock squeezed so the rows span ``duration_s``."""
    rows = []
    with trace_path().open() as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            if len(rows) >= requests:
                break
            rows.append(json.loads(line))
    t0 = rows[0]["timestamp"]
    span = max(1, rows[-1]["timestamp"] - t0)
    scale = block_tokens / 512
    for row in rows:
        ids = row["hash_ids"]
        last = max(1, round((row["input_length"] - 512 * (len(ids) - 1)) * scale))
        parts = [block_text(b, block_tokens) for b in ids[:-1]]
        parts.append(block_text(ids[-1], min(last, block_tokens)))  # the last block may be partial
        yield TraceRequest((row["timestamp"] - t0) / span * duration_s, "".join(parts),
                           max(1, min(max_output, round(row["output_length"] * scale))),
                           f"conv-{ids[1] if len(ids) > 1 else ids[0]}")
