"""A small Stripe-compatible server for tests and the demo: Billing Meters' event endpoints.

Implements what the sync relies on, with Stripe's semantics:

- ``POST /v1/billing/meter_events`` (form-encoded): ``event_name``, ``payload[stripe_customer_id]``,
  ``payload[value]`` (a whole number as a string), ``identifier`` (<= 100 chars, unique over 24 h),
  ``timestamp`` (Unix seconds, within the past 35 days and at most 5 minutes ahead). A duplicate
  identifier is answered 400 ``invalid_request_error`` with ``stripe-should-retry: false``.
- ``GET /v1/billing/meters`` and ``POST /v1/billing/meters``; ``GET /v1/billing/meters/{id}/event_summaries``
  (``customer``, ``start_time``, ``end_time``, optional ``value_grouping_window`` hour or day).
- A rate limit of 25 operations per second (test mode), answered 429 ``rate_limit``.
- Fault injection for tests: ``POST /_test/faults`` with ``{"fail_5xx": n, "fail_429": n, "lose_response": n,
  "latency_s": x}``: the next n calls fail with 500 / 429, or are processed and then answered 500 (the
  response is lost), and every call waits ``latency_s``. ``GET /_test/events`` lists accepted events.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_PAST_S = 35 * 86_400
MAX_FUTURE_S = 300
DEDUP_WINDOW_S = 86_400


@dataclass
class Faults:
    fail_5xx: int = 0
    fail_429: int = 0
    lose_response: int = 0
    latency_s: float = 0.0


@dataclass
class StoredEvent:
    identifier: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    created: int


@dataclass
class StripeState:
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, StoredEvent] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    calls: deque[float] = field(default_factory=deque)
    rate_limit_per_s: int = 25
    clock: Callable[[], float] = time.monotonic  # the rate limit's clock (tests may freeze it)
    requests_seen: int = 0
    rejected_rate_limit: int = 0

    def add_meter(self, event_name: str, display_name: str = "") -> dict[str, Any]:
        meter_id = "mtr_test_" + secrets.token_hex(8)
        meter: dict[str, Any] = {"id": meter_id, "object": "billing.meter", "event_name": event_name,
                 "display_name": display_name or event_name, "status": "active", "livemode": False,
                 "default_aggregation": {"formula": "sum"},
                 "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                 "value_settings": {"event_payload_key": "value"}, "created": int(time.time())}
        self.meters[meter_id] = meter
        return meter


def _error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
           param: str | None = None, retry: bool | None = None) -> JSONResponse:
    headers = {"request-id": "req_" + secrets.token_hex(7)}
    if retry is not None:
        headers["stripe-should-retry"] = "true" if retry else "false"
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class StripeTestServer:
    def __init__(self, meters: list[str] | None = None, rate_limit_per_s: int = 25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = StripeState(rate_limit_per_s=rate_limit_per_s, clock=clock)
        for name in meters or ():
            self.state.add_meter(name)
        self.app = Starlette(routes=[
            Route("/v1/billing/meter_events", self.create_event, methods=["POST"]),
            Route("/v1/billing/meters", self.list_meters, methods=["GET"]),
            Route("/v1/billing/meters", self.create_meter, methods=["POST"]),
            Route("/v1/billing/meters/{meter_id}/event_summaries", self.summaries, methods=["GET"]),
            Route("/_test/faults", self.set_faults, methods=["POST"]),
            Route("/_test/events", self.list_events, methods=["GET"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- gatekeeping shared by every /v1 call -------------------------------------------------------
    async def _gate(self, request: Request) -> JSONResponse | None:
        st = self.state
        st.requests_seen += 1
        if st.faults.latency_s:
            await asyncio.sleep(st.faults.latency_s)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer sk_test_"):
            return _error(401, "Invalid API Key provided.", "invalid_request_error")
        now = st.clock()
        while st.calls and st.calls[0] <= now - 1.0:
            st.calls.popleft()
        if st.faults.fail_429 > 0 or len(st.calls) >= st.rate_limit_per_s:
            if st.faults.fail_429 > 0:
                st.faults.fail_429 -= 1
            st.rejected_rate_limit += 1
            return _error(429, "Request rate limit exceeded. You can make up to 25 requests per second in test mode.",
                          "invalid_request_error", code="rate_limit")
        st.calls.append(now)
        if st.faults.fail_5xx > 0:
            st.faults.fail_5xx -= 1
            return _error(500, "An unknown error occurred (injected).", "api_error", retry=True)
        return None

    async def create_event(self, request: Request) -> JSONResponse:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        now = int(time.time())
        event_name = form.get("event_name", "")
        customer = form.get("payload[stripe_customer_id]", "")
        raw_value = form.get("payload[value]", "")
        identifier = form.get("identifier") or "evt_" + secrets.token_hex(12)
        raw_ts = form.get("timestamp", "")
        if not event_name:
            return _error(400, "Missing required param: event_name.", code="parameter_missing", param="event_name")
        if len(event_name) > 100:
            return _error(400, "event_name must be at most 100 characters.", code="parameter_invalid_string_length",
                          param="event_name")
        if not any(m["event_name"] == event_name for m in self.state.meters.values()):
            return _error(400, f"No active meter was found for event_name {event_name}.", code="resource_missing",
                          param="event_name")
        if not customer:
            return _error(400, "Missing required param: payload[stripe_customer_id].", code="parameter_missing",
                          param="payload[stripe_customer_id]")
        if not raw_value.isdigit():
            return _error(400, "payload[value] must be a whole number.", code="parameter_invalid_integer",
                          param="payload[value]")
        if len(identifier) > 100:
            return _error(400, "identifier must be at most 100 characters.", code="parameter_invalid_string_length",
                          param="identifier")
        if not raw_ts:
            timestamp = now
        elif not raw_ts.isdigit():
            return _error(400, "Invalid integer: timestamp.", code="parameter_invalid_integer", param="timestamp")
        else:
            timestamp = int(raw_ts)
        if timestamp < now - MAX_PAST_S or timestamp > now + MAX_FUTURE_S:
            return _error(400, "timestamp must be within the past 35 days and at most 5 minutes in the future.",
                          code="timestamp_out_of_range", param="timestamp")
        previous = self.state.events.get(identifier)
        if previous is not None and previous.created > now - DEDUP_WINDOW_S:
            return _error(400, f"An event already exists with identifier {identifier}.", code="duplicate_meter_event",
                          param="identifier", retry=False)
        self.state.events[identifier] = StoredEvent(identifier, event_name, customer, int(raw_value), timestamp, now)
        if self.state.faults.lose_response > 0:
            self.state.faults.lose_response -= 1
            return _error(500, "An unknown error occurred after processing (injected).", "api_error", retry=True)
        return JSONResponse({"object": "billing.meter_event", "created": now, "event_name": event_name,
                             "identifier": identifier, "livemode": False,
                             "payload": {"stripe_customer_id": customer, "value": raw_value},
                             "timestamp": timestamp})

    async def list_meters(self, request: Request) -> JSONResponse:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        return JSONResponse({"object": "list", "data": list(self.state.meters.values()), "has_more": False,
                             "url": "/v1/billing/meters"})

    async def create_meter(self, request: Request) -> JSONResponse:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        form = dict(parse_qsl((await request.body()).decode()))
        if not form.get("event_name"):
            return _error(400, "Missing required param: event_name.", code="parameter_missing", param="event_name")
        return JSONResponse(self.state.add_meter(form["event_name"], form.get("display_name", "")))

    async def summaries(self, request: Request) -> JSONResponse:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        meter = self.state.meters.get(request.path_params["meter_id"])
        if meter is None:
            return _error(404, f"No such billing meter: '{request.path_params['meter_id']}'", code="resource_missing")
        q = request.query_params
        customer = q.get("customer", "")
        try:
            start, end = int(q.get("start_time", "")), int(q.get("end_time", ""))
        except ValueError:
            return _error(400, "start_time and end_time are required integers.", code="parameter_missing")
        if not customer:
            return _error(400, "Missing required param: customer.", code="parameter_missing", param="customer")
        step = {"hour": 3600, "day": 86_400}.get(q.get("value_grouping_window", ""), end - start)
        data = []
        for bucket in range(start, end, max(step, 1)):
            bucket_end = min(end, bucket + step)
            total = sum(e.value for e in self.state.events.values()
                        if e.event_name == meter["event_name"] and e.customer == customer
                        and bucket <= e.timestamp < bucket_end)
            data.append({"id": "mtrusg_" + secrets.token_hex(6), "object": "billing.meter_event_summary",
                         "aggregated_value": total, "start_time": bucket, "end_time": bucket_end,
                         "livemode": False, "meter": meter["id"]})
        return JSONResponse({"object": "list", "data": data, "has_more": False,
                             "url": f"/v1/billing/meters/{meter['id']}/event_summaries"})

    async def set_faults(self, request: Request) -> JSONResponse:
        body = await request.json()
        faults = self.state.faults
        for name in ("fail_5xx", "fail_429", "lose_response"):
            if name in body:
                setattr(faults, name, int(body[name]))
        if "latency_s" in body:
            faults.latency_s = float(body["latency_s"])
        return JSONResponse(vars(faults))

    async def list_events(self, request: Request) -> JSONResponse:
        return JSONResponse({"data": [vars(e) for e in self.state.events.values()]})
