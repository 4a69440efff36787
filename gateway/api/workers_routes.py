"""The admin API for workers added at runtime (stored in SQL; every replica picks them up within
``GATEWAY_WORKER_SYNC_INTERVAL_S``). Guarded by the admin key. ``gateway workers ...`` does the same.

A worker's key is given as ``os.environ/NAME`` only and shown as that reference; header values are never
shown, only their names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import ModelName, PathId, WorkerUrl
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class WorkerIn(BaseModel):
    url: WorkerUrl
    api_key: str | None = Field(default=None, max_length=200, examples=["os.environ/VLLM_API_KEY"],
                                description="os.environ/NAME: the variable holding the worker's key on every "
                                            "replica (sent as Authorization: Bearer to this worker only)")
    headers: dict[str, str] | None = Field(default=None, max_length=32,
                                           description="extra headers sent to this worker only")
    models: list[ModelName] | None = Field(default=None, max_length=100,
                                           description="the models it serves; null: read from its /v1/models")


@router.post("/workers", status_code=201)
async def add_worker(body: WorkerIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return (await rt.workers.add(body.url, body.api_key, body.headers, body.models)).describe()


@router.get("/workers")
async def list_workers(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [w.describe() for w in rt.pool.all()]}


@router.delete("/workers/{worker_id}")
async def remove_worker(worker_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    await rt.workers.remove(worker_id)
    return {"id": worker_id, "deleted": True}
