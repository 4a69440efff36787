"""Liveness, readiness and the models list."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gateway.api.deps import get_runtime, require_api_key
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime

router = APIRouter()


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", tags=["health"])
async def ready(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    checks = await rt.ready()
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/v1/models", tags=["openai"])
async def models(rt: Runtime = Depends(get_runtime), _: Principal = Depends(require_api_key)) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "gateway"}
                     for m in rt.pool.models()]}
