"""`istioinaction/catalog`: the book's catalog service (port 3000 in the book).

Endpoints (also under `/api/...`, as the book's json-server rewrite allows):

- `GET /items`: the item list; each item gets `imageUrl` when env SHOW_IMAGE is true (v2 of the book).
- `GET /items/{id}`: one item, or 404 `{"error": "item 7 not found"}`.
- `POST /items`: adds the JSON object sent, with the next id; answers 201 with the stored item.
- `GET /healthz`: 200.

Log: one line per request, `METHOD HOST URL STATUS` with the Host header verbatim, e.g.
`GET catalog-shadow:80 /items 200` for a mirrored request (`-` as STATUS for a dropped connection).

Failure injection ("blowups", as the book's `bin/chaos.sh` uses them); they hit only paths containing
`items`, so the blowup API itself and health checks keep working:

- `POST /blowup` with a JSON object enables one failure mode, replacing an earlier one of the same mode:
  `{"mode": "500" | "latency" | "drop", "percentage": 50, "latency_ms": 1000, "volatile": false}`.
  The book's spelling is accepted too: `type` for `mode`, `latencyMs` for `latency_ms`, and
  `{"active": false, "type": "500"}` switches a mode off. `percentage` (0..100, default 100) is the share
  of requests hit. `500` answers an empty 500; `latency` waits `latency_ms` (a uniform 0..latency_ms
  when `volatile`) and then answers normally; `drop` closes the connection without any response.
  Answers 200 with the active blowups.
- `DELETE /blowup` switches every mode off; with a body `{"mode": "500"}` (or `{"type": "500"}`) only
  that one.
- `GET /blowup` lists the active blowups.
- Env sets one at start: BLOWUP_MODE (or BLOWUP_TYPE), BLOWUP_PERCENTAGE, BLOWUP_LATENCY_MS, BLOWUP_VOLATILE.

A request hit by several modes gets the latency first, then a drop, then a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from meshlib.local.apps.base import (
    AppConfigError,
    AppContext,
    Handler,
    Middleware,
    context_of,
    drop_connection,
    new_app,
)

IMAGE = "istioinaction/catalog"
IMAGE_URL = "http://lorempixel.com/640/480"
MODES = ("latency", "drop", "500")

INITIAL_ITEMS: tuple[dict[str, Any], ...] = (
    {"id": 1, "color": "amber", "department": "Eyewear", "name": "Elinor Glasses", "price": "282.00"},
    {"id": 2, "color": "cyan", "department": "Clothing", "name": "Atlas Shirt", "price": "127.00"},
    {"id": 3, "color": "teal", "department": "Clothing", "name": "Small Metal Shoes", "price": "232.00"},
    {"id": 4, "color": "red", "department": "Watches", "name": "Red Dragon Watch", "price": "232.00"},
)


@dataclass
class Blowup:
    mode: str
    percentage: float = 100.0
    latency_ms: int = 1000
    volatile: bool = False


class BlowupSpecError(ValueError):
    pass


def parse_blowup(data: Mapping[str, Any]) -> Blowup | None:
    """A blowup from the JSON body of `POST /blowup`; None when it switches a mode off (`active: false`)."""
    mode = str(data.get("mode", data.get("type", ""))).strip().lower()
    if mode not in MODES:
        raise BlowupSpecError(f"mode must be one of {', '.join(MODES)}, got {mode or 'nothing'!r}")
    if data.get("active", True) in (False, "false"):
        return None
    try:
        percentage = float(data.get("percentage", 100))
        latency_ms = int(data.get("latency_ms", data.get("latencyMs", 1000)))
    except (TypeError, ValueError) as exc:
        raise BlowupSpecError("percentage and latency_ms must be numbers") from exc
    if not 0 <= percentage <= 100:
        raise BlowupSpecError(f"percentage must be between 0 and 100, got {percentage:g}")
    if latency_ms < 0:
        raise BlowupSpecError(f"latency_ms must not be negative, got {latency_ms}")
    volatile = data.get("volatile", False) in (True, "true", 1)
    return Blowup(mode, percentage, latency_ms, volatile)


def _blowup_from_env(ctx: AppContext) -> Blowup | None:
    mode = ctx.env.get("BLOWUP_MODE") or ctx.env.get("BLOWUP_TYPE")
    if not mode:
        return None
    spec: dict[str, Any] = {
        "mode": mode,
        "percentage": ctx.env.get("BLOWUP_PERCENTAGE", "100"),
        "latency_ms": ctx.env.get("BLOWUP_LATENCY_MS", "1000"),
        "volatile": ctx.flag("BLOWUP_VOLATILE"),
    }
    try:
        return parse_blowup(spec)
    except BlowupSpecError as exc:
        raise AppConfigError(IMAGE, "BLOWUP_*", json.dumps(spec), str(exc)) from exc


class Catalog:
    """The item store and the active blowups of one catalog pod."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.show_image = ctx.flag("SHOW_IMAGE")
        self.items: list[dict[str, Any]] = [dict(item) for item in INITIAL_ITEMS]
        self.next_id = max(int(item["id"]) for item in INITIAL_ITEMS) + 1
        self.blowups: dict[str, Blowup] = {}
        initial = _blowup_from_env(ctx)
        if initial is not None:
            self.blowups[initial.mode] = initial

    def view(self, item: dict[str, Any]) -> dict[str, Any]:
        shown = dict(item)
        if self.show_image:
            shown["imageUrl"] = IMAGE_URL
        return shown

    def hits(self, blowup: Blowup) -> bool:
        return self.ctx.rng.random() * 100 < blowup.percentage

    async def list_items(self, request: web.Request) -> web.Response:
        return web.json_response([self.view(item) for item in self.items])

    async def get_item(self, request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        for item in self.items:
            if str(item.get("id")) == wanted:
                return web.json_response(self.view(item))
        return web.json_response({"error": f"item {wanted} not found"}, status=404)

    async def add_item(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return web.json_response({"error": "send a JSON object describing the item"}, status=400)
        item = dict(data)
        item["id"] = self.next_id
        self.next_id += 1
        self.items.append(item)
        return web.json_response(self.view(item), status=201)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def blowup_state(self) -> list[dict[str, Any]]:
        return [asdict(blowup) for blowup in self.blowups.values()]

    async def get_blowups(self, request: web.Request) -> web.Response:
        return web.json_response(self.blowup_state())

    async def post_blowup(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return web.json_response({"error": 'send a JSON object such as {"mode": "500"}'}, status=400)
        try:
            blowup = parse_blowup(data)
        except BlowupSpecError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        mode = str(data.get("mode", data.get("type"))).strip().lower()
        if blowup is None:
            self.blowups.pop(mode, None)
        else:
            self.blowups[mode] = blowup
        return web.json_response(self.blowup_state())

    async def delete_blowup(self, request: web.Request) -> web.Response:
        data: Any = None
        if request.can_read_body:
            try:
                data = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
        mode = data.get("mode", data.get("type")) if isinstance(data, dict) else None
        if mode:
            self.blowups.pop(str(mode).strip().lower(), None)
        else:
            self.blowups.clear()
        return web.json_response(self.blowup_state())


def _blowup_middleware(catalog: Catalog) -> Middleware:
    @web.middleware
    async def blow_up(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "items" in request.path and catalog.blowups:
            latency = catalog.blowups.get("latency")
            if latency is not None and catalog.hits(latency):
                delay_ms = latency.latency_ms
                if latency.volatile:
                    delay_ms = int(context_of(request).rng.random() * delay_ms)
                await asyncio.sleep(delay_ms / 1000)
            drop = catalog.blowups.get("drop")
            if drop is not None and catalog.hits(drop):
                return drop_connection(request)
            error = catalog.blowups.get("500")
            if error is not None and catalog.hits(error):
                return web.Response(status=500)
        return await handler(request)

    return blow_up


def create_app(ctx: AppContext) -> web.Application:
    catalog = Catalog(ctx)
    app = new_app(ctx, client=False)
    app.middlewares.append(_blowup_middleware(catalog))
    for prefix in ("", "/api"):
        app.router.add_get(f"{prefix}/items", catalog.list_items)
        app.router.add_post(f"{prefix}/items", catalog.add_item)
        app.router.add_get(f"{prefix}/items/{{id}}", catalog.get_item)
    app.router.add_get("/blowup", catalog.get_blowups)
    app.router.add_post("/blowup", catalog.post_blowup)
    app.router.add_delete("/blowup", catalog.delete_blowup)
    app.router.add_get("/healthz", catalog.healthz)
    return app
