"""One structured JSON line per request: ids, org, key id, model, worker, status, tokens, timings.

Never a key, never a prompt.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.pipeline.exchange import Exchange

log = logging.getLogger("gateway.requests")

# A client names any model it likes: the line keeps this much of the name (served names are far shorter).
MAX_MODEL_CHARS = 200


def request_record(request_id: str, route: str, status: int, elapsed: float, ex: Exchange | None,
                   error_code: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"ts": round(time.time(), 3), "request_id": request_id, "route": route,
                              "status": status, "duration_ms": round(elapsed * 1000, 2)}
    if error_code:
        record["error"] = error_code
    if ex is None:
        return record
    usage = ex.usage or {}
    record.update(
        org=ex.principal.org_id, key_id=ex.principal.key_id, model=ex.request.model[:MAX_MODEL_CHARS],
        stream=ex.request.stream,
        worker=ex.worker.id if ex.worker else None, attempts=ex.attempts, outcome=ex.outcome,
        end_user=ex.end_user, prompt_tokens=usage.get("prompt_tokens"),
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )
    if ex.upstream_started_at is not None:
        record["overhead_ms"] = round((ex.upstream_started_at - ex.started) * 1000, 3)
    if ex.first_byte_at is not None:
        record["ttft_ms"] = round((ex.first_byte_at - ex.started) * 1000, 2)
    return record


class RequestLog:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def write(self, request_id: str, route: str, status: int, elapsed: float, ex: Exchange | None,
              error_code: str | None) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            log.info(orjson.dumps(request_record(request_id, route, status, elapsed, ex, error_code)).decode())
