"""Liveness and readiness (documented here; ``gateway.app`` answers ``GET`` itself, with the same bodies,
so that the probes never wait for this app to be built)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gateway.api.deps import get_runtime
from gateway.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    status, body = await rt.readiness()
    return JSONResponse(body, status_code=status)
