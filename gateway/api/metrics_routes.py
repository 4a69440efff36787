"""Prometheus exposition at ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import get_runtime
from gateway.runtime import Runtime

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(rt: Runtime = Depends(get_runtime)) -> Response:
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
