"""The OpenAPI schema: FastAPI's routes plus the two OpenAI endpoints, which a raw ASGI endpoint serves in
front of FastAPI (``POST /v1/chat/completions`` and ``POST /v1/completions``), so that they are
documented with their request bodies, their answers (JSON or an event stream) and the error shape."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

_REF = "#/components/schemas/{model}"


class StreamOptions(BaseModel):
    include_usage: bool | None = Field(default=None, description="a last chunk with the token usage (the gateway "
                                                                 "always meters streams)")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(description="system, user, assistant, tool ...")
    content: str | list[dict[str, Any]] | None = Field(default=None, description="text or content parts")
    name: str | None = None


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")  # every other field goes to the worker untouched

    model: str = Field(min_length=1, description="a model that a healthy worker serves (see GET /v1/models)")
    stream: bool = Field(default=False, description="answer as server-sent events")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = Field(default=None, description="an end-user id for usage reports (or x-end-user-id)")


class ChatCompletionRequest(_Sampling):
    """OpenAI's chat completions request; fields not listed are forwarded to the worker as they are."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Sampling):
    """OpenAI's (legacy) completions request; fields not listed are forwarded to the worker as they are."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="a string, strings, token ids, or lists of token ids")


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, permission_error, requests, tokens, "
                                  "insufficient_quota, upstream_error, service_unavailable ...")
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error of the gateway, on every route."""

    error: ErrorDetail


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """The worker's answer as it sent it (OpenAI's chat.completion or text_completion object)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion", "text_completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None


_ERRORS = {
    "400": "invalid request (the body, a field, the JSON)",
    "401": "missing or wrong API key",
    "404": "unknown model",
    "405": "not POST",
    "413": "request body too large",
    "429": "a rate limit or a spend cap",
    "502": "the worker failed",
    "503": "no healthy worker, or the rate limits cannot be checked",
    "504": "the worker did not answer in time",
}


def _operation(summary: str, request: str, operation_id: str) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}
    return {
        "tags": ["openai"],
        "summary": summary,
        "operationId": operation_id,
        "security": [{"APIKey": []}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF.format(model=request)}}}},
        "responses": {
            "200": {"description": "the completion (JSON), or with stream=true server-sent events ending in "
                                   "`data: [DONE]`",
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model="CompletionResponse")}},
                                "text/event-stream": {"schema": {"type": "string"}}}},
            **{status: {"description": text, "content": error} for status, text in _ERRORS.items()},
        },
    }


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (ChatCompletionRequest, CompletionRequest, ErrorResponse, CompletionResponse):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` by FastAPI's schema plus the two OpenAI endpoints (built once)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, tags=app.openapi_tags)
            paths = schema.setdefault("paths", {})
            paths["/v1/chat/completions"] = {"post": _operation(
                "Create a chat completion", "ChatCompletionRequest", "create_chat_completion")}
            paths["/v1/completions"] = {"post": _operation(
                "Create a completion", "CompletionRequest", "create_completion")}
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(_components())
            components.setdefault("securitySchemes", {})["APIKey"] = {
                "type": "http", "scheme": "bearer", "description": "an API key (sk-gw-...), or the x-api-key header"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
