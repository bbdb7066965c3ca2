"""`curlimages/curl`, `governmentpaas/curl-ssl` (Istio's "sleep" sample): a client inside the mesh.

The runtime drives it over a control endpoint instead of `kubectl exec ... curl`:

`POST /__meshlib/curl` with JSON
`{"url": "http://catalog/items", "method": "GET", "headers": {"x-istio-cohort": "internal"},
"body": "...", "count": 10}` sends the request `count` times (default 1, at most 10000), one after
another, through the pod's sidecar, like `curl` would (User-Agent `curl/8.5.0`, `Accept: */*`, no
compression unless asked). It answers a JSON list with one entry per request:
`{"status": 200, "headers": {...}, "body": "...", "duration_ms": 1.8}`; a request that got no response
has `"status": 0` and `"error"` (as curl prints `000`).

Anything else answers 200 `sleeping`. Like the real container, it writes nothing to its log.
"""

from __future__ import annotations

import json
from time import perf_counter
from typing import Any

from aiohttp import web

from meshlib.local.apps.base import AppContext, UpstreamError, call_upstream, context_of, new_app, session_of

CONTROL_PATH = "/__meshlib/curl"
MAX_COUNT = 10_000
CURL_USER_AGENT = "curl/8.5.0"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class CurlSpecError(ValueError):
    pass


def parse_curl_spec(data: Any) -> tuple[str, str, dict[str, str], bytes | None, int]:
    """(method, url, headers, body, count) from the control request; CurlSpecError says what is wrong."""
    if not isinstance(data, dict):
        raise CurlSpecError('send a JSON object such as {"url": "http://catalog/items"}')
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CurlSpecError("url must be an absolute http:// or https:// URL")
    method = str(data.get("method") or "GET").upper()
    if method not in METHODS:
        raise CurlSpecError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    raw_headers = data.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise CurlSpecError("headers must be a JSON object of name: value")
    headers = {str(name): str(value) for name, value in raw_headers.items()}
    raw_body = data.get("body")
    body: bytes | None
    if raw_body is None:
        body = None
    elif isinstance(raw_body, str):
        body = raw_body.encode()
    else:
        body = json.dumps(raw_body).encode()
        headers.setdefault("Content-Type", "application/json")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise CurlSpecError(f"count must be a whole number between 1 and {MAX_COUNT}")
    return method, url, headers, body, count


def _flat_headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def create_app(ctx: AppContext) -> web.Application:
    async def curl(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        try:
            method, url, headers, body, count = parse_curl_spec(data)
        except CurlSpecError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        has = {name.lower() for name in headers}
        if "user-agent" not in has:
            headers["User-Agent"] = CURL_USER_AGENT
        if "accept" not in has:
            headers["Accept"] = "*/*"
        skip = () if "accept-encoding" in has else ("Accept-Encoding",)
        app_ctx = context_of(request)
        session = session_of(request)
        results: list[dict[str, Any]] = []
        for _ in range(count):
            started = perf_counter()
            try:
                upstream = await call_upstream(app_ctx, session, method, url, headers, body, skip_auto_headers=skip)
            except UpstreamError as exc:
                results.append(
                    {
                        "status": 0,
                        "headers": {},
                        "body": "",
                        "duration_ms": round((perf_counter() - started) * 1000, 3),
                        "error": exc.reason,
                    }
                )
                continue
            results.append(
                {
                    "status": upstream.status,
                    "headers": _flat_headers(upstream.headers),
                    "body": upstream.body.decode("utf-8", "replace"),
                    "duration_ms": round((perf_counter() - started) * 1000, 3),
                }
            )
        return web.json_response(results)

    async def sleeping(request: web.Request) -> web.Response:
        return web.Response(text="sleeping")

    app = new_app(ctx, log_requests=False)
    app.router.add_post(CONTROL_PATH, curl)
    app.router.add_route("*", "/{tail:.*}", sleeping)
    return app
