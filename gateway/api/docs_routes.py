"""The front door (``GET /``) and the API docs (``GET /docs``), served without a network: Swagger UI's
script and style ship in the package (``api/static/swagger-ui/``) instead of coming from a CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from gateway import errors

_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
           "favicon-32x32.png": "image/png"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def front_door(request: Request) -> dict[str, object]:
    root = request.scope.get("root_path", "")
    return {"object": "gateway", "name": request.app.title, "version": request.app.version,
            "links": {"docs": f"{root}/docs", "openapi": f"{root}/openapi.json", "dashboard": f"{root}/dashboard",
                      "health": f"{root}/health", "models": f"{root}/v1/models",
                      "chat_completions": f"{root}/v1/chat/completions"}}


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json", title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js", swagger_css_url=f"{root}/docs/static/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/static/favicon-32x32.png",
        # No validator badge: it would send the schema's URL to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})


@router.get("/docs/static/{name}")
async def docs_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise errors.not_found(f"no docs asset {name!r}")
    body = resources.files("gateway.api").joinpath("static", "swagger-ui", name).read_bytes()
    return Response(body, media_type=_ASSETS[name], headers={"cache-control": "public, max-age=86400"})
