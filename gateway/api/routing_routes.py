"""``POST /admin/routing/explain``: for one request, where the router would send it now and why.

Admin key only, and only with ``GATEWAY_ROUTING_EXPLAIN=true`` (otherwise 404, as if it did not
exist). The request is not sent and no routing state changes: the prefix key is built exactly as on
the request path (the organisation's cache salt, the conversation hint from the given headers and
body), the shared index is read (``prefix_peek``), and the rule is applied with every figure kept
(``gateway/routing/explain.py``). Nothing of this runs on the request path.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway import errors
from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import Name
from gateway.db.gateway_tables import Organization
from gateway.pipeline.principal import Principal


def _explain_enabled(request: Request) -> None:
    if not get_runtime(request).settings.routing_explain:
        raise errors.not_found("Unknown path: set GATEWAY_ROUTING_EXPLAIN=true to explain routing decisions.")


router = APIRouter(prefix="/admin/routing", tags=["admin: routing"],
                   dependencies=[Depends(_explain_enabled), Depends(require_admin)])


class ExplainIn(BaseModel):
    org_id: Name = Field(description="the organisation sending the request (its cache salt roots the prefix key)")
    kind: Literal["chat", "completions"] = Field("chat", description="/v1/chat/completions or /v1/completions")
    body: dict[str, Any] = Field(description="the request body as the client would send it (model included)")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="request headers that matter to routing (x-grok-conv-id, ...)")


@router.post("/explain")
async def explain(payload: ExplainIn, request: Request) -> dict[str, Any]:
    rt = get_runtime(request)
    model = payload.body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.GatewayError(400, "body.model must be a non-empty string.", code="invalid_request_error")
    async with rt.sessions() as s:
        org = await s.get(Organization, payload.org_id)
    if org is None:
        raise errors.not_found(f"organisation {payload.org_id!r} not found")
    principal = Principal(key_id="", org_id=org.id, org_name=org.name, cache_salt=org.cache_salt,
                          cache_isolation=bool(org.cache_isolation))
    headers = {k.lower(): v for k, v in payload.headers.items()}
    decision = await rt.router.explain(principal, payload.body, headers, payload.kind == "chat", model)
    return {"object": "routing.explain", "model": model, **asdict(decision)}
