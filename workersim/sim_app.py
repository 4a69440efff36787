"""The simulator's raw ASGI application: a dict dispatch on (method, path), no framework.

OpenAI / vLLM: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics``, ``GET /version``, ``POST /reset_prefix_cache``.
SGLang: ``GET /server_info`` and ``/get_server_info``, ``GET /model_info`` and ``/get_model_info``,
``GET /get_load``, ``GET /health_generate``, ``POST /flush_cache``.
Control (tests and demos): ``POST /sim/health`` ``{"healthy": false}``, ``POST /sim/faults``
``{"error_rate", "drop_rate", "slow_start_s"}``, ``POST /sim/reset`` (clear the cache, as a restart would),
``GET /sim/state``.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from gateway.asgi import Receive, Scope, Send
from workersim.generate import Generator
from workersim.kvcache import PrefixCache
from workersim.scheduler import Engine
from workersim.sim_http import JSON_TYPE, Disconnected, Headers, error_body, read_body, send_response
from workersim.sim_settings import SimConfig
from workersim.tokens import Tokenizer
from workersim.vllm_metrics import SimStats, render_metrics

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
MAX_BODY_BYTES = 64 * 1024 * 1024

Route = Callable[[Scope, Receive, Send], Awaitable[None]]


class SimApp:
    """One simulated worker. Its state is public for tests: ``config``, ``cache``, ``engine``, ``stats``,
    ``recent_requests`` (parsed bodies of the latest /v1 requests, newest last), ``recent_headers`` (their
    headers, lower-case names, every GET too), ``healthy``."""

    def __init__(self, config: SimConfig) -> None:
        self.config = replace(config)  # faults change at runtime: never the caller's object
        self.tokenizer = Tokenizer()
        self.cache = PrefixCache(config.num_blocks, config.block_size, namespace=config.model)
        self.engine = Engine(self.config)
        self.stats = SimStats()
        self.rng = random.Random(config.seed)
        self.recent_requests: deque[dict[str, Any]] = deque(maxlen=config.recent_requests_max)
        self.recent_headers: deque[tuple[str, dict[str, str]]] = deque(maxlen=config.recent_requests_max)
        self._auth = ("Bearer " + config.api_key).encode() if config.api_key else None
        self.healthy = True
        self.started = int(time.time())
        self._headers: Headers = [(b"x-worker-id", config.worker_id.encode())]
        self._json_headers: Headers = [JSON_TYPE, *self._headers]
        self.generator = Generator(self.config, self.tokenizer, self.cache, self.engine, self.stats,
                                   self.rng, self._headers)
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/health_generate"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/version"): self._version,
            ("GET", "/server_info"): self._server_info,
            ("GET", "/get_server_info"): self._server_info,
            ("GET", "/model_info"): self._model_info,
            ("GET", "/get_model_info"): self._model_info,
            ("GET", "/get_load"): self._load,
            ("POST", "/flush_cache"): self._reset,
            ("POST", "/reset_prefix_cache"): self._reset,
            ("POST", "/sim/reset"): self._reset,
            ("POST", "/sim/health"): self._set_health,
            ("POST", "/sim/faults"): self._set_faults,
            ("GET", "/sim/state"): self._state,
        }

    # -- ASGI ------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = self._routes.get((scope["method"], scope["path"]))
            if self.recent_headers.maxlen:
                self.recent_headers.append((scope["path"], {k.decode("latin-1"): v.decode("latin-1")
                                                            for k, v in scope["headers"]}))
            if self._auth is not None and scope["path"].startswith("/v1") and not self._authorized(scope):
                await self._json(send, 401, b'{"error":"Unauthorized"}')  # vLLM's answer with --api-key
                return
            if route is None:
                await self._json(send, 404, error_body(404, f"no route {scope['method']} {scope['path']}"))
                return
            try:
                await route(scope, receive, send)
            except Disconnected:
                return
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _authorized(self, scope: Scope) -> bool:
        return any(k == b"authorization" and v == self._auth for k, v in scope["headers"])

    # -- control ---------------------------------------------------------------------------------------
    @property
    def cancelled(self) -> int:
        """Requests stopped because their client disconnected."""
        return self.stats.cancelled

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def reset(self) -> None:
        """Forget the KV cache (what a worker restart does)."""
        self.cache.clear()

    def set_faults(self, error_rate: float | None = None, drop_rate: float | None = None,
                   slow_start_s: float | None = None) -> None:
        changes: dict[str, Any] = {}
        for key, value in (("error_rate", error_rate), ("drop_rate", drop_rate),
                           ("slow_start_s", slow_start_s)):
            if value is not None:
                changes[key] = float(value)
        replace(self.config, **changes)  # validates; raises ValueError
        for key, value in changes.items():
            setattr(self.config, key, value)

    # -- helpers ---------------------------------------------------------------------------------------
    async def _json(self, send: Send, status: int, body: bytes) -> None:
        await send_response(send, status, body, self._json_headers)

    async def _read_json(self, receive: Receive, send: Send) -> dict[str, Any] | None:
        """The parsed JSON object body, or None after answering 400/413."""
        try:
            raw = await read_body(receive, MAX_BODY_BYTES)
        except ValueError:
            await self._reject(send, 413, "request body too large")
            return None
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            await self._reject(send, 400, f"invalid JSON body: {exc}")
            return None
        if not isinstance(body, dict):
            await self._reject(send, 400, "the JSON body must be an object")
            return None
        return body

    async def _reject(self, send: Send, status: int, message: str) -> None:
        self.stats.rejected += 1
        await self._json(send, status, error_body(status, message))

    # -- /v1 -------------------------------------------------------------------------------------------
    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(receive, send)
        if body is not None:
            self.recent_requests.append(body)
            await self.generator.handle(True, body, receive, send)

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(receive, send)
        if body is not None:
            self.recent_requests.append(body)
            await self.generator.handle(False, body, receive, send)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        await self._json(send, 200, orjson.dumps({"object": "list", "data": [{
            "id": cfg.model, "object": "model", "created": self.started, "owned_by": "sim",
            "root": cfg.model, "parent": None, "max_model_len": cfg.max_model_len,
        }]}))

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.healthy:
            await send_response(send, 200, b"", self._headers)
        else:
            await self._json(send, 503, error_body(503, "the simulated worker is unhealthy"))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = render_metrics(self.config, self.engine, self.cache, self.stats)
        await send_response(send, 200, body,
                            [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"), *self._headers])

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, b'{"version":"sim"}')

    # -- SGLang-style ----------------------------------------------------------------------------------
    async def _server_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        await self._json(send, 200, orjson.dumps({
            "model_path": str(TOKENIZER_DIR), "tokenizer_path": str(TOKENIZER_DIR),
            "served_model_name": cfg.model, "max_running_requests": cfg.max_running,
            "max_total_num_tokens": cfg.num_blocks * cfg.block_size, "page_size": cfg.block_size,
            "context_length": cfg.max_model_len, "max_req_input_len": cfg.max_model_len,
            "dp_size": 1, "tp_size": 1, "is_embedding": False, "enable_metrics": True,
            "disaggregation_mode": "null", "worker_id": cfg.worker_id, "version": "sim",
        }))

    async def _model_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, orjson.dumps({
            "model_path": str(TOKENIZER_DIR), "tokenizer_path": str(TOKENIZER_DIR), "is_generation": True,
            "served_model_name": self.config.model,
        }))

    async def _load(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        await self._json(send, 200, orjson.dumps([{
            "dp_rank": 0, "num_reqs": engine.running + engine.waiting, "num_waiting_reqs": engine.waiting,
            "num_tokens": self.cache.used_blocks * self.config.block_size,
        }]))

    # -- control over HTTP -----------------------------------------------------------------------------
    async def _reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive, MAX_BODY_BYTES)
        self.reset()
        await self._json(send, 200, b'{"success":true}')

    async def _set_health(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(receive, send)
        if body is None:
            return
        healthy = body.get("healthy")
        if not isinstance(healthy, bool):
            await self._json(send, 400, error_body(400, "'healthy' must be a boolean", "healthy"))
            return
        self.set_healthy(healthy)
        await self._json(send, 200, orjson.dumps({"healthy": self.healthy}))

    async def _set_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(receive, send)
        if body is None:
            return
        try:
            values = {k: body.get(k) for k in ("error_rate", "drop_rate", "slow_start_s")}
            for key, value in values.items():
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise ValueError(f"'{key}' must be a number")
            self.set_faults(**values)
        except ValueError as exc:
            await self._json(send, 400, error_body(400, str(exc)))
            return
        cfg = self.config
        await self._json(send, 200, orjson.dumps(
            {"error_rate": cfg.error_rate, "drop_rate": cfg.drop_rate, "slow_start_s": cfg.slow_start_s}))

    async def _state(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, orjson.dumps({
            "worker_id": self.config.worker_id, "healthy": self.healthy, "running": self.engine.running,
            "waiting": self.engine.waiting, "kv_cache_usage": self.cache.usage,
            "cached_blocks": self.cache.cached_blocks, "num_blocks": self.cache.num_blocks,
            "prefix_cache_queries_total": self.cache.queries_total,
            "prefix_cache_hits_total": self.cache.hits_total, **self.stats.as_dict(),
        }))


def create_sim_app(config: SimConfig | None = None) -> SimApp:
    """The raw ASGI app of one simulated worker (lifespan handled; nothing to start)."""
    return SimApp(config or SimConfig())
