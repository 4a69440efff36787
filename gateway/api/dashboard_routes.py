"""The usage dashboard: a static page (``/dashboard``) and its assets (``/dashboard/static/*``), shipped in
the package. The page holds no data: its script signs in with the key the user types and reads only
the usage API with it, so an organisation's key can never bring another organisation's data to it."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from gateway import errors

_TYPES = {"dashboard.html": "text/html; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}
# No third-party origin, no inline script, no framing; inline style attributes only (chart legends).
_HEADERS = {"content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                       "base-uri 'none'; form-action 'none'",
            "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-cache"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def _asset(name: str) -> Response:
    if name not in _TYPES:
        raise errors.not_found(f"no dashboard asset {name!r}")
    body = resources.files("gateway.api").joinpath("static", name).read_bytes()
    return Response(body, media_type=_TYPES[name], headers=_HEADERS)


@router.get("/dashboard")
async def dashboard() -> Response:
    return _asset("dashboard.html")


@router.get("/dashboard/static/{name}")
async def dashboard_asset(name: str) -> Response:
    return _asset(name)
