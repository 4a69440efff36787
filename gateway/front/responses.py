"""Front adapter for OpenAI's Responses API (``POST /v1/responses``), on workers that speak Chat Completions.

``parse`` checks the body and translates it (``responses_input.py``) into the canonical CHAT request:
routing, limits, budgets and metering see exactly what the same conversation sent as chat messages
would show them (same canonical prefix, same ledger row). A ``previous_response_id`` is resolved by
``resolve`` with one read of the stored chain (``responses_store.py``) before the pre-request round
trip. The answer goes back through :class:`ResponsesShape`: a ``Response`` object, or the typed
stream events (``responses_stream.py``); errors keep OpenAI's shape, which the Responses API shares.
:class:`ResponsesStage` keeps the response (``store``) in the settling round trip.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway import errors
from gateway.front.openai_body import parse_body
from gateway.front.responses_input import chat_body, chat_messages, check_body
from gateway.front.responses_output import from_chat_answer, response_id
from gateway.front.responses_store import ResponseStore, StoredResponse
from gateway.front.responses_stream import ResponsesStream
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Principal
from gateway.pipeline.request import CHAT, ParsedRequest
from gateway.pipeline.shaping import StreamShaper
from gateway.state.base import RoundTrip


class ResponsesShape:
    """One Responses request: what the client asked, and how the worker's answer goes back to it."""

    __slots__ = ("_final", "_stream", "body", "created_at", "items", "response_id")

    def __init__(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        self.body = body  # the client's Responses body
        self.items = items  # its input, as checked items
        self.created_at = time.time()
        self.response_id = ""  # set with the request id (bind)
        self._stream: ResponsesStream | None = None
        self._final: dict[str, Any] | None = None  # the whole answer's Response, built once

    def bind(self, request_id: str) -> None:
        self.response_id = response_id(request_id)

    # --- ReplyShape ----------------------------------------------------------------------------------
    def whole(self, answer: dict[str, Any], raw: bytes, billed_ticks: int | None) -> bytes:
        return orjson.dumps(self._whole(answer, billed_ticks))

    def _whole(self, answer: dict[str, Any], billed_ticks: int | None) -> dict[str, Any]:
        if self._final is None:
            self._final = from_chat_answer(self.response_id, self.body, answer, self.created_at, billed_ticks)
        return self._final

    def stream(self) -> StreamShaper:
        self._stream = ResponsesStream(self.response_id, self.body, self.created_at)
        return self._stream

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return exc.body_bytes()

    # --- what the stage keeps ------------------------------------------------------------------------
    def stored(self, ex: Exchange) -> StoredResponse | None:
        """The record of an answer the worker completed, when the client asked to keep it."""
        if self.body.get("store") is False or ex.outcome != "ok" or ex.status != 200:
            return None
        if self._stream is not None:
            if self._stream.worker_error:
                return None
            response = self._stream.close(ex.usage, ex.billed_ticks)[1]
        elif ex.answer is not None:
            response = self._whole(ex.answer, ex.billed_ticks)
        else:
            return None
        return StoredResponse(self.response_id, self.body.get("previous_response_id"), self.items,
                              response["output"], response)


class Responses:
    path = "/v1/responses"
    kind = CHAT

    def __init__(self, store: ResponseStore) -> None:
        self._store = store

    def parse(self, raw: bytes) -> ParsedRequest:
        holder: list[list[dict[str, Any]]] = []
        parsed = parse_body(raw, CHAT, lambda body: holder.append(check_body(body)))
        body, items = parsed.body, holder[0]
        shape = ResponsesShape(body, items)
        if body.get("previous_response_id"):  # resolve() reads the conversation first
            return ParsedRequest(kind=CHAT, body=body, model=parsed.model, stream=parsed.stream, include_usage=True,
                                 shape=shape)
        return _translated(shape, parsed.model, parsed.stream, [])

    async def resolve(self, request: ParsedRequest, principal: Principal, request_id: str) -> ParsedRequest:
        """The request as the worker gets it: with the stored conversation of ``previous_response_id``."""
        shape = request.shape
        assert isinstance(shape, ResponsesShape)
        shape.bind(request_id)
        if request.payload is not None:
            return request
        history = await self._store.history(principal.org_id, shape.body["previous_response_id"])
        return _translated(shape, request.model, request.stream, history)

    def error_body(self, exc: errors.GatewayError) -> bytes:
        return exc.body_bytes()


def _translated(shape: ResponsesShape, model: str, stream: bool, history: list[dict[str, Any]]) -> ParsedRequest:
    chat = chat_body(shape.body, chat_messages(history, shape.items, shape.body.get("instructions")))
    # include_usage: the chat body already asks the worker for usage (the client reads it in
    # response.completed, never as a chunk)
    return ParsedRequest(kind=CHAT, body=chat, model=model, stream=stream, include_usage=True, shape=shape,
                         payload=orjson.dumps(chat))


class ResponsesStage:
    """A Stage: nothing before the upstream call; in the settling round trip, the record of a Responses
    request with ``store`` true that the worker answered whole (never one that failed). It runs after
    metering, so the stored usage carries the cost the ledger row holds."""

    def __init__(self, store: ResponseStore) -> None:
        self._store = store

    def plan(self, ex: Exchange, trip: RoundTrip) -> None:
        return None

    def observe(self, ex: Exchange, results: list[Any]) -> None:
        return None

    def admit(self, ex: Exchange, results: list[Any]) -> None:
        return None

    def finish(self, ex: Exchange, trip: RoundTrip) -> None:
        shape = ex.request.shape
        if not isinstance(shape, ResponsesShape):
            return
        record = shape.stored(ex)
        if record is not None:
            self._store.put(trip, ex.principal.org_id, record)
