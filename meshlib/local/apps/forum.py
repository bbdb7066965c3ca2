"""`istioinaction/forum`: the book's forum service (port 8080), a client of an external API.

- `GET /api/users` calls `http://jsonplaceholder.typicode.com/users` through the pod's sidecar, which
  decides whether the call may leave the mesh (ALLOW_ANY, REGISTRY_ONLY and ServiceEntry); the app never
  calls it directly. It carries the inbound `x-*` and trace headers. A failed call or a non-2xx answer
  gives 500 `error calling Users service` (what the book shows under REGISTRY_ONLY).
  With env LOCAL_USERS=true it answers a fixed user list without calling anyone.
- `GET /api/healthz` answers 200.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from meshlib.local.apps.base import (
    TRACE_HEADERS,
    AppContext,
    UpstreamError,
    call_upstream,
    context_of,
    forwardable_headers,
    new_app,
    session_of,
)

USERS_URL = "http://jsonplaceholder.typicode.com/users"
USERS_ERROR = "error calling Users service"

LOCAL_USERS: list[dict[str, Any]] = [
    {
        "id": 10,
        "name": "Clementina DuBuque",
        "username": "Moriah.Stanton",
        "email": "Rey.Padberg@karina.biz",
        "address": {
            "street": "Kattie Turnpike",
            "suite": "Suite 198",
            "city": "Lebsackbury",
            "zipcode": "31428-2261",
            "geo": {"lat": "-38.2386", "lng": "57.2232"},
        },
        "phone": "024-648-3804",
        "website": "ambrose.net",
        "company": {
            "name": "Hoeger LLC",
            "catchPhrase": "Centralized empowering task-force",
            "bs": "target end-to-end models",
        },
    }
]


def _forwarded(name: str) -> bool:
    return name.startswith("x-") or name in TRACE_HEADERS


def create_app(ctx: AppContext) -> web.Application:
    local_users = ctx.flag("LOCAL_USERS")

    async def users(request: web.Request) -> web.Response:
        if local_users:
            return web.json_response(LOCAL_USERS)
        app_ctx = context_of(request)
        headers = forwardable_headers(request.headers, keep=_forwarded)
        try:
            upstream = await call_upstream(app_ctx, session_of(request), "GET", USERS_URL, headers, None)
        except UpstreamError as exc:
            app_ctx.log(f"The HTTP request failed calling Users service with error {exc.reason}")
            return web.Response(status=500, text=USERS_ERROR)
        if not 200 <= upstream.status < 300:
            return web.Response(status=500, text=USERS_ERROR)
        try:
            json.loads(upstream.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=500, text=USERS_ERROR)
        return web.Response(body=upstream.body, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = new_app(ctx)
    app.router.add_get("/api/users", users)
    app.router.add_get("/api/healthz", healthz)
    return app
