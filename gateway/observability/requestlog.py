"""One structured JSON line per request: ids, org, key id, model, worker, status, tokens, timings.

Never a key, never a prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.pipeline.exchange import Exchange

REQUEST_LOGGER = "gateway.requests"
log = logging.getLogger(REQUEST_LOGGER)

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
    """Writes each request's line: through the logger, or, when the logger's one handler is a
    ``RequestLineHandler`` (``gateway serve`` sets it so), straight into it (a log record per request costs
    as much as the line itself)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        only = log.handlers[0] if len(log.handlers) == 1 and not log.propagate else None
        self._direct = only if isinstance(only, RequestLineHandler) else None

    def write(self, request_id: str, route: str, status: int, elapsed: float, ex: Exchange | None,
              error_code: str | None) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            line = orjson.dumps(request_record(request_id, route, status, elapsed, ex, error_code)).decode()
            if self._direct is not None:
                self._direct.add(line)
            else:
                log.info(line)


class RequestLineHandler(logging.Handler):
    """The request log's handler: each line as it is (it carries its own timestamp), written in batches,
    one write per batch: ``flush_s`` after a batch's first line, at ``max_lines``, and at exit.

    A ``StreamHandler`` formats a timestamp and writes and flushes the stream for every line: about a
    tenth of the gateway's CPU per request at a thousand requests a second."""

    def __init__(self, stream: IO[str], flush_s: float = 0.05, max_lines: int = 512) -> None:
        super().__init__()
        self._stream = stream
        self._flush_s = flush_s
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.add(record.getMessage())

    def add(self, line: str) -> None:
        """One line, as ``emit`` would write it, without a log record."""
        self._lines.append(line)
        if len(self._lines) >= self._max_lines:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a CLI command): at once
                self.flush()
                return
            self._timer = loop.call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._lines:
                lines, self._lines = self._lines, []
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()

