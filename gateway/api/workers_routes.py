"""The admin API for workers added at runtime (stored in SQL; every replica picks them up within
``GATEWAY_WORKER_SYNC_INTERVAL_S``). Guarded by the admin key. ``gateway workers ...`` does the same."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import PathId, WorkerUrl
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class WorkerIn(BaseModel):
    url: WorkerUrl


@router.post("/workers", status_code=201)
async def add_worker(body: WorkerIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return (await rt.workers.add(body.url)).describe()


@router.get("/workers")
async def list_workers(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [w.describe() for w in rt.pool.all()]}


@router.delete("/workers/{worker_id}")
async def remove_worker(worker_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    await rt.workers.remove(worker_id)
    return {"id": worker_id, "deleted": True}
