"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models the healthy workers serve and their aliases,
those the key may use (an API key is needed).

OpenAI's shapes by default; Anthropic's (``{"data": [{"type": "model", ...}], "has_more", "first_id",
"last_id"}`` with ``before_id`` / ``after_id`` / ``limit`` paging) when the request carries
``anthropic-version``, as the anthropic SDK's requests do. Errors follow the same choice (app.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query

from gateway import errors
from gateway.api.deps import get_runtime, require_api_key
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime

router = APIRouter(tags=["openai"])

AnthropicVersion = Annotated[str | None, Header(alias="anthropic-version", include_in_schema=False)]


def _openai(model: str, created: int, root: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "gateway", "root": root}


def _anthropic(model: str, created: int) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": model, "display_name": model, "created_at": stamp}


@router.get("/v1/models")
async def models(rt: Runtime = Depends(get_runtime), principal: Principal = Depends(require_api_key),
                 anthropic_version: AnthropicVersion = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                 after_id: str | None = None, before_id: str | None = None) -> dict[str, Any]:
    created = int(time.time())
    listed = rt.catalog.listing(rt.pool.models(), principal)
    if anthropic_version is None:
        return {"object": "list", "data": [_openai(name, created, root) for name, root in listed]}
    served = sorted(name for name, _ in listed)
    if after_id is not None:
        later = [m for m in served if m > after_id]
        more, served = len(later) > limit, later[:limit]
    elif before_id is not None:
        earlier = [m for m in served if m < before_id]
        more, served = len(earlier) > limit, earlier[-limit:]
    else:
        more, served = len(served) > limit, served[:limit]
    return {"data": [_anthropic(m, created) for m in served], "has_more": more,
            "first_id": served[0] if served else None, "last_id": served[-1] if served else None}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, rt: Runtime = Depends(get_runtime), principal: Principal = Depends(require_api_key),
                anthropic_version: AnthropicVersion = None) -> dict[str, Any]:
    roots = dict(rt.catalog.listing(rt.pool.known_models(), principal))
    if model_id not in roots:
        raise errors.GatewayError(404, f"The model '{model_id[:200]}' does not exist", "invalid_request_error",
                                  code="model_not_found", param="model")
    created = int(time.time())
    if anthropic_version is not None:
        return _anthropic(model_id, created)
    return _openai(model_id, created, roots[model_id])
