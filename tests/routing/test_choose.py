"""The routing rule on its own: prefix first, within a bounded load; affinity; KV pressure."""

from __future__ import annotations

from gateway.config import Settings
from gateway.routing.choose import RuleParams, pick
from gateway.routing.explain import decide
from gateway.runtime import router_config

P = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95)
ALL4 = [True] * 4


def test_longest_match_wins_while_load_allows() -> None:
    assert pick([3, 9, 0, 0], [1, 1, 0, 0], [0.1] * 4, ALL4, P, start=0) == (1, False)


def test_a_hot_prefix_spills_once_its_worker_is_over_the_bound() -> None:
    # worker 0 holds the shared prefix and already has 5 requests; mean is 1.75, bound max(2.5, 2)
    chosen, _ = pick([10, 8, 8, 0], [5, 1, 1, 0], [0.1] * 4, ALL4, P, start=0)
    assert chosen in (1, 2)
    # filling requests one by one: a prefix held everywhere alike spreads evenly
    loads = [0.0] * 4
    for _ in range(40):
        i, _ = pick([10, 10, 10, 10], loads, [0.1] * 4, ALL4, P, start=0)
        loads[i] += 1
    assert max(loads) - min(loads) <= 1


def test_prefix_only_on_one_worker_never_takes_everything() -> None:
    loads = [0.0] * 4
    for _ in range(40):
        i, _ = pick([10, 0, 0, 0], loads, [0.1] * 4, ALL4, P, start=0)
        loads[i] += 1
    assert loads[0] <= 1.25 * (40 + 1) / 4 + 1
    assert all(x > 0 for x in loads)


def test_affinity_slack_keeps_a_bound_conversation_but_not_a_new_one() -> None:
    # loads 0 / 0 / 2.5 / 0: least + load slack = 2 excludes worker 2, least + affinity slack 4 keeps it
    wide = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, affinity_slack=4.0)
    loads = [0, 0, 2.5, 0]
    assert pick([0, 0, 9, 0], loads, [0.1] * 4, ALL4, wide, start=0, affinity=2) == (2, True)
    assert pick([0, 0, 9, 0], loads, [0.1] * 4, ALL4, P, start=0, affinity=2)[0] != 2  # without it: moves
    assert pick([0, 0, 9, 0], loads, [0.1] * 4, ALL4, wide, start=0)[0] != 2  # a new one: the load slack
    # past least + affinity slack, the bound conversation moves too
    assert pick([0, 0, 9, 0], [0, 0, 3.5, 0], [0.1] * 4, ALL4, wide, start=0, affinity=2)[0] != 2


def test_affinity_holds_under_the_bound_only() -> None:
    assert pick([9, 0, 0, 0], [0, 0, 0, 0], [0.1] * 4, ALL4, P, start=0, affinity=2) == (2, True)
    chosen, by_affinity = pick([9, 0, 0, 0], [0, 0, 9, 0], [0.1] * 4, ALL4, P, start=0, affinity=2)
    assert chosen == 0 and not by_affinity


def test_kv_pressure_and_exclusions() -> None:
    assert pick([9, 0, 0, 0], [0] * 4, [0.99, 0.1, 0.5, 0.1], ALL4, P, start=0)[0] == 1
    assert pick([9, 0, 0, 0], [0] * 4, [0.99] * 4, ALL4, P, start=0)[0] == 0  # everybody full: ignore KV
    assert pick([9, 5, 0, 0], [0] * 4, [0.1] * 4, [False, True, True, True], P, start=0)[0] == 1
    assert pick([0] * 4, [0] * 4, [0.1] * 4, [False] * 4, P, start=0)[0] == -1


def test_ties_rotate_and_least_loaded_ignores_matches() -> None:
    assert {pick([0] * 4, [0] * 4, [0] * 4, ALL4, P, start=s)[0] for s in range(4)} == {0, 1, 2, 3}
    assert pick([9, 0, 0, 0], [1, 0, 1, 1], [0] * 4, ALL4, P, start=0, prefix=False)[0] == 1


def test_explain_applies_the_affinity_slack_like_the_rule() -> None:
    ids = ["w0", "w1", "w2", "w3"]
    wide = RuleParams(load_factor=1.25, load_slack=2.0, kv_limit=0.95, affinity_slack=4.0)

    def why(rule: RuleParams, bound_to: str | None) -> tuple[str | None, str]:
        _, _, chosen, reason = decide(ids, [0, 0, 9, 0], [0, 0, 2, 0], [0.0, 0.0, 0.5, 0.0], [0.1] * 4,
                                      [0, 0, 4608, 0], rule, bound_to, True)
        return chosen, reason

    chosen, reason = why(wide, "w2")
    assert chosen == "w2" and "within the affinity bound (load 2.5 + 1 <= 4.00)" in reason
    chosen, reason = why(P, "w2")
    assert chosen != "w2" and "over the affinity bound (2.00)" in reason
    assert why(wide, None)[0] != "w2"


def test_the_affinity_slack_setting_reaches_the_rule() -> None:
    assert router_config(Settings()).rule.keep_slack() == 4.0  # the default
    assert router_config(Settings(routing_affinity_slack=3)).rule.keep_slack() == 3.0
    unset = Settings(routing_affinity_slack="")  # an empty variable: the load slack
    assert router_config(unset).rule.keep_slack() == unset.routing_load_slack
