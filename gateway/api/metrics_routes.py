"""Prometheus exposition at ``GET /metrics`` on the main port (see gateway.observability.metrics_listener.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import errors
from gateway.api.deps import get_runtime
from gateway.observability.metrics_listener import check_token
from gateway.runtime import Runtime

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(request: Request, rt: Runtime = Depends(get_runtime)) -> Response:
    if rt.settings.metrics_address:  # served on its own listener only
        raise errors.not_found("Not Found")
    check_token(rt.settings.metrics_token, request.headers.get("authorization"))
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
