"""The Router: prefix-cache-aware, load-aware choice of a worker, under one of the policies of
``policies.py`` (``prefix_aware`` by default).

Hot path of ``prefix_aware``: ``plan`` hashes the prompt (``prefix.py``), sets the tenant's
``cache_salt`` on the forwarded body, and queues ONE script call (``prefix_route``) in the request's
pre-request round trip. The script returns every candidate's matched prefix and shared in-flight count,
applies the rule of ``choose.py`` and reserves an in-flight slot for the worker it picked, atomically,
so replicas never race for the same idle worker. ``choose`` takes that pick (on a retry it applies the
same rule locally to the returned figures, without a shared reservation). ``finish`` queues
``prefix_record``: release the slot, correct the index from the cached tokens the worker reported,
record the worker for the request's blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xxhash import xxh3_64_hexdigest

from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.pipeline.request import CHAT, PromptScan
from gateway.routing.chains import HashChains
from gateway.routing.choose import RuleParams
from gateway.routing.explain import PEEK, Decision, decide
from gateway.routing.groups import RoutingGroups
from gateway.routing.index import PURGE, RECORD, ROUTE
from gateway.routing.policies import Choice, PrefixAware, RouteNote, make_policy
from gateway.routing.pool import WorkerPool
from gateway.routing.prefix import (
    PrefixKey,
    bytes_in_blocks,
    chat_canonical,
    completion_bytes,
    root_hash,
)
from gateway.routing.stats import RoutingStats
from gateway.routing.worker import Worker
from gateway.state.base import RoundTrip, StateStore, StoreUnavailable
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState

log = logging.getLogger("gateway.routing")

_HINT_HEADERS = ("x-grok-conv-id", "x-session-id")
_HINT_FIELDS = ("prompt_cache_key", "user")
_NOTE = "route"


@dataclass(frozen=True)
class RouterConfig:
    policy: str = PrefixAware.name
    block_bytes: int = 512
    max_blocks: int = 1024
    rule: RuleParams = field(default_factory=RuleParams)
    default_kv_tokens: int = 500_000
    # Canonical prompt bytes per token, to size a worker's index from its KV tokens and to turn the load
    # cost into blocks; 0: measured, the running mean of canonical bytes / reported prompt tokens over
    # the responses (4 until the first arrives). A guess that is too small makes the index forget what
    # the worker still holds (docs/routing.md, "Index sized from measured bytes per token").
    bytes_per_token: float = 4.0
    feedback_ratio: float = 0.5
    inflight_ttl_ms: int = 300_000
    affinity_ttl_ms: int = 1_800_000
    index_ttl_ms: int = 86_400_000
    # A matched prefix used less than this long ago keeps its scores (prefix_route writes only the new blocks).
    index_refresh_ms: int = 1_000
    # Prefill tokens one request in flight is worth; 0: adaptive, load_cost_share x the running mean
    # prompt length (clamped to [16, 4000] tokens; 1000 until the first answers arrive).
    load_cost_tokens: float = 0.0
    load_cost_share: float = 0.2
    # Without a hint, a chat conversation is known by its opening (the head of prefix.chat_canonical) and keeps its
    # worker like a hinted one (docs/routing.md has the figures).
    infer_sessions: bool = True
    # Worker groups a model's routing state is split over (routing/groups.py); 1: one slot per model.
    groups: int = 1
    group_fresh_ms: float = 2000.0  # a group's load figures older than this no longer count
    # Every routed request adds its predicted prefill (blocks) to its worker's recent work, halved every
    # this long; a new conversation's first placement counts it (0: off; docs/routing.md).
    work_halflife_ms: int = 60_000


def conversation_hint(ex: Exchange) -> str | None:
    """The client's explicit conversation key: the headers first, then the body's fields."""
    return hint_of(ex.headers, ex.request.body)


def hint_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    for name in _HINT_HEADERS:
        value = headers.get(name)
        if value:
            return value
    for name in _HINT_FIELDS:
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class PrefixRouter:
    def __init__(
        self,
        pool: WorkerPool,
        keys: KeySpace,
        local: MemoryState,
        shared: StateStore,
        config: RouterConfig | None = None,
        stats: RoutingStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._local = local
        self._shared = shared
        self.config = config or RouterConfig()
        self.stats = stats or RoutingStats()
        self.policy = make_policy(self.config.policy)
        self._rng = rng or random.Random()
        self._turn = 0
        self._mean_prompt = 5000.0  # running mean of reported prompt tokens (adaptive load cost)
        self._bytes_per_token = self.config.bytes_per_token or 4.0  # measured when the setting is 0
        self.stats.bytes_per_token = self._bytes_per_token
        self._tasks: set[asyncio.Task[None]] = set()
        self._chains = HashChains()  # recent conversations' block hashes: a new turn hashes what it adds
        self.groups = RoutingGroups(self.config.groups, self.config.rule, self.config.group_fresh_ms)
        pool.listeners.append(self._on_worker_event)

    # --- the Router protocol -----------------------------------------------------------------------
    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        note = ex.notes.get(_NOTE)
        if note is None:  # planned once, even when the round trip is replayed on the local store
            note = ex.notes[_NOTE] = self._prepare(ex)
        if not self.policy.scripted:
            return
        candidates = self._pool.candidates(ex.request.model)
        if not candidates:
            return
        cfg = self.config
        model = ex.request.model
        group, candidates = self._group(note, candidates)
        note.ids = [w.id for w in candidates]
        keys = [self._keys.affinity(model, note.hint or "-", group)]
        prefix = self.policy.prefix
        args: list[Any] = [
            note.key.hashes if prefix else b"",
            "1" if prefix else "0",
            cfg.rule.load_factor,
            cfg.rule.load_slack,
            cfg.rule.kv_limit,
            self._load_cost(),
            self._next_turn() % len(candidates),
            ex.request_id,
            cfg.inflight_ttl_ms,
            cfg.affinity_ttl_ms,
            "1" if note.hint else "0",
            cfg.index_ttl_ms,
            cfg.index_refresh_ms,
            cfg.rule.keep_slack(),
            "1" if note.opens else "0",
            cfg.work_halflife_ms,
            cfg.rule.work_weight,
        ]
        for w in candidates:
            keys.append(self._keys.prefix_index(model, w.id, group))
            keys.append(self._keys.inflight(model, w.id, group))
            args.extend((w.id, w.metrics.get("waiting", 0.0), w.metrics.get("kv", 0.0), self.index_bound(w)))
        if cfg.work_halflife_ms > 0:  # the recent work per candidate (the chosen one's grows)
            keys.extend(self._keys.work(model, w.id, group) for w in candidates)
        note.result = trip.call(ROUTE, keys, args)

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        """Note which worker prefix_route reserved an in-flight slot on, before any stage may refuse the
        request: a refused request must release that slot in ``finish`` too."""
        note: RouteNote | None = ex.notes.get(_NOTE)
        if note is None or note.result < 0 or note.reserved is not None or note.result >= len(results):
            return
        row = results[note.result]
        chosen = int(row[0])
        if 0 <= chosen < len(note.ids):
            note.reserved = note.ids[chosen]
        if self.groups.count > 1:
            n = len(note.ids)
            self.groups.saw(note.ids, [int(f) for f in row[4 + n:4 + 2 * n]], chosen)

    def choose(
        self, ex: Exchange, results: list[Any], candidates: list[Worker], exclude: Collection[str]
    ) -> Worker | None:
        self._track_degraded(ex.degraded)
        allowed = [w for w in candidates if w.id not in exclude]
        if not allowed:
            return None
        note: RouteNote | None = ex.notes.get(_NOTE)
        if exclude:
            self.stats.retries += 1
        else:
            self.stats.requests += 1
            if ex.degraded:
                self.stats.local_fallbacks += 1
        if note is None:
            return allowed[self._next_turn() % len(allowed)]
        note.chosen = self.policy.choose(
            Choice(note, results, candidates, exclude, self._next_turn, self._rule, self.stats, self._rng)
        )
        return note.chosen

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        note: RouteNote | None = ex.notes.get(_NOTE)
        if note is None or not self.policy.scripted:
            return
        worker = note.chosen if ex.worker is not None else None
        model = ex.request.model
        key = note.key
        if worker is None:  # refused by a stage (or no worker answered): only release the reserved slot
            if note.reserved is not None:
                note.settle_result = trip.call(
                    RECORD,
                    [self._index(model, note.reserved), self._inflight(model, note.reserved)],
                    [b"", 0, ex.request_id, "", "0", self.config.index_ttl_ms],
                )
            return
        usage = ex.usage or {}
        prompt_tokens = usage.get("prompt_tokens")
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        threshold = ""
        predicted = note.predicted_blocks
        if isinstance(prompt_tokens, int) and prompt_tokens > 0 and key.total_bytes > 0:
            per_byte = prompt_tokens / key.total_bytes  # tokens per canonical byte, for this request
            self.stats.prompt_tokens += prompt_tokens
            self._mean_prompt += (prompt_tokens - self._mean_prompt) / 64
            if self.config.bytes_per_token <= 0:
                self._bytes_per_token += (key.total_bytes / prompt_tokens - self._bytes_per_token) / 64
                self.stats.bytes_per_token = self._bytes_per_token
            predicted_tokens = int(bytes_in_blocks(predicted, key.block_bytes) * per_byte)
            self.stats.predicted_cached_tokens += min(prompt_tokens, predicted_tokens)
            if isinstance(cached, int):
                self.stats.reported_cached_tokens += cached
                if predicted > 0 and cached < predicted_tokens * self.config.feedback_ratio:
                    self.stats.feedback_corrections += 1
                    if worker.id == note.reserved:
                        threshold = note.last_use
        # prefix_route recorded the reserved worker; a retry that went elsewhere is recorded here
        record = ex.status == 200 and self.policy.prefix and note.reserved != worker.id
        if note.reserved is None and not record:
            return
        holder = note.reserved or worker.id
        if self.groups.of(holder) != self.groups.of(worker.id):  # a retry outside the group: two slots
            trip.call(RECORD, [self._index(model, holder), self._inflight(model, holder)],
                      [b"", 0, ex.request_id, "", "0", self.config.index_ttl_ms])
            holder = worker.id
        note.settle_result = trip.call(
            RECORD,
            [self._index(model, worker.id), self._inflight(model, holder)],
            [
                key.hashes,
                self.index_bound(worker),
                ex.request_id,
                threshold,
                "1" if record else "0",
                self.config.index_ttl_ms,
            ],
        )

    def settled(self, ex: Exchange, results: list[Any]) -> None:
        """The post-request round trip's results (entries dropped as stale, evicted by the bound)."""
        if ex.worker is None:
            return
        self.stats.settled += 1
        note: RouteNote | None = ex.notes.get(_NOTE)
        if note is None or not 0 <= note.settle_result < len(results):
            return
        stale, evicted = results[note.settle_result]
        self.stats.stale_entries_dropped += int(stale)
        self.stats.index_evictions += int(evicted)

    # --- workers that went away or restarted --------------------------------------------------------
    async def purge(self, worker: Worker) -> int:
        """Drop the worker's index, in-flight entries and recent work for every model it served, shared and
        local."""
        dropped = 0
        for model in worker.models:
            keys = [self._index(model, worker.id), self._inflight(model, worker.id), self._work(model, worker.id)]
            dropped += int(await self._local.run(PURGE, keys, []))
            if self._shared is not self._local:
                try:
                    dropped += int(await self._shared.run(PURGE, keys, []))
                except StoreUnavailable as exc:
                    log.warning("could not purge worker %s from the shared index: %s", worker.id, exc)
        self.stats.worker_purges += 1
        self.stats.purged_entries += dropped
        return dropped

    async def drain(self) -> None:
        """Wait for pending purges (shutdown and tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_worker_event(self, event: str, worker: Worker) -> None:
        log.info("worker %s %s: forgetting its prefix index", worker.id, event)
        task = asyncio.get_running_loop().create_task(self._purge_logged(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _purge_logged(self, worker: Worker) -> None:
        dropped = await self.purge(worker)
        log.info("worker %s: %d index entries dropped", worker.id, dropped)

    # --- internals ---------------------------------------------------------------------------------
    def _prepare(self, ex: Exchange) -> RouteNote:
        principal = ex.principal
        request = ex.request
        prompt, request.prompt = request.prompt, None  # hashed now: its bytes are not held for the request's life
        note = self.note_for(principal, request.body, ex.headers, request.kind == CHAT, request.model, prompt)
        if principal.cache_isolation:
            ex.set_fields({"cache_salt": note.salt})
        return note

    def note_for(self, principal: Principal, body: Mapping[str, Any], headers: Mapping[str, str], chat: bool,
                 model: str, prompt: PromptScan | None = None) -> RouteNote:
        """The request's salt, conversation hint and prefix key (the request path and ``explain``);
        ``prompt``: the chat adapter's canonical bytes of ``body``, where it made them."""
        client_salt = body.get("cache_salt")
        client_salt = client_salt if isinstance(client_salt, str) else ""
        if principal.cache_isolation:
            salt = principal.cache_salt + (":" + client_salt if client_salt else "")
        else:
            salt = client_salt
        hint = hint_of(headers, body)
        cfg = self.config
        opening: bytes | memoryview | None = None
        data: bytes = b""
        opening_len = 0
        if chat and (self.policy.prefix or (hint is None and cfg.infer_sessions)):  # hashed, or a session inferred
            data, opening_len = (prompt.canonical, prompt.opening) if prompt is not None else chat_canonical(body)
            opening = memoryview(data)[:opening_len] if opening_len else None
        elif self.policy.prefix:
            data = completion_bytes(body)
        if self.policy.prefix:
            hashes = self._chains.hashes(data, opening_len, root_hash(model, salt), cfg.block_bytes, cfg.max_blocks)
            key = PrefixKey(hashes, len(data), cfg.block_bytes)
        else:
            key = PrefixKey(b"", 0, cfg.block_bytes)
        # may open a conversation: an explicit hint (the script knows whether it is bound), or an inferred
        # session's first turn (its opening is the whole prompt: no answer yet; from the second turn on
        # its key is new but its first turn's worker holds its prefix)
        opens = hint is not None
        if hint is None and opening is not None and cfg.infer_sessions:
            hint = "\x00opening " + xxh3_64_hexdigest(opening)
            opens = len(opening) == len(data)
        hint_key = xxh3_64_hexdigest(f"{principal.org_id}\x00{hint}".encode()) if hint else None
        return RouteNote(key=key, salt=salt, hint=hint_key, opens=opens)

    async def explain(self, principal: Principal, body: Mapping[str, Any], headers: Mapping[str, str], chat: bool,
                      model: str) -> Decision:
        """What the rule would decide for this request now, and why (read-only: ``explain.py``)."""
        note = self.note_for(principal, body, headers, chat, model)
        group, candidates = self._group(note, self._pool.candidates(model), turn=self._turn)
        cfg = self.config
        rule = replace(cfg.rule, load_cost=self._load_cost())
        keys = [self._keys.affinity(model, note.hint or "-", group)]
        for w in candidates:
            keys.append(self._keys.prefix_index(model, w.id, group))
            keys.append(self._keys.inflight(model, w.id, group))
        halflife = cfg.work_halflife_ms if note.hint else 0
        if halflife > 0:
            keys.extend(self._keys.work(model, w.id, group) for w in candidates)
        n = len(candidates)
        prefix = self.policy.prefix
        bound_to: str | None = None
        matches: Sequence[int] = [0] * n
        flights: Sequence[int] = [0] * n
        work: list[float] | None = None
        if candidates and self.policy.scripted:
            store = self._local if self.stats.degraded else self._shared
            out = await store.run(PEEK, keys, [note.key.hashes if prefix else b"", "1" if prefix else "0",
                                               "1" if note.hint else "0", n, halflife])
            raw = out[0].decode() if isinstance(out[0], bytes) else str(out[0] or "")
            bound_to = raw or None
            matches = [int(m) for m in out[1:1 + n]]
            flights = [int(f) for f in out[1 + n:1 + 2 * n]]
            if halflife > 0 and note.opens and bound_to is None:  # the first placement, by recent work
                work = [float(v) for v in out[1 + 2 * n:1 + 3 * n]]  # text or bytes
        bound, rows, chosen, reason = decide(
            [w.id for w in candidates], matches, flights, [w.metrics.get("waiting", 0.0) for w in candidates],
            [w.metrics.get("kv", 0.0) for w in candidates],
            [bytes_in_blocks(m, note.key.block_bytes) for m in matches], rule, bound_to, prefix, work)
        if not self.policy.scripted:
            reason = f"policy {self.policy.name} does not use the shared index; " + reason
        if self.groups.count > 1:
            reason = f"worker group {group} of {self.groups.count} ({n} of its workers serve the model); " + reason
        return Decision(self.policy.name, note.key.blocks, note.key.total_bytes, rule.load_cost, rule.load_factor,
                        rule.load_slack, rule.keep_slack(), rule.kv_limit, bound, note.hint is not None, bound_to,
                        cfg.work_halflife_ms / 1000, rule.work_weight,
                        chosen, reason, rows)

    def _group(self, note: RouteNote, candidates: list[Worker], turn: int | None = None) -> tuple[int, list[Worker]]:
        """The worker group this request is routed in and its candidates (all of them with one group)."""
        if self.groups.count == 1:
            return 0, candidates
        key = note.key
        seed = key.block(0) if key.blocks else note.hint.encode() if note.hint else None
        choice = self.groups.choose(candidates, seed, self._next_turn() if turn is None else turn)
        if choice.spilled and turn is None:
            self.stats.group_spills += 1
        return choice.group, choice.workers

    def _index(self, model: str, worker_id: str) -> str:
        return self._keys.prefix_index(model, worker_id, self.groups.of(worker_id))

    def _inflight(self, model: str, worker_id: str) -> str:
        return self._keys.inflight(model, worker_id, self.groups.of(worker_id))

    def _work(self, model: str, worker_id: str) -> str:
        return self._keys.work(model, worker_id, self.groups.of(worker_id))

    def _rule(self) -> RuleParams:
        """The rule with the current load cost (only a retry or a changed pool applies it here: the
        script applied it to the first choice)."""
        return replace(self.config.rule, load_cost=self._load_cost())

    def _load_cost(self) -> float:
        """Blocks of prefill one request in flight is worth (see RouterConfig.load_cost_tokens)."""
        cfg = self.config
        tokens = cfg.load_cost_tokens
        if tokens <= 0:
            tokens = min(4000.0, max(16.0, cfg.load_cost_share * self._mean_prompt))
        self.stats.load_cost_tokens = tokens
        self.stats.bytes_per_token = self._bytes_per_token
        return tokens * self._bytes_per_token / cfg.block_bytes

    def _next_turn(self) -> int:
        """Ties go to the first worker of a rotation that advances on every request."""
        self._turn += 1
        return self._turn

    def index_bound(self, worker: Worker) -> int:
        cfg = self.config
        kv_tokens = worker.metrics.get("kv_tokens") or cfg.default_kv_tokens
        return max(16, int(kv_tokens * self._bytes_per_token / cfg.block_bytes))

    def _track_degraded(self, degraded: bool) -> None:
        if degraded == self.stats.degraded:
            return
        self.stats.degraded = degraded
        if degraded:
            log.warning("routing on this replica's local prefix index: the shared store is unreachable")
        else:
            log.warning("the shared store is back: routing on the shared prefix index again")
            prefix = self._keys.routing_prefix()
            for key in [k for k in self._local.keys() if k.startswith(prefix)]:  # noqa: SIM118
                self._local.delete(key)
