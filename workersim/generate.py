"""One completion request's life: validate, queue, prefill, decode, answer (whole or as SSE), account.

The wire format follows vLLM's OpenAI-compatible server: ``chat.completion`` / ``text_completion`` bodies
with ``usage.prompt_tokens_details.cached_tokens``, and streams of ``data: {json}\\n\\n`` chunks ending with
``data: [DONE]``. When the simulator sleeps (``time_scale`` > 0) a task listens for the client's disconnect
and cancels the request at once, wherever it is (queued, prefilling or decoding), freeing its slot.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from typing import Any

import orjson

from gateway.asgi import Receive, Send
from workersim import logprobs
from workersim.kvcache import Allocation, PrefixCache
from workersim.output import Plan, Planner, prompt_seed
from workersim.prompt import PromptBuilder, PromptError
from workersim.scheduler import Engine
from workersim.sim_http import JSON_TYPE, SSE_HEADERS, Headers, error_body, send_response
from workersim.sim_settings import SimConfig
from workersim.tokens import OutputWords, Tokenizer
from workersim.vllm_metrics import SimStats

_DONE = b"data: [DONE]\n\n"


class Rejected(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class _Request:
    """A validated request and its progress."""

    __slots__ = ("chat", "created", "disconnected", "done", "drop_at", "generated", "include_usage", "logprobs",
                 "plan", "plans", "prompt", "response_id", "salt", "seed", "stream")

    def __init__(self, chat: bool, prompt: list[int], plans: list[Plan], salt: str, stream: bool,
                 include_usage: bool, response_id: bytes) -> None:
        self.chat = chat
        self.prompt = prompt
        self.plans = plans  # one per choice (``n``)
        self.plan = plans[0]  # the one whose tokens stay in the KV cache
        self.logprobs: int | None = None  # top log-probabilities per token asked for (None: not asked)
        self.seed = 0
        self.salt = salt
        self.stream = stream
        self.include_usage = include_usage
        self.response_id = response_id
        self.created = int(time.time())
        self.drop_at: int | None = None
        self.generated = 0
        self.done = False  # the response is (about to be) complete: a disconnect now is no cancel
        self.disconnected = False


class Generator:
    def __init__(self, config: SimConfig, tokenizer: Tokenizer, cache: PrefixCache, engine: Engine,
                 stats: SimStats, rng: random.Random, headers: Headers) -> None:
        self._config = config
        self._cache = cache
        self._engine = engine
        self._stats = stats
        self._rng = rng
        self._prompts = PromptBuilder(tokenizer)
        self._planner = Planner(tokenizer, self._prompts, OutputWords(tokenizer), config.reasoning_tokens,
                                config.tool_call_rate, config.parallel_tool_call_rate)
        self._json_headers: Headers = [JSON_TYPE, *headers]
        self._sse_start = {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]}
        self._model_json = orjson.dumps(config.model)
        self._fingerprint_json = orjson.dumps(config.worker_id)
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    # -- entry point -----------------------------------------------------------------------------------
    async def handle(self, chat: bool, body: dict[str, Any], receive: Receive, send: Send) -> None:
        try:
            req = self._prepare(chat, body)
        except Rejected as exc:
            self._stats.rejected += 1
            await send_response(send, exc.status, error_body(exc.status, exc.message, exc.param),
                                self._json_headers)
            return
        cfg = self._config
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            self._stats.errors_injected += 1
            await send_response(send, 500, error_body(500, "simulated worker failure"), self._json_headers)
            return
        if req.stream and cfg.drop_rate and self._rng.random() < cfg.drop_rate:
            req.drop_at = max(1, sum(len(p.ids) for p in req.plans) // 2)
        if not self._engine.sleeps:
            await self._run(req, send)
            return
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.get_running_loop().create_task(self._watch_disconnect(receive, task, req))
        try:
            await self._run(req, send)
        except asyncio.CancelledError:
            if not req.disconnected:
                raise
            task.uncancel()
            self._stats.cancelled += 1
            self._stats.success["abort"] += 1
        finally:
            req.done = True
            watcher.cancel()

    @staticmethod
    async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], req: _Request) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not req.done:
                    req.disconnected = True
                    task.cancel()
                return

    # -- validation ------------------------------------------------------------------------------------
    def _prepare(self, chat: bool, body: dict[str, Any]) -> _Request:
        cfg = self._config
        model = body.get("model")
        if model is not None and model != cfg.model:
            raise Rejected(404, f"The model `{model}` does not exist.", "model")
        n_choices = body.get("n", 1)
        if n_choices is None:
            n_choices = 1
        if type(n_choices) is not int or not 1 <= n_choices <= _MAX_N:
            raise Rejected(400, f"'n' must be an integer from 1 to {_MAX_N}", "n")
        raw_max = body.get("max_completion_tokens") if chat else None
        param = "max_completion_tokens"
        if raw_max is None:
            raw_max, param = body.get("max_tokens"), "max_tokens"
        if raw_max is not None and (type(raw_max) is not int or raw_max < 1):
            raise Rejected(400, f"'{param}' must be an integer >= 1", param)
        salt = body.get("cache_salt")
        if salt is not None and not isinstance(salt, str):
            raise Rejected(400, "'cache_salt' must be a string", "cache_salt")
        stop = _stop_strings(body.get("stop"))
        top = _logprobs_asked(body, chat)
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        try:
            prompt = self._prompts.chat(body) if chat else self._prompts.completion(body)
            length = raw_max if raw_max is not None else cfg.max_tokens_default
            if len(prompt) + (length if raw_max is not None else 0) > cfg.max_model_len:
                raise Rejected(
                    400,
                    f"This model's maximum context length is {cfg.max_model_len} tokens. However, you "
                    f"requested {len(prompt) + length} tokens ({len(prompt)} in the messages, {length} in "
                    "the completion). Please reduce the length of the messages or completion.",
                    "messages" if chat else "prompt",
                )
            seed = prompt_seed(prompt, body.get("seed"))
            n = next(self._ids)
            if chat:
                reasoning = self._reasoning_tokens(body)
                call_id = f"call_{self._id_prefix}{n:x}"
                plans = [self._planner.chat(body, length, raw_max is not None, seed + i, reasoning,
                                            call_id if i == 0 else f"{call_id}c{i}", stop)
                         for i in range(n_choices)]
                response_id = f"chatcmpl-{self._id_prefix}{n:x}".encode()
            else:
                plans = [self._planner.completion(length, raw_max is not None, seed + i, stop)
                         for i in range(n_choices)]
                response_id = f"cmpl-{self._id_prefix}{n:x}".encode()
        except PromptError as exc:
            raise Rejected(400, exc.message, exc.param) from exc
        req = _Request(chat, prompt, plans, salt or "", stream, include_usage, response_id)
        req.logprobs = top
        req.seed = seed
        return req

    def _reasoning_tokens(self, body: dict[str, Any]) -> int:
        """How many reasoning tokens the answer starts with: the worker's reasoning mode, or the request's
        ``reasoning_effort`` (low: half, high: twice the worker's count); ``enable_thinking`` false or an
        effort of "none" turns it off."""
        cfg = self._config
        effort = body.get("reasoning_effort")
        kwargs = body.get("chat_template_kwargs")
        if (isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False) or effort == "none":
            return 0
        if effort is not None and effort not in _EFFORT:
            raise PromptError("'reasoning_effort' must be 'none', 'minimal', 'low', 'medium' or 'high'",
                              "reasoning_effort")
        if effort is None:
            return cfg.reasoning_tokens if cfg.reasoning else 0
        return max(1, round(cfg.reasoning_tokens * _EFFORT[effort]))

    # -- the run ---------------------------------------------------------------------------------------
    async def _run(self, req: _Request, send: Send) -> None:
        engine = self._engine
        cache = self._cache
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        hashes = cache.block_hashes(req.prompt, req.salt)
        await engine.acquire()
        alloc: Allocation | None = None
        prefilled = False
        try:
            prompt_len = len(req.prompt)
            alloc = cache.admit(hashes, prompt_len, prompt_len + len(req.plan.ids))
            self._stats.prompt_tokens_total += prompt_len
            await engine.prefill(prompt_len - alloc.cached_tokens)
            cache.prefill_done(alloc)
            prefilled = True
            self._stats.observe_ttft(loop.time() - arrived)
            if req.stream:
                await self._stream(req, alloc, send)
            else:
                await self._answer(req, alloc, send)
        finally:
            engine.release()
            if alloc is not None:
                total = len(req.prompt) + req.generated
                if not prefilled:
                    sequence: list[int] = []
                elif total // cache.block_size > len(alloc.hashes):  # the output completed blocks
                    kept = req.plan.ids[: min(req.generated, len(req.plan.ids))]
                    sequence = cache.block_hashes(req.prompt + kept, req.salt, alloc.hashes)
                else:
                    sequence = alloc.hashes
                cache.finish(alloc, sequence)
            self._stats.generation_tokens_total += req.generated

    def _succeeded(self, plan: Plan) -> None:
        self._stats.success["length" if plan.finish_reason == "length" else "stop"] += 1

    def _chat_logprobs(self, req: _Request, index: int, plan: Plan) -> dict[str, Any] | None:
        if req.logprobs is None:
            return None
        return {"content": [logprobs.chat_entry(p, req.seed + index, i, req.logprobs)
                            for i, p in enumerate(plan.pieces())]}

    async def _answer(self, req: _Request, alloc: Allocation, send: Send) -> None:
        longest = max(len(p.ids) for p in req.plans)
        if self._engine.sleeps and longest > 1:  # the choices decode side by side
            await asyncio.sleep(self._engine.token_interval() * (longest - 1))
        req.generated = sum(len(p.ids) for p in req.plans)
        usage = self._usage(req, alloc)
        choices: list[dict[str, Any]] = []
        for index, plan in enumerate(req.plans):
            if req.chat:
                message: dict[str, Any] = {"role": "assistant", "content": plan.content,
                                           "tool_calls": plan.tool_calls}
                if plan.reasoning_pieces is not None:
                    message["reasoning_content"] = plan.reasoning
                choices.append({"index": index, "message": message, "logprobs": self._chat_logprobs(req, index, plan),
                                "finish_reason": plan.finish_reason, "stop_reason": plan.stop_reason})
            else:
                lp = (None if req.logprobs is None
                      else logprobs.completion_logprobs(plan.content_pieces, req.seed + index, req.logprobs))
                choices.append({"index": index, "text": plan.content, "logprobs": lp,
                                "finish_reason": plan.finish_reason, "stop_reason": plan.stop_reason})
        body = orjson.dumps({"id": req.response_id.decode(), "object": "chat.completion" if req.chat else
                             "text_completion", "created": req.created, "model": self._config.model,
                             "choices": choices, "usage": usage, "system_fingerprint": self._config.worker_id})
        req.done = True
        await send_response(send, 200, body, self._json_headers)
        for plan in req.plans:
            self._succeeded(plan)

    def _usage(self, req: _Request, alloc: Allocation) -> dict[str, Any]:
        prompt_tokens = len(req.prompt)
        completion = req.generated
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                 "total_tokens": prompt_tokens + completion,
                                 "prompt_tokens_details": {"cached_tokens": alloc.cached_tokens}}
        if req.plan.reasoning_pieces is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": sum(p.reasoning_tokens for p in req.plans)}
        return usage

    # -- streaming -------------------------------------------------------------------------------------
    def _stream_chunks(self, req: _Request) -> tuple[bytes, list[bytes | None], bytes]:
        """The stream's first event, one event (or None: a token that shows nothing) per generated token,
        and the closing events before the usage chunk. One choice without logprobs takes the fast path:
        the events are a fixed head and tail around each delta."""
        usage_null = b',"usage":null' if req.include_usage else b""
        dumps = orjson.dumps
        if req.chat:
            head = (b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                    b'"system_fingerprint":%s,"choices":[' % (req.response_id, req.created, self._model_json,
                                                              self._fingerprint_json))
        else:
            head = (b'data: {"id":"%s","object":"text_completion","created":%d,"model":%s,'
                    b'"system_fingerprint":%s,"choices":[' % (req.response_id, req.created, self._model_json,
                                                              self._fingerprint_json))
        end = b"]" + usage_null + b"}\n\n"
        if len(req.plans) == 1 and req.logprobs is None:
            plan = req.plan
            if req.chat:
                open_ = head + b'{"index":0,"delta":'
                tail = b',"logprobs":null,"finish_reason":null}' + end
                first = open_ + b'{"role":"assistant","content":""}' + tail
                events: list[bytes | None] = [None if d is None else open_ + dumps(d) + tail
                                              for d in plan.chat_deltas()]
            else:
                open_ = head + b'{"index":0,"text":'
                tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}' + end
                first = b""
                events = [open_ + dumps(p) + tail for p in plan.content_pieces]
            return first, events, self._finals(req, head, end)
        per_choice: list[list[bytes | None]] = []
        first = b""
        for index, plan in enumerate(req.plans):
            choice_events: list[bytes | None] = []
            if req.chat:
                first += head + dumps({"index": index, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}) + end
                pieces = plan.pieces()
                for i, delta in enumerate(plan.chat_deltas()):
                    if delta is None:
                        choice_events.append(None)
                        continue
                    lp = (None if req.logprobs is None else
                          {"content": [logprobs.chat_entry(pieces[i], req.seed + index, i, req.logprobs)]})
                    choice_events.append(head + dumps({"index": index, "delta": delta, "logprobs": lp,
                                                       "finish_reason": None}) + end)
            else:
                for i, piece in enumerate(plan.content_pieces):
                    lp = (None if req.logprobs is None else
                          logprobs.completion_logprobs([piece], req.seed + index, req.logprobs, i))
                    choice_events.append(head + dumps({"index": index, "text": piece, "logprobs": lp,
                                                       "finish_reason": None, "stop_reason": None}) + end)
            per_choice.append(choice_events)
        # The choices decode side by side: their events interleave token by token, as vLLM streams them.
        events = [e for group in itertools.zip_longest(*per_choice, fillvalue=_NO_EVENT) for e in group
                  if e is not _NO_EVENT]
        return first, events, self._finals(req, head, end)

    def _finals(self, req: _Request, head: bytes, end: bytes) -> bytes:
        out = b""
        for index, plan in enumerate(req.plans):
            choice: dict[str, Any] = ({"index": index, "delta": {}} if req.chat else {"index": index, "text": ""})
            choice.update({"logprobs": None, "finish_reason": plan.finish_reason, "stop_reason": plan.stop_reason})
            out += head + orjson.dumps(choice) + end
        return out

    async def _stream(self, req: _Request, alloc: Allocation, send: Send) -> None:
        first, events, final = self._stream_chunks(req)

        def chunks(start: int, end: int) -> bytes:
            return b"".join([e for e in events[start:end] if e is not None])

        n = len(events)
        limit = n if req.drop_at is None else min(n, req.drop_at)
        engine = self._engine
        if not engine.sleeps:  # nothing happens between tokens: the whole stream is one write
            req.generated = limit
            body = first + chunks(0, limit)
            await send(self._sse_start)
            if req.drop_at is not None:
                self._stats.streams_dropped += 1
                await send({"type": "http.response.body", "body": body, "more_body": True})
                return
            req.done = True
            await send({"type": "http.response.body", "body": body + self._closing(req, alloc, final),
                        "more_body": False})
            for plan in req.plans:
                self._succeeded(plan)
            return
        loop = asyncio.get_running_loop()
        await send(self._sse_start)
        await send({"type": "http.response.body", "body": first + chunks(0, 1), "more_body": True})
        req.generated = 1
        due = loop.time()
        stream_interval = self._config.stream_interval_s
        side_by_side = len(req.plans)
        i = 1
        while i < limit:
            interval = engine.token_interval() / side_by_side
            batch = max(1, int(stream_interval / interval)) if interval > 0 else limit
            j = min(limit, i + batch)
            due += interval * (j - i)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = chunks(i, j)
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            req.generated = i = j
        if req.drop_at is not None:
            self._stats.streams_dropped += 1
            return  # the ASGI server closes the connection without the terminating chunk
        req.done = True
        await send({"type": "http.response.body", "body": self._closing(req, alloc, final), "more_body": False})
        for plan in req.plans:
            self._succeeded(plan)

    def _closing(self, req: _Request, alloc: Allocation, final: bytes) -> bytes:
        if not req.include_usage:
            return final + _DONE
        usage_chunk = orjson.dumps({
            "id": req.response_id.decode(),
            "object": "chat.completion.chunk" if req.chat else "text_completion",
            "created": req.created, "model": self._config.model,
            "system_fingerprint": self._config.worker_id,
            "choices": [], "usage": self._usage(req, alloc),
        })
        return final + b"data: " + usage_chunk + b"\n\n" + _DONE


_NO_EVENT = b"\x00"  # zip_longest's filler: a choice that has ended
_MAX_N = 16
_EFFORT = {"minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0}


def _stop_strings(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s] or None
    raise Rejected(400, "'stop' must be a string or a list of strings", "stop")


def _logprobs_asked(body: dict[str, Any], chat: bool) -> int | None:
    """How many top log-probabilities per token the request asks for (None: no logprobs)."""
    value = body.get("logprobs")
    if chat:
        if value is None or value is False:
            return None
        if value is not True:
            raise Rejected(400, "'logprobs' must be a boolean", "logprobs")
        top = body.get("top_logprobs", 0)
        if top is None:
            top = 0
        if type(top) is not int or not 0 <= top <= 20:
            raise Rejected(400, "'top_logprobs' must be an integer from 0 to 20", "top_logprobs")
        return top
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 20:
        raise Rejected(400, "'logprobs' must be an integer from 0 to 20", "logprobs")
    return value
