"""``GET /v1/models``: the models the healthy workers serve and their aliases, those the key may use, in OpenAI's
list shape (an API key is needed)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends

from gateway.api.deps import get_runtime, require_api_key
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
async def models(rt: Runtime = Depends(get_runtime),
                 principal: Principal = Depends(require_api_key)) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "gateway", "root": served}
                     for name, served in rt.catalog.listing(rt.pool.models(), principal)]}
