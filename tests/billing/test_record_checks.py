"""A usage record's column checks (``UsageRecord.problems``) against the ledger's column rules, on any
values a record can carry; and its decoding from the usage stream."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.usage_record import UsageRecord
from tests.billing.conftest import make_record

TEXTS = {"request_id": 64, "org_id": 40, "key_id": 40, "end_user": 200, "model": 200, "requested_model": 200,
         "app": 200, "worker": 200, "plan": 100, "status": 32}
INTS = {"prompt_tokens": 63, "cached_tokens": 63, "output_tokens": 63, "reasoning_tokens": 63, "list_ticks": 63,
        "billed_ticks": 63, "started_at_ms": 63, "ttfb_ms": 31, "duration_ms": 31, "http_status": 31}


class Code(enum.IntEnum):  # an int subclass: a valid number, though not a plain int
    OK = 200


def _text_ok(name: str, value: Any) -> bool:
    if value is None and name in ("end_user", "app"):
        return True
    return isinstance(value, str) and len(value) <= TEXTS[name] and "\x00" not in value


def _int_ok(value: Any, bits: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= (1 << bits) - 1


def _valid(r: UsageRecord) -> bool:
    cost = r.provider_cost_ticks
    return (all(_text_ok(n, getattr(r, n)) for n in TEXTS) and all(_int_ok(getattr(r, n), b) for n, b in INTS.items())
            and (cost is None or _int_ok(cost, 63)))


def _text_values(limit: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=3), st.text(min_size=limit - 1, max_size=limit + 1), st.just("a\x00b"),
                     st.none(), st.integers(0, 5), st.booleans())


def _int_values(bits: int) -> st.SearchStrategy[Any]:
    top = (1 << bits) - 1
    return st.one_of(st.integers(0, 10), st.sampled_from([-1, top, top + 1, 1 << 70]), st.booleans(), st.none(),
                     st.just(Code.OK), st.just("7"), st.just(1.0))


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    record = make_record("org_checks", 1)
    changed: dict[str, Any] = {}
    for name in draw(st.sets(st.sampled_from([*TEXTS, *INTS, "provider_cost_ticks"]), max_size=3)):
        if name in TEXTS:
            changed[name] = draw(_text_values(TEXTS[name]))
        else:
            changed[name] = draw(_int_values(INTS.get(name, 63)))
    return dataclasses.replace(record, **changed)


@settings(max_examples=600, deadline=None)
@given(records())
def test_a_record_has_problems_exactly_when_a_column_rule_fails(record: UsageRecord) -> None:
    assert (record.problems() == []) == _valid(record)


def test_the_common_records_pass_and_each_broken_column_is_named() -> None:
    assert make_record("org_checks", 1).problems() == []
    assert dataclasses.replace(make_record("org_checks", 1), end_user=None, app=None).problems() == []
    assert dataclasses.replace(make_record("org_checks", 1), http_status=Code.OK).problems() == []
    found = dataclasses.replace(make_record("org_checks", 1), plan="p" * 101, ttfb_ms=1 << 31).problems()
    assert [p.split(":")[0] for p in found] == ["plan", "ttfb_ms"]


def test_a_record_decodes_as_encoded_in_any_key_order_and_from_before_newer_fields() -> None:
    record = dataclasses.replace(make_record("org_checks", 1), end_user="bob", app="cline", provider_cost_ticks=7)
    assert UsageRecord.decode(record.encode()) == record
    fields = orjson.loads(record.encode())
    assert UsageRecord.decode(orjson.dumps(dict(reversed(fields.items())))) == record
    older = {k: v for k, v in fields.items() if k not in ("app", "provider_cost_ticks")}  # written by an older replica
    assert UsageRecord.decode(orjson.dumps(older)) == dataclasses.replace(record, app=None, provider_cost_ticks=None)
    for bad in (b"[1, 2]", orjson.dumps({**fields, "extra": 1}), orjson.dumps(older | {"org_id": None})[:-1]):
        with pytest.raises((TypeError, ValueError)):  # not a record: the consumer's dead letters take it
            UsageRecord.decode(bad)
