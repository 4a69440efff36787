"""FastAPI dependencies shared by the routers: the runtime, admin and API-key guards."""

from __future__ import annotations

import hmac

from fastapi import Request

from gateway import errors
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key")


def require_admin(request: Request) -> None:
    admin_key = get_runtime(request).settings.admin_key
    presented = _presented_key(request)
    if not admin_key:
        raise errors.forbidden("The admin API is disabled: set GATEWAY_ADMIN_KEY.")
    if not presented:
        raise errors.missing_key()
    if not hmac.compare_digest(presented.encode(), admin_key.encode()):
        raise errors.invalid_key()


async def require_api_key(request: Request) -> Principal:
    return await get_runtime(request).key_cache.authenticate(_presented_key(request))
