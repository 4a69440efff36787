"""The replay's per-row figures (bench/replay.py): the moves of conversations between workers."""

from __future__ import annotations

from bench.replay import Rec, Run, Sent, figures


def sent(at: float, worker: str, session: str, prompt: int, cached: int) -> Sent:
    rec = Rec(sent=at, worker=worker, prompt_tokens=prompt, cached_tokens=cached, ttft=0.01, ok=True)
    return Sent(rec, {}, 0, True, session)


def test_moves_count_the_requests_that_left_their_conversations_previous_worker() -> None:
    run = Run([
        sent(0.0, "a", "s1", 100, 0),
        sent(0.1, "b", "s2", 100, 0),
        sent(1.0, "a", "s1", 200, 100),   # stays
        sent(1.1, "a", "s2", 200, 0),     # moves: its whole history recomputed on a
        sent(2.0, "b", "s1", 300, 0),     # moves
        sent(2.1, "a", "s2", 300, 200),   # stays on its new worker
        sent(2.2, "b", "", 50, 0),        # no conversation known: never a move
    ])
    row = figures("r", run, 2, 1.0, 1.0)
    assert row.moves == 2
    uncached = (100 + 100 + 100 + 200 + 300 + 100 + 50)
    assert abs(row.moved_share - (200 + 300) / uncached) < 1e-9
