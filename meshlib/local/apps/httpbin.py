"""`kennethreitz/httpbin` (port 80) and `mccutchen/go-httpbin` (port 8080): an HTTP echo service.

- `/headers`: `{"headers": {...}}` with canonical names (`X-B3-Traceid`, `User-Agent`). Like httpbin,
  headers a platform adds (`X-Request-Id`, `X-Forwarded-For`, `Via`...) are hidden unless `?show_env=1`;
  go-httpbin shows every header, each as a list of values.
- `/status/{code}`: answers that status; `200,500` picks one at random, `200:9,500:1` by weight.
- `/delay/{seconds}`: waits (at most 10 s), then answers like `/get`.
- `/get`, `/anything[/...]` (any method), `/ip`, `/user-agent`; `/` a short text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from meshlib.local.apps.base import AppContext, context_of, new_app

MAX_DELAY_SECONDS = 10.0

ENV_HEADERS = frozenset(
    {
        "x-varnish",
        "x-request-start",
        "x-heroku-queue-depth",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-protocol",
        "x-forwarded-ssl",
        "x-heroku-queue-wait-time",
        "x-forwarded-for",
        "x-heroku-dynos-in-use",
        "x-forwarded-port",
        "x-request-id",
        "via",
        "total-route-time",
        "connect-time",
    }
)
"""Headers httpbin hides unless asked with `show_env`."""


def canonical_header_name(name: str) -> str:
    """`x-b3-traceid` -> `X-B3-Traceid`, as httpbin and Go print header names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _headers(request: web.Request, multi: bool) -> dict[str, Any]:
    show_env = request.query.get("show_env", "") not in ("", "0", "false")
    out: dict[str, Any] = {}
    for name, value in request.headers.items():
        if not multi and not show_env and name.lower() in ENV_HEADERS:
            continue
        key = canonical_header_name(name)
        if multi:
            out.setdefault(key, []).append(value)
        elif key in out:
            out[key] = f"{out[key]},{value}"
        else:
            out[key] = value
    return out


def _origin(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded.strip():
        return forwarded.split(",")[0].strip()
    return request.remote or ""


def _url(request: web.Request) -> str:
    host = request.headers.get("Host", request.host)
    return f"{request.scheme}://{host}{request.path_qs}"


def _args(request: web.Request, multi: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        out[key] = values if multi or len(values) > 1 else values[0]
    return out


def _pick_status(spec: str, ctx: AppContext) -> int | None:
    """One status from `418`, `200,500` or `200:9,500:1`; None when the spec is not valid."""
    codes: list[int] = []
    weights: list[float] = []
    for part in spec.split(","):
        code_text, _, weight_text = part.strip().partition(":")
        try:
            code = int(code_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            return None
        if not 100 <= code <= 599 or weight < 0:
            return None
        codes.append(code)
        weights.append(weight)
    if not codes or sum(weights) <= 0:
        return None
    return ctx.rng.choices(codes, weights=weights, k=1)[0]


def create_app_for(multi_value: bool) -> Callable[[AppContext], web.Application]:
    """The httpbin flavour: `multi_value` gives go-httpbin's lists of header values."""

    def create(ctx: AppContext) -> web.Application:
        def echo(request: web.Request) -> dict[str, Any]:
            return {
                "args": _args(request, multi_value),
                "headers": _headers(request, multi_value),
                "origin": _origin(request),
                "url": _url(request),
            }

        async def root(request: web.Request) -> web.Response:
            return web.Response(text="httpbin: HTTP request and response service\n")

        async def headers(request: web.Request) -> web.Response:
            return web.json_response({"headers": _headers(request, multi_value)})

        async def get(request: web.Request) -> web.Response:
            return web.json_response(echo(request))

        async def anything(request: web.Request) -> web.Response:
            raw = await request.read()
            text = raw.decode("utf-8", "replace")
            try:
                parsed: Any = json.loads(raw) if raw else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                parsed = None
            form: dict[str, Any] = {}
            if request.content_type == "application/x-www-form-urlencoded":
                form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
            body = echo(request)
            body.update({"data": text, "files": {}, "form": form, "json": parsed, "method": request.method})
            return web.json_response(body)

        async def status(request: web.Request) -> web.Response:
            code = _pick_status(request.match_info["codes"], context_of(request))
            if code is None:
                return web.Response(status=400, text="Invalid status code")
            headers = {"Location": "/redirect/1"} if 300 <= code < 400 else None
            return web.Response(status=code, headers=headers)

        async def delay(request: web.Request) -> web.Response:
            try:
                seconds = float(request.match_info["seconds"])
            except ValueError:
                return web.Response(status=400, text="Invalid delay")
            await asyncio.sleep(min(max(seconds, 0.0), MAX_DELAY_SECONDS))
            return web.json_response(echo(request))

        async def ip(request: web.Request) -> web.Response:
            return web.json_response({"origin": _origin(request)})

        async def user_agent(request: web.Request) -> web.Response:
            return web.json_response({"user-agent": request.headers.get("User-Agent", "")})

        app = new_app(ctx, client=False)
        app.router.add_get("/", root)
        app.router.add_get("/headers", headers)
        app.router.add_get("/get", get)
        app.router.add_route("*", "/anything", anything)
        app.router.add_route("*", "/anything/{tail:.*}", anything)
        app.router.add_route("*", "/status/{codes}", status)
        app.router.add_route("*", "/delay/{seconds}", delay)
        app.router.add_get("/ip", ip)
        app.router.add_get("/user-agent", user_agent)
        return app

    return create


create_app = create_app_for(multi_value=False)
create_go_httpbin_app = create_app_for(multi_value=True)
