"""The budget's month clock gives ``month_of`` for every time, across month and year boundaries."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.metering.budget import MonthClock, month_of

_EDGES = [datetime(2026, 12, 31, 23, 59, 59, 999000, UTC).timestamp(), datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
          datetime(2028, 2, 29, 12, tzinfo=UTC).timestamp(), datetime(2028, 3, 1, tzinfo=UTC).timestamp() - 0.001]


@given(st.lists(st.one_of(st.floats(min_value=0, max_value=4_102_444_800), st.sampled_from(_EDGES)), max_size=40))
def test_the_clock_agrees_with_month_of(times: list[float]) -> None:
    clock = MonthClock()
    for t in [*times, *sorted(times), *_EDGES]:
        assert clock.month(t) == month_of(t)
