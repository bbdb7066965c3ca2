"""What every builtin container image shares: its context, outbound calls through the sidecar, logging.

A builtin image is an `AppFactory`: a function from an `AppContext` to an `aiohttp.web.Application`.
The runtime builds the app, serves it on the pod's loopback address and port (`start_app` does exactly
that), and stops it with `RunningApp.close()`, which runs the app's cleanup (its client session closes).

Outbound calls never leave the pod directly: `call_upstream` sends them to the pod's sidecar as an
explicit HTTP proxy (absolute-form request target), as `HTTP_PROXY` would. Without a sidecar only
loopback targets may be called, so nothing ever reaches an address beyond 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from meshlib.errors import MeshlibError

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=30.0, sock_connect=5.0)
"""Every outbound call of a builtin app is bounded by this timeout."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1)."""

TRACE_HEADERS = frozenset(
    {
        "x-request-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "b3",
        "traceparent",
        "tracestate",
        "x-ot-span-context",
        "x-cloud-trace-context",
    }
)
"""Headers an app must copy from its inbound request to its outbound calls for traces to join up."""


@dataclass
class AppContext:
    """What a container sees of its pod."""

    env: dict[str, str]
    """Container env, already resolved (includes KUBERNETES_NAMESPACE)."""
    log: Callable[[str], None]
    """Writes one line to the container's log (the container's stdout)."""
    proxy: str | None
    """URL of the pod's sidecar outbound proxy, e.g. `http://127.0.0.1:41234`; None without a sidecar."""
    namespace: str
    pod_name: str
    rng: random.Random = field(default_factory=random.Random)
    """Injected randomness (ERROR_RATE, blowup percentages, timing bands)."""

    def flag(self, name: str, default: bool = False) -> bool:
        """An env var read as a boolean: true/1/yes/on (any case) is true."""
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip().lower() in {"true", "1", "yes", "on"}


AppFactory = Callable[[AppContext], web.Application]


class UpstreamError(MeshlibError):
    """An outbound call got no HTTP response: refused, reset, timed out, or no way out of the pod."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"{method} {url} failed: {reason}")


class AppConfigError(MeshlibError):
    """A builtin image got a container env it cannot work with."""

    def __init__(self, image: str, variable: str, value: str, expected: str) -> None:
        self.image = image
        self.variable = variable
        super().__init__(
            f"{image}: env {variable}={value!r} is not valid: expected {expected}; "
            f"fix the container's env in the Deployment"
        )


class UpstreamResponse(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes


SESSION_KEY = web.AppKey("meshlib_client_session", aiohttp.ClientSession)
CONTEXT_KEY = web.AppKey("meshlib_app_context", AppContext)


def new_app(ctx: AppContext, *, client: bool = True, log_requests: bool = True) -> web.Application:
    """An application with the per-request log line (when `log_requests`) and, when `client`, one
    ClientSession opened on startup and closed on cleanup."""
    app = web.Application(middlewares=[access_log_middleware(ctx)] if log_requests else [])
    app[CONTEXT_KEY] = ctx
    if client:

        async def open_session(app: web.Application) -> None:
            app[SESSION_KEY] = aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT)

        async def close_session(app: web.Application) -> None:
            session = app.get(SESSION_KEY)
            if session is not None:
                await session.close()

        app.on_startup.append(open_session)
        app.on_cleanup.append(close_session)
    return app


def session_of(request: web.Request) -> aiohttp.ClientSession:
    return request.app[SESSION_KEY]


def context_of(request: web.Request) -> AppContext:
    return request.app[CONTEXT_KEY]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def access_log_middleware(ctx: AppContext) -> Middleware:
    """One log line per request: `METHOD HOST URL STATUS`, the Host header verbatim (`-` when absent).

    STATUS is `-` when no response was sent (connection dropped, client went away).
    """

    @web.middleware
    async def log_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = "-"
        try:
            response = await handler(request)
            transport = request.transport
            if transport is not None and not transport.is_closing():
                status = str(response.status)
            return response
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        except Exception:
            status = "500"
            raise
        finally:
            host = request.headers.get("Host", "-")
            ctx.log(f"{request.method} {host} {request.raw_path} {status}")

    return log_request


def drop_connection(request: web.Request) -> web.Response:
    """Close the client's connection without a response; return a placeholder aiohttp never sends."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


