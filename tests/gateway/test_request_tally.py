"""The request path's tally exposes exactly what observing each value on prometheus-client would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.observability import request_tally
from gateway.observability.request_tally import RequestTally

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _metrics() -> tuple[CollectorRegistry, Counter, Counter, Histogram]:
    registry = CollectorRegistry()
    labelled = Counter("t_requests_total", "r", ["model", "status"], registry=registry)
    bare = Counter("t_fallbacks_total", "f", registry=registry)
    latency = Histogram("t_latency_seconds", "l", ["model"], buckets=BUCKETS, registry=registry)
    return registry, labelled, bare, latency


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the ``_created`` timestamps (they say when a child was first used)."""
    return {(s.name, tuple(sorted(s.labels.items())), s.value) for metric in registry.collect()
            for s in metric.samples if not s.name.endswith("_created")}


values = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.one_of(
    st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=100, allow_nan=False))), max_size=50)


@settings(max_examples=60, deadline=None)
@given(values)
def test_a_flushed_tally_exposes_what_direct_observation_does(seen: list[tuple[str, float]]) -> None:
    direct, d_labelled, d_bare, d_latency = _metrics()
    tallied, t_labelled, t_bare, t_latency = _metrics()
    tally = RequestTally([t_labelled, t_bare], [t_latency])
    for model, value in seen:  # values on the bucket bounds included: a bound is inclusive (le)
        d_labelled.labels(model, "200").inc()
        d_bare.inc(2)
        d_latency.labels(model).observe(value)
        tally.inc(0, (model, "200"))
        tally.inc(1, (), 2)
        tally.observe(0, (model,), value)
    assert samples(tallied) != samples(direct) or not seen  # nothing reached the metrics yet
    tally.flush()
    assert samples(tallied) == samples(direct)
    tally.flush()  # a second flush adds nothing
    assert samples(tallied) == samples(direct)


def test_the_request_path_flushes_every_so_many_observations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(request_tally, "FLUSH_EVERY", 3)
    registry, labelled, bare, latency = _metrics()
    tally = RequestTally([labelled, bare], [latency])
    for _ in range(2):
        tally.observe(0, ("a",), 0.5)
    assert registry.get_sample_value("t_latency_seconds_count", {"model": "a"}) is None
    tally.observe(0, ("a",), 0.5)
    assert registry.get_sample_value("t_latency_seconds_count", {"model": "a"}) == 3
    assert registry.get_sample_value("t_latency_seconds_bucket", {"model": "a", "le": "1.0"}) == 3
    assert registry.get_sample_value("t_latency_seconds_bucket", {"model": "a", "le": "0.1"}) == 0
