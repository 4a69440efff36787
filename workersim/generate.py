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

    __slots__ = ("chat", "created", "disconnected", "done", "drop_at", "generated", "include_usage", "plan",
                 "prompt", "response_id", "salt", "stream")

    def __init__(self, chat: bool, prompt: list[int], plan: Plan, salt: str, stream: bool,
                 include_usage: bool, response_id: bytes) -> None:
        self.chat = chat
        self.prompt = prompt
        self.plan = plan
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
        self._planner = Planner(tokenizer, self._prompts, OutputWords(tokenizer), config.reasoning_tokens)
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
            req.drop_at = max(1, len(req.plan.ids) // 2)
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
        if body.get("n") not in (None, 1):
            raise Rejected(400, "the simulator only supports n=1", "n")
        raw_max = body.get("max_completion_tokens") if chat else None
        param = "max_completion_tokens"
        if raw_max is None:
            raw_max, param = body.get("max_tokens"), "max_tokens"
        if raw_max is not None and (type(raw_max) is not int or raw_max < 1):
            raise Rejected(400, f"'{param}' must be an integer >= 1", param)
        salt = body.get("cache_salt")
        if salt is not None and not isinstance(salt, str):
            raise Rejected(400, "'cache_salt' must be a string", "cache_salt")
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
                reasoning = cfg.reasoning
                kwargs = body.get("chat_template_kwargs")
                if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
                    reasoning = False
                call_id = f"call_{self._id_prefix}{n:x}"
                plan = self._planner.chat(body, length, raw_max is not None, seed, reasoning, call_id)
                response_id = f"chatcmpl-{self._id_prefix}{n:x}".encode()
            else:
                plan = self._planner.completion(length, raw_max is not None, seed)
                response_id = f"cmpl-{self._id_prefix}{n:x}".encode()
        except PromptError as exc:
            raise Rejected(400, exc.message, exc.param) from exc
        return _Request(chat, prompt, plan, salt or "", stream, include_usage, response_id)

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
                    sequence = cache.block_hashes(req.prompt + req.plan.ids[: req.generated], req.salt,
                                                  alloc.hashes)
                else:
                    sequence = alloc.hashes
                cache.finish(alloc, sequence)
            self._stats.generation_tokens_total += req.generated

    def _succeeded(self, plan: Plan) -> None:
        self._stats.success["length" if plan.finish_reason == "length" else "stop"] += 1

    async def _answer(self, req: _Request, alloc: Allocation, send: Send) -> None:
        plan = req.plan
        n = len(plan.ids)
        if self._engine.sleeps and n > 1:
            await asyncio.sleep(self._engine.token_interval() * (n - 1))
        req.generated = n
        usage = self._usage(req, alloc)
        if req.chat:
            message: dict[str, Any] = {"role": "assistant", "content": plan.content,
                                       "tool_calls": [plan.tool_call] if plan.tool_call else []}
            if plan.reasoning_pieces is not None:
                message["reasoning_content"] = plan.reasoning
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": plan.finish_reason, "stop_reason": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": plan.content, "logprobs": None, "finish_reason": plan.finish_reason,
                      "stop_reason": None}
            obj = "text_completion"
        body = orjson.dumps({"id": req.response_id.decode(), "object": obj, "created": req.created,
                             "model": self._config.model, "choices": [choice], "usage": usage,
                             "system_fingerprint": self._config.worker_id})
        req.done = True
        await send_response(send, 200, body, self._json_headers)
        self._succeeded(plan)

    def _usage(self, req: _Request, alloc: Allocation) -> dict[str, Any]:
        prompt_tokens = len(req.prompt)
        completion = req.generated
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                 "total_tokens": prompt_tokens + completion,
                                 "prompt_tokens_details": {"cached_tokens": alloc.cached_tokens}}
        if req.plan.reasoning_pieces is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": req.plan.reasoning_tokens}
        return usage

    # -- streaming -------------------------------------------------------------------------------------
    async def _stream(self, req: _Request, alloc: Allocation, send: Send) -> None:
        plan = req.plan
        usage_null = b',"usage":null' if req.include_usage else b""
        if req.chat:
            head = (b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                    b'"system_fingerprint":%s,"choices":[{"index":0,"delta":'
                    % (req.response_id, req.created, self._model_json, self._fingerprint_json))
            tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
            first = head + b'{"role":"assistant","content":""}' + tail
            final = (head + b'{},"logprobs":null,"finish_reason":"%s"}]' % plan.finish_reason.encode()
                     + usage_null + b"}\n\n")
        else:
            head = (b'data: {"id":"%s","object":"text_completion","created":%d,"model":%s,'
                    b'"system_fingerprint":%s,"choices":[{"index":0,"text":'
                    % (req.response_id, req.created, self._model_json, self._fingerprint_json))
            tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]' + usage_null + b"}\n\n"
            first = b""
            final = (head + b'"","logprobs":null,"finish_reason":"%s","stop_reason":null}]'
                     % plan.finish_reason.encode() + usage_null + b"}\n\n")
        deltas: list[Any] = plan.chat_deltas() if req.chat else plan.content_pieces
        dumps = orjson.dumps

        def chunks(start: int, end: int) -> bytes:
            return b"".join(head + dumps(d) + tail for d in deltas[start:end] if d is not None)

        n = len(plan.ids)
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
            self._succeeded(plan)
            return
        loop = asyncio.get_running_loop()
        await send(self._sse_start)
        await send({"type": "http.response.body", "body": first + chunks(0, 1), "more_body": True})
        req.generated = 1
        due = loop.time()
        stream_interval = self._config.stream_interval_s
        i = 1
        while i < limit:
            interval = engine.token_interval()
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
