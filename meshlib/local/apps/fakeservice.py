"""`nicholasjackson/fake-service`: a configurable service for building call graphs.

Every path (except `/health` and `/ready`) answers JSON shaped like fake-service's:
`name, uri, type ("HTTP"), ip_addresses, start_time, end_time, duration, body, upstream_calls, code`
(and `error` when something failed).

Env:

- NAME (default `Service`), MESSAGE (the `body`, default `Hello World`).
- LISTEN_ADDR like `0.0.0.0:9090`: only the port matters (see `listen_port`); the runtime binds.
- UPSTREAM_URIS: comma list of http URLs, called one after another through the sidecar; each answer is
  nested under `upstream_calls[uri]`. An upstream that fails or answers non-2xx makes this service answer
  500 with `error` set.
- ERROR_RATE (0..1), ERROR_CODE (default 500), ERROR_TYPE `http_error` (default) or `delay`
  (then ERROR_DELAY, a duration, is added instead of an error code).
- TIMING_50_PERCENTILE, TIMING_90_PERCENTILE, TIMING_99_PERCENTILE (durations such as `10ms`, `1s`):
  the service time. Half of the requests take the median, the others are spread between the
  percentiles, so the observed quantiles match. TIMING_VARIANCE (a whole percent; anything else
  counts as 0, as in fake-service) jitters each duration.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Any

from aiohttp import web

from meshlib.local.apps.base import (
    TRACE_HEADERS,
    AppConfigError,
    AppContext,
    UpstreamError,
    call_upstream,
    context_of,
    forwardable_headers,
    new_app,
    session_of,
)
from meshlib.units import parse_duration

IMAGE = "nicholasjackson/fake-service"
DEFAULT_PORT = 9090
INJECTED_ERROR = "Service error automatically injected"


def listen_port(env: dict[str, str]) -> int:
    """The port fake-service listens on, from LISTEN_ADDR (`0.0.0.0:9090`, `:9090` or `9090`)."""
    value = env.get("LISTEN_ADDR", "").strip()
    if not value:
        return DEFAULT_PORT
    port_text = value.rsplit(":", 1)[-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AppConfigError(IMAGE, "LISTEN_ADDR", value, "an address such as 0.0.0.0:9090")
    return int(port_text)


def format_go_duration(seconds: float) -> str:
    """A duration as Go prints one: `1.234567ms`, `2.5s`, `850µs`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs"
    if seconds < 1:
        return f"{seconds * 1e3:.6f}".rstrip("0").rstrip(".") + "ms"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class Settings:
    name: str
    message: str
    upstreams: tuple[str, ...]
    error_rate: float
    error_code: int
    error_type: str
    error_delay: float
    p50: float
    p90: float
    p99: float
    variance: float


