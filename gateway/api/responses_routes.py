"""Stored responses of the Responses API: ``GET`` and ``DELETE /v1/responses/{id}``, ``GET
/v1/responses/{id}/input_items``. An API key reads only its organisation's responses; another
organisation's id answers 404, as an unknown one does. (``POST /v1/responses`` is on the hot path.)"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from gateway.api.deps import get_runtime, require_api_key
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime

router = APIRouter(tags=["openai"])

_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, rt: Runtime = Depends(get_runtime),
                       principal: Principal = Depends(require_api_key)) -> dict[str, Any]:
    response, _ = await rt.responses.get(principal.org_id, response_id)
    return response


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, rt: Runtime = Depends(get_runtime),
                          principal: Principal = Depends(require_api_key)) -> dict[str, Any]:
    await rt.responses.delete(principal.org_id, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(response_id: str, rt: Runtime = Depends(get_runtime),
                      principal: Principal = Depends(require_api_key),
                      limit: Annotated[int, Query(ge=1, le=100)] = 20,
                      order: Literal["asc", "desc"] = "desc", after: str | None = None) -> dict[str, Any]:
    """The input items of one response (this request's, not the earlier turns'), newest first by default."""
    _, items = await rt.responses.get(principal.org_id, response_id)
    listed = [_listed(response_id, i, item) for i, item in enumerate(items)]
    if order == "desc":
        listed.reverse()
    if after is not None:
        ids = [item["id"] for item in listed]
        listed = listed[ids.index(after) + 1:] if after in ids else []
    page = listed[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(listed) > limit}


def _listed(response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it: with a stable id and its status; text content as parts."""
    kind = item["type"]
    out = {**item, "id": f"{_ID_PREFIX.get(kind, 'item')}_{response_id.removeprefix('resp_')}{index:04d}",
           "status": "completed"}
    if kind == "message" and isinstance(item["content"], str):
        part = "output_text" if item["role"] == "assistant" else "input_text"
        out["content"] = [{"type": part, "text": item["content"]}]
    return out
