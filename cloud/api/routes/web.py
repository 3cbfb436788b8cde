"""The operations page and the API's documentation (Swagger UI): static files of
cloud/web and their libraries from npm, all served from here (no CDN: county networks are
often closed to the internet)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cloud.errors import NotFound

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
REPOSITORY_NODE_MODULES = Path(__file__).resolve().parents[3] / "node_modules"
# What the page loads from npm packages: URL name → path inside node_modules.
VENDOR = {
    "echarts.min.js": "echarts/dist/echarts.min.js",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "favicon-32x32.png": "swagger-ui-dist/favicon-32x32.png",
}
PAGE_FILES = {"app.js", "i18n.js", "charts.js", "style.css"}
# The page talks to this service only; ECharts sets inline styles on its elements.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ops/")


@router.get("/ops/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers=SECURITY_HEADERS)


@router.get("/ops/{name}")
async def page_file(name: str) -> FileResponse:
    if name not in PAGE_FILES:
        raise NotFound(f"no page file {name}")
    return FileResponse(WEB_DIR / name, headers=SECURITY_HEADERS)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """The API to try in the browser (sign in with "Authorize")."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="gridwatch API",
        swagger_js_url="/ops/vendor/swagger-ui-bundle.js",
        swagger_css_url="/ops/vendor/swagger-ui.css",
        swagger_favicon_url="/ops/vendor/favicon-32x32.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc() -> RedirectResponse:
    # ReDoc's bundle fetches its maker's logo from their CDN on every view, which a county's
    # closed network should not see: the one API page is Swagger UI's.
    return RedirectResponse("/docs")


@router.get("/ops/vendor/{name}")
async def vendor_file(request: Request, name: str) -> Response:
    if name not in VENDOR:
        raise NotFound(f"no library {name}")
    base: Path = request.app.state.settings.web_vendor_dir or REPOSITORY_NODE_MODULES
    path = base / VENDOR[name]
    if not path.is_file():
        return Response(
            f"{path} is missing: install the page's libraries with `make setup` (npm ci) "
            "or point CLOUD_WEB_VENDOR_DIR at a node_modules that has them",
            status_code=503,
            media_type="text/plain",
        )
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
