"""`istioinaction/webapp`: the book's front end (port 8080 in the book), an API over catalog and forum.

- `GET /api/catalog` calls `http://{CATALOG_SERVICE_HOST}:{CATALOG_SERVICE_PORT}/items`
  (defaults `catalog.istioinaction` and `80`) and answers the catalog's JSON and status.
- `GET /api/catalog/items/{id}` calls the catalog's `/items/{id}`; `POST /api/catalog/items` posts the body
  to the catalog's `/items`.
- `GET /api/users` calls `http://{FORUM_SERVICE_HOST}:{FORUM_SERVICE_PORT}/api/users`
  (defaults `forum.istioinaction` and `80`).
- `GET /api/healthz` answers 200; `GET /` a small HTML page.

Every call goes through the pod's sidecar and carries the inbound request's headers (all but hop-by-hop
ones, Host and Content-Length), so `x-istio-cohort`, `x-request-id` and B3/`traceparent` reach the next hop.
When the upstream cannot be reached, answers 5xx, or a 2xx that is not JSON, the webapp answers 500 with
the text `error calling Catalog service` (resp. `error calling Forum service`), as the book's webapp does.
Upstream 4xx answers (e.g. an unknown item) are passed through.
"""

from __future__ import annotations

import json

from aiohttp import web

from meshlib.local.apps.base import (
    AppContext,
    UpstreamError,
    call_upstream,
    context_of,
    forwardable_headers,
    new_app,
    session_of,
)

CATALOG_ERROR = "error calling Catalog service"
FORUM_ERROR = "error calling Forum service"

INDEX_HTML = """<!doctype html>
<html><head><title>Istio in Action: webapp</title></head>
<body><h1>webapp</h1><ul>
<li><a href="/api/catalog">/api/catalog</a></li>
<li><a href="/api/users">/api/users</a></li>
</ul></body></html>
"""


def _service_url(ctx: AppContext, prefix: str, default_host: str) -> str:
    host = ctx.env.get(f"{prefix}_SERVICE_HOST") or default_host
    port = ctx.env.get(f"{prefix}_SERVICE_PORT") or "80"
    return f"http://{host}:{port}"


async def _relay(
    request: web.Request, method: str, url: str, error_text: str, body: bytes | None = None
) -> web.Response:
    ctx = context_of(request)
    headers = forwardable_headers(request.headers)
    try:
        upstream = await call_upstream(ctx, session_of(request), method, url, headers, body)
    except UpstreamError as exc:
        ctx.log(f"The HTTP request failed calling {url} with error {exc.reason}")
        return web.Response(status=500, text=error_text)
    if upstream.status >= 500:
        return web.Response(status=500, text=error_text)
    if 200 <= upstream.status < 300 and upstream.body.strip():
        try:
            json.loads(upstream.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=500, text=error_text)
    content_type = upstream.headers.get("Content-Type", "application/json").split(";")[0].strip()
    return web.Response(status=upstream.status, body=upstream.body, content_type=content_type)


def create_app(ctx: AppContext) -> web.Application:
    catalog = _service_url(ctx, "CATALOG", "catalog.istioinaction")
    forum = _service_url(ctx, "FORUM", "forum.istioinaction")

    async def get_catalog(request: web.Request) -> web.Response:
        return await _relay(request, "GET", f"{catalog}/items", CATALOG_ERROR)

    async def get_catalog_item(request: web.Request) -> web.Response:
        return await _relay(request, "GET", f"{catalog}/items/{request.match_info['id']}", CATALOG_ERROR)

    async def create_catalog_item(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            item = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            item = None
        if not isinstance(item, dict):
            return web.Response(status=400, text="Invalid CatalogItem")
        return await _relay(request, "POST", f"{catalog}/items", CATALOG_ERROR, body)

    async def get_users(request: web.Request) -> web.Response:
        return await _relay(request, "GET", f"{forum}/api/users", FORUM_ERROR)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=INDEX_HTML, content_type="text/html")

    app = new_app(ctx)
    app.router.add_get("/", index)
    app.router.add_get("/api/catalog", get_catalog)
    app.router.add_get("/api/catalog/items/{id}", get_catalog_item)
    app.router.add_post("/api/catalog/items", create_catalog_item)
    app.router.add_get("/api/users", get_users)
    app.router.add_get("/api/healthz", healthz)
    return app