def _duration(env: dict[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise AppConfigError(IMAGE, name, value, "a duration such as 10ms or 1s") from exc


def _number(env: dict[str, str], name: str, default: float, low: float, high: float, expected: str) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise AppConfigError(IMAGE, name, value, expected) from exc
    if not low <= number <= high:
        raise AppConfigError(IMAGE, name, value, expected)
    return number


def read_settings(env: dict[str, str]) -> Settings:
    upstreams = tuple(uri.strip() for uri in env.get("UPSTREAM_URIS", "").split(",") if uri.strip())
    for uri in upstreams:
        if not uri.startswith(("http://", "https://")):
            raise AppConfigError(IMAGE, "UPSTREAM_URIS", env["UPSTREAM_URIS"], "a comma list of http:// URLs")
    error_type = env.get("ERROR_TYPE", "").strip() or "http_error"
    if error_type not in {"http_error", "delay"}:
        raise AppConfigError(IMAGE, "ERROR_TYPE", error_type, "http_error or delay")
    p50 = _duration(env, "TIMING_50_PERCENTILE", 0.0)
    p90 = _duration(env, "TIMING_90_PERCENTILE", p50)
    p99 = _duration(env, "TIMING_99_PERCENTILE", p90)
    return Settings(
        name=env.get("NAME", "Service"),
        message=env.get("MESSAGE", "Hello World"),
        upstreams=upstreams,
        error_rate=_number(env, "ERROR_RATE", 0.0, 0.0, 1.0, "a number between 0 and 1"),
        error_code=int(_number(env, "ERROR_CODE", 500, 100, 599, "an HTTP status code such as 500")),
        error_type=error_type,
        error_delay=_duration(env, "ERROR_DELAY", 0.0),
        p50=p50,
        p90=max(p90, p50),
        p99=max(p99, p90, p50),
        variance=_variance(env),
    )


def _variance(env: dict[str, str]) -> float:
    """TIMING_VARIANCE as fake-service reads it: a whole percentage; anything else (the book's `40ms`) is 0, as
    its integer parse leaves the default (nicholasjackson/fake-service main.go, env.Int)."""
    value = env.get("TIMING_VARIANCE", "").strip()
    return float(min(int(value), 100)) if value.isdigit() else 0.0


def service_time(settings: Settings, roll: float, jitter: float) -> float:
    """Seconds of simulated work for one request.

    `roll` in [0, 1) picks the band: below 0.5 the median; up to 0.9 between p50 and p90; up to 0.99
    between p90 and p99; above, p99. `jitter` in [-1, 1] scales by ±TIMING_VARIANCE percent.
    """
    if roll < 0.5:
        seconds = settings.p50
    elif roll < 0.9:
        seconds = settings.p50 + (settings.p90 - settings.p50) * (roll - 0.5) / 0.4
    elif roll < 0.99:
        seconds = settings.p90 + (settings.p99 - settings.p90) * (roll - 0.9) / 0.09
    else:
        seconds = settings.p99
    return max(0.0, seconds * (1 + jitter * settings.variance / 100))


def _trace_header(name: str) -> bool:
    return name in TRACE_HEADERS


def create_app(ctx: AppContext) -> web.Application:
    settings = read_settings(ctx.env)

    async def call_upstreams(request: web.Request) -> tuple[dict[str, Any], str | None]:
        app_ctx = context_of(request)
        headers = forwardable_headers(request.headers, keep=_trace_header)
        calls: dict[str, Any] = {}
        error: str | None = None
        for uri in settings.upstreams:
            try:
                upstream = await call_upstream(app_ctx, session_of(request), "GET", uri, headers, None)
            except UpstreamError as exc:
                calls[uri] = {"uri": uri, "code": -1, "error": exc.reason}
                error = error or f"Error processing upstream request: {uri}"
                continue
            try:
                nested: Any = json.loads(upstream.body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                nested = None
            if not isinstance(nested, dict):
                nested = {"uri": uri, "body": upstream.body.decode("utf-8", "replace")}
            nested.setdefault("uri", uri)
            nested["code"] = upstream.status
            calls[uri] = nested
            if not 200 <= upstream.status < 300:
                error = error or f"Error processing upstream request: {uri}"
        return calls, error

    async def handle(request: web.Request) -> web.Response:
        app_ctx = context_of(request)
        started = datetime.now()
        clock = perf_counter()
        await asyncio.sleep(service_time(settings, app_ctx.rng.random(), app_ctx.rng.uniform(-1.0, 1.0)))
        upstream_calls, error = await call_upstreams(request)
        code = 200 if error is None else 500
        if error is None and settings.error_rate > 0 and app_ctx.rng.random() < settings.error_rate:
            if settings.error_type == "delay":
                await asyncio.sleep(settings.error_delay)
            else:
                code, error = settings.error_code, INJECTED_ERROR
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        ip = str(sockname[0]) if isinstance(sockname, tuple) and sockname else "127.0.0.1"
        body: dict[str, Any] = {
            "name": settings.name,
            "uri": request.path_qs,
            "type": "HTTP",
            "ip_addresses": [ip],
            "start_time": started.isoformat(timespec="microseconds"),
            "end_time": datetime.now().isoformat(timespec="microseconds"),
            "duration": format_go_duration(perf_counter() - clock),
            "body": settings.message,
            "upstream_calls": upstream_calls,
            "code": code,
        }
        if error is not None:
            body["error"] = error
        return web.json_response(body, status=code)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app = new_app(ctx, client=bool(settings.upstreams))
    app.router.add_get("/health", health)
    app.router.add_get("/ready", health)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
