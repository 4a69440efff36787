"""Every Redis key name the gateway uses, in one place, and every hash tag (the one list of them).

Names carry a hash tag (the part in braces): Redis Cluster hashes only the tag to find a key's slot,
so the keys one script touches share a tag and land in one slot (a script's keys must), while
different organisations, models and stream shards spread over the cluster's masters. The prefix
(``GATEWAY_REDIS_PREFIX``) separates deployments and test runs and is outside the tag.

=====================  ==============================================  ===================================
hash tag               keys                                            one script touching them together
=====================  ==============================================  ===================================
``{lim:ORG}``          an organisation's and its keys' token buckets,  ``limit_reserve``, ``limit_settle``,
                       concurrency leases, settled markers             ``limit_renew``
``{budget:ORG}``       an organisation's and its keys' monthly spend   ``budget_reserve``, ``budget_settle``
                       and reservations, settled markers
``{rt:MODEL}``         one model's prefix index (per worker),          ``prefix_route``, ``prefix_record``,
                       in-flight sets (per worker), affinity hints,    ``prefix_purge``, ``prefix_peek``
                       recent work (per worker; worker group
                       0: all of them with one group)
``{rt#G:MODEL}``       the same for worker group G > 0                 (GATEWAY_ROUTING_GROUPS)
``{usage}``            usage stream shard 0 and its epoch              ``usage_append``; the ledger group
``{usage:I}``          usage stream shard I > 0 and its epoch          (GATEWAY_USAGE_STREAM_SHARDS)
``{billing}``          the Stripe sync lock                            SET NX / compare-and-delete
``{probe}``            reachability probe                              —
=====================  ==============================================  ===================================

With one worker group (the default) a model's routing state is one slot, so one master carries all of
that model's routing scripts; GATEWAY_ROUTING_GROUPS=G splits it over G tags (``routing/groups.py``). The
group number goes before the model name (``rt#3:MODEL``, not ``rt:MODEL:3``) so that no model name can
spell another model's group. See docs/redis-cluster.md for what a routed request costs and how far one
master goes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "gw"

    def probe(self) -> str:
        """A key used only to check reachability."""
        return f"{self.prefix}:{{probe}}"

    # --- rate limits: every key of one organisation shares the hash tag {lim:ORG}, so one script can
    # check and reserve the organisation's and the key's limits atomically (also on Redis Cluster).
    def limit_buckets(self, org_id: str, key_id: str | None = None) -> str:
        """Hash of token-bucket levels (r: requests/min, t: tokens/min, d: tokens/day, ts: last update)
        of an organisation, or of one of its keys."""
        subject = f"key:{key_id}" if key_id else "org"
        return f"{self.prefix}:{{lim:{org_id}}}:{subject}:buckets"

    def limit_leases(self, org_id: str, key_id: str | None = None) -> str:
        """Sorted set of in-flight request ids (score: lease deadline in ms) of an organisation or key."""
        subject = f"key:{key_id}" if key_id else "org"
        return f"{self.prefix}:{{lim:{org_id}}}:{subject}:leases"

    def limit_settled(self, org_id: str, request_id: str) -> str:
        """STRING, set by the first ``limit_settle`` of a request: a replayed settling changes nothing."""
        return f"{self.prefix}:{{lim:{org_id}}}:settled:{request_id}"

    def usage_stream(self, shard: int = 0) -> str:
        """One shard of the durable stream of usage records, read by the ledger writer's consumer group.
        Shard 0 keeps the name of the unsharded stream ({usage}); shard i > 0 is {usage:i}: each shard
        its own hash tag, so the shards spread over a cluster's slots (GATEWAY_USAGE_STREAM_SHARDS)."""
        return f"{self.prefix}:{{usage}}" if shard == 0 else f"{self.prefix}:{{usage:{shard}}}"

    def usage_streams(self, shards: int) -> list[str]:
        return [self.usage_stream(i) for i in range(shards)]

    def usage_epoch(self, shard: int = 0) -> str:
        """A token set when the ledger group is created: when it changes or vanishes, Redis lost the
        stream, and each replica replays the records it spooled (same hash tag as its shard)."""
        return self.usage_stream(shard) + ":epoch"

    def budget(self, org_id: str, month: str, key_id: str = "") -> tuple[str, str]:
        """A monthly budget's spend hash (``spent``, ``reserved``) and its open reservations (a zset);
        an organisation's and its keys' budgets share one hash tag so one script can check both."""
        base = f"{self.prefix}:{{budget:{org_id}}}:{month}" + (f":{key_id}" if key_id else "")
        return base, base + ":res"

    def budget_settled(self, org_id: str, request_id: str) -> str:
        """STRING, set by the first ``budget_settle`` of a request (same hash tag as the budgets it settles)."""
        return f"{self.prefix}:{{budget:{org_id}}}:settled:{request_id}"

    def billing_sync_lock(self) -> str:
        """Held by the one replica running the periodic Stripe sync."""
        return f"{self.prefix}:{{billing}}:sync-lock"

    # --- stored responses (POST /v1/responses, store=true): one organisation's share the hash tag
    # {resp:ORG}, so one script can follow a previous_response_id chain (also on Redis Cluster).
    def response_base(self, org_id: str) -> str:
        """What an organisation's response keys start with; the response id follows."""
        return f"{self.prefix}:{{resp:{org_id}}}:"

    def response(self, org_id: str, response_id: str) -> str:
        """HASH: a stored response (prev, input, output, response), expiring after the retention time."""
        return self.response_base(org_id) + response_id

    def responses_local(self) -> str:
        """The in-process twin's one holder of every stored response (bounded in bytes)."""
        return f"{self.prefix}:{{resp}}:local"

    # --- prefix-aware routing: every key of one model's worker group shares a hash tag, {rt:MODEL} for
    # group 0 (the only one by default), {rt#G:MODEL} for group G > 0 ------------------------------------
    def route_tag(self, model: str, group: int = 0) -> str:
        safe = model.replace("{", "(").replace("}", ")")
        return f"{self.prefix}:{{rt:{safe}}}" if group == 0 else f"{self.prefix}:{{rt#{group}:{safe}}}"

    def routing_prefix(self) -> str:
        """What every routing key starts with, of every group (to clear the local fallback's routing state)."""
        return f"{self.prefix}:{{rt"

    def prefix_index(self, model: str, worker_id: str, group: int = 0) -> str:
        """ZSET: block hash (8 raw bytes) -> last use (ms x 4096 + position order), one per worker."""
        return f"{self.route_tag(model, group)}:idx:{worker_id}"

    def inflight(self, model: str, worker_id: str, group: int = 0) -> str:
        """ZSET: request id -> deadline (ms); the worker's requests in flight from every replica."""
        return f"{self.route_tag(model, group)}:inf:{worker_id}"

    def work(self, model: str, worker_id: str, group: int = 0) -> str:
        """HASH: v -> the blocks of prefill routed to one worker lately (decayed), t -> when v was (ms)
        (GATEWAY_ROUTING_WORK_HALFLIFE_S; a new conversation's first placement counts it)."""
        return f"{self.route_tag(model, group)}:work:{worker_id}"

    def affinity(self, model: str, hint: str, group: int = 0) -> str:
        """STRING: the worker a conversation hint (hashed with the tenant) was last routed to, in the group
        the request was routed in."""
        return f"{self.route_tag(model, group)}:aff:{hint}"