def forwardable_headers(
    headers: Mapping[str, str] | CIMultiDict[str], keep: Callable[[str], bool] | None = None
) -> CIMultiDict[str]:
    """Inbound headers fit to forward upstream: no hop-by-hop ones, no Host, no Content-Length.

    `keep`, when given, further selects by lower-case header name.
    """
    items = headers.items()
    connection_named: set[str] = set()
    for name, value in items:
        if name.lower() == "connection":
            connection_named.update(token.strip().lower() for token in value.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower in {"host", "content-length"}:
            continue
        if keep is not None and not keep(lower):
            continue
        out.add(name, value)
    return out


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def call_upstream(
    ctx: AppContext,
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str] | CIMultiDict[str] | None = None,
    body: bytes | None = None,
    *,
    skip_auto_headers: Iterable[str] = (),
) -> UpstreamResponse:
    """Send one request through the pod's sidecar (`ctx.proxy`, its capture listener) and read the whole response.

    The Host header is the URL's authority as written (`catalog.istioinaction:80` keeps its port), unless
    `headers` sets one. Redirects are not followed. Raises `UpstreamError` when no HTTP response comes
    back (refused, reset, timeout) or when there is no sidecar and the target is not loopback.
    """
    parsed = URL(url)
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise UpstreamError(method, url, "only absolute http:// or https:// URLs can be called")
    # Rebuilt so that `http://api:9090` goes out as `http://api:9090/`: aiohttp would otherwise send an
    # absolute-form target with an empty path, which aiohttp-based proxies route as a 404.
    target = URL.build(
        scheme=parsed.scheme,
        authority=parsed.raw_authority,
        path=parsed.raw_path or "/",
        query_string=parsed.raw_query_string,
        encoded=True,
    )
    if ctx.proxy is None and not _is_loopback(target.host):
        raise UpstreamError(
            method,
            url,
            f"pod {ctx.namespace}/{ctx.pod_name} has no sidecar proxy, and without one only loopback "
            "addresses can be called; inject a sidecar into the pod",
        )
    out: CIMultiDict[str] = CIMultiDict(headers or {})
    if "Host" not in out:
        host = str(parsed.raw_host)
        if ":" in host:
            host = f"[{host}]"
        port = parsed.explicit_port
        out["Host"] = f"{host}:{port}" if port is not None else host
    if ctx.proxy is not None:
        # as Istio's iptables capture does: the connection goes to the sidecar, the request names its destination
        # only in Host (`catalog.istioinaction:80` keeps its port, which an absolute-form target would lose)
        sidecar = URL(ctx.proxy)
        target = URL.build(scheme="http", host=sidecar.raw_host or "127.0.0.1", port=sidecar.port,
                           path=target.raw_path, query_string=target.raw_query_string, encoded=True)
    try:
        async with session.request(
            method,
            target,
            headers=out,
            data=body,
            allow_redirects=False,
            skip_auto_headers=tuple(skip_auto_headers),
        ) as response:
            payload = await response.read()
            return UpstreamResponse(response.status, CIMultiDict(response.headers), payload)
    except TimeoutError as exc:
        raise UpstreamError(method, url, f"no response within {UPSTREAM_TIMEOUT.total:g}s") from exc
    except aiohttp.ClientError as exc:
        via = f" via sidecar {ctx.proxy}" if ctx.proxy else ""
        reason = f"{exc.__class__.__name__}: {str(exc) or 'connection failed'}{via}"
        raise UpstreamError(method, url, reason) from exc


@dataclass
class RunningApp:
    """A builtin app being served; `close()` stops it and runs its cleanup."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> RunningApp:
    """Serve `app` on host:port (port 0 picks a free one) and return where it listens."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return RunningApp(runner, host, bound)
