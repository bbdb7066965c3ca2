"""The embedded Envoy: gateway and sidecar proxies that route real HTTP by the translated config.

Route selection is `meshlib.router.select_route` over the proxy's `ProxyConfig` (what `proxy-config`
shows is what runs). This module adds what happens on the wire: endpoints, retries, timeouts, mirrors,
faults, header operations, access logs and Istio metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from meshlib.local.logs import LogBuffer
from meshlib.local.metrics import Peer, ProxyMetrics
from meshlib.router import Decision, Request, select_route
from meshlib.xds.dialect import config_dump
from meshlib.xds.model import ProxyConfig
from meshlib.xds.naming import BLACKHOLE, PASSTHROUGH, parse_cluster

if TYPE_CHECKING:
    from meshlib.local.mesh import LocalMesh

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "transfer-encoding", "upgrade", "content-length", "host"}
PEER_HEADER = "x-envoy-peer-metadata-id"  # who sent the request (Istio learns it by metadata exchange)
MIRROR_HEADER = "x-meshlib-mirror"  # marks a mirrored copy between proxies; stripped before any app sees it
INTERNAL_HEADERS = {PEER_HEADER, MIRROR_HEADER}
UPSTREAM_FAILURE = "upstream connect error or disconnect/reset before headers. reset reason: "


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    peer: Peer
    key: str  # pod name or external host


@dataclass(frozen=True)
class Served:
    """One request as the serving pod's sidecar saw it: the ledger that ties client requests to versions."""

    request_id: str
    pod: str
    peer: Peer
    authority: str
    path: str
    status: int
    mirrored: bool
    started: float  # time.monotonic() when the request arrived: the ledger orders hops by it


@dataclass
class Upstream:
    """What came back from upstream, or why nothing did."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    flags: str = "-"
    details: str = "via_upstream"
    endpoint: Endpoint | None = None
    failure: str = ""


def peer_header(peer: Peer) -> str:
    return ";".join((peer.workload, peer.namespace, peer.app, peer.version, peer.canonical_service,
                     peer.canonical_revision))


def parse_peer(value: str | None) -> Peer:
    parts = (value or "").split(";")
    return Peer(*parts) if len(parts) == 6 else Peer()


def shadow_host(authority: str) -> str:
    """Envoy appends `-shadow` to the host, before any `:port`."""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and not host.endswith("]"):
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


class Proxy:
    """Shared machinery of gateway and sidecar proxies."""

    def __init__(self, mesh: LocalMesh, name: str, namespace: str, peer: Peer, log: LogBuffer,
                 rng: random.Random) -> None:
        self.mesh = mesh
        self.name = name  # pod name
        self.namespace = namespace
        self.peer = peer
        self.log = log
        self.rng = rng
        self.config: ProxyConfig | None = None
        self.metrics = ProxyMetrics()
        self.session: aiohttp.ClientSession | None = None
        self.runners: list[web.AppRunner] = []
        self.admin_port = 0
        self.access_log = False
        self._tasks: set[asyncio.Task] = set()
        self._active: dict[str, int] = {}

    # --- lifecycle ----------------------------------------------------------------------------------
    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self.runners.append(runner)
        return runner.addresses[0][1]

    async def start_admin(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        # Envoy sends exactly one upstream request per try; aiohttp would silently resend an idempotent
        # request once when the connection drops (as aiohttp's own TestClient, switch that off).
        self.session._retry_connection = False
        admin = web.Application()
        admin.router.add_get("/stats/prometheus", self._stats)
        admin.router.add_get("/config_dump", self._config_dump)
        admin.router.add_get("/ready", self._ready)
        self.admin_port = await self._serve(admin, 0)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _ready(self, _request: web.Request) -> web.Response:
        return web.Response(text="LIVE")

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def _config_dump(self, _request: web.Request) -> web.Response:
        return web.json_response(config_dump(self.config) if self.config else {})

    # --- routing ------------------------------------------------------------------------------------
    async def route(self, req: web.Request, listener_port: int, authority: str, path: str,
                    xff: str = "") -> web.StreamResponse:
        assert self.config is not None
        started = time.monotonic()
        start_time = datetime.now(UTC)
        body = await req.read()
        headers = CIMultiDict((k, v) for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP
                              and k.lower() not in INTERNAL_HEADERS)
        if "x-request-id" not in headers:
            headers["x-request-id"] = str(uuid.uuid4())
        if xff:
            headers["x-forwarded-for"] = xff
        headers.setdefault("x-forwarded-proto", "http")
        request = Request.of(authority, path, req.method, headers.items())
        decision = select_route(self.config, request, listener_port, self.rng, self.mesh.healthy_counts(self.config))
        if decision.fault and decision.fault.delay_seconds:
            await asyncio.sleep(decision.fault.delay_seconds)
        if decision.status is not None:
            up = Upstream(decision.status, CIMultiDict(), decision.body.encode(), decision.flags, decision.details)
            if decision.redirect is not None:
                up.headers["location"] = redirect_location(decision, authority, path)
        else:
            _apply_header_ops(decision, headers)
            out_authority = decision.host_rewrite or authority
            out_path = _rewrite_path(decision, path)
            for mirror in decision.mirrors:
                if mirror.fired:
                    self._spawn(self._mirror(mirror.cluster, req.method, out_path, headers, body,
                                             shadow_host(out_authority) if mirror.shadow_suffix else out_authority))
            up = await self.forward(decision, req.method, out_authority, out_path, headers, body)
        millis = (time.monotonic() - started) * 1000
        self._observe("source", request, decision, up, start_time, millis, len(body), req)
        if up.status == 0:  # TCP-level close (BlackHoleCluster) or upstream drop with no retries left
            if req.transport is not None:
                req.transport.close()
            raise asyncio.CancelledError
        resp_headers = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP)
        for op in decision.response_headers_to_add:
            resp_headers[op["header"]["key"]] = op["header"]["value"]
        if up.details == "via_upstream":
            resp_headers["x-envoy-upstream-service-time"] = str(int(millis))
        if up.body and up.details != "via_upstream" and "content-type" not in resp_headers:
            resp_headers["content-type"] = "text/plain"
        return web.Response(status=up.status, headers=resp_headers, body=up.body)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, cluster: str, method: str, path: str, headers: CIMultiDict[str], body: bytes,
                      authority: str) -> None:
        """Fire and forget: the mirror's response (or failure) is dropped."""
        endpoints = self.mesh.endpoints(self.config, cluster, authority)
        if not endpoints:
            return
        copy = CIMultiDict(headers)
        copy[MIRROR_HEADER] = "1"
        with contextlib.suppress(Exception):
            await self._send(self._pick(endpoints), method, authority, path, copy, body, 30.0)

    async def forward(self, decision: Decision, method: str, authority: str, path: str,
                      headers: CIMultiDict[str], body: bytes) -> Upstream:
        cluster = decision.cluster or ""
        if cluster == BLACKHOLE:
            return Upstream(0, CIMultiDict(), b"", "UH", "no_healthy_upstream")
        endpoints = self.mesh.endpoints(self.config, cluster, authority)
        if not endpoints:
            if cluster == PASSTHROUGH:
                reason = (f"meshlib has no local stand-in for {authority}: traffic never leaves this machine; "
                          "declare the host in a ServiceEntry to get one")
                return Upstream(503, CIMultiDict(), (UPSTREAM_FAILURE + "connection failure").encode(), "UF",
                                "upstream_reset_before_response_started{connection_failure}", failure=reason)
            return Upstream(503, CIMultiDict(), b"no healthy upstream", "UH", "no_healthy_upstream")
        policy = decision.retry_policy or {}
        retry_on = set((policy.get("retryOn") or "").split(","))
        codes = set(policy.get("retriableStatusCodes") or [])
        attempts = 1 + (policy.get("numRetries", 0) if policy else 0)
        per_try = _seconds(policy.get("perTryTimeout")) if policy else 0.0
        headers["x-envoy-attempt-count"] = "1"
        last: Upstream | None = None
        tried: set[str] = set()

        async def attempt_loop() -> Upstream:
            nonlocal last
            for attempt in range(1, attempts + 1):
                headers["x-envoy-attempt-count"] = str(attempt)
                candidates = [e for e in endpoints if e.key not in tried] or endpoints
                ep = self._pick(candidates)
                tried.add(ep.key)
                up = await self._send(ep, method, authority, path, headers, body, per_try)
                last = up
                retriable = _retriable(up, retry_on, codes)
                if attempt == attempts or not retriable:
                    if retriable and attempts > 1 and "URX" not in up.flags:  # retry limit exceeded
                        up.flags = "URX" if up.flags == "-" else f"{up.flags},URX"
                    return up
                await asyncio.sleep(self.rng.uniform(0, 0.025 * (2 ** (attempt - 1))))
            return last  # pragma: no cover - loop always returns

        if decision.timeout_seconds > 0:
            try:
                async with asyncio.timeout(decision.timeout_seconds):
                    return await attempt_loop()
            except TimeoutError:
                return Upstream(504, CIMultiDict(), b"upstream request timeout", "UT", "response_timeout",
                                last.endpoint if last else None)
        return await attempt_loop()

    def _pick(self, endpoints: list[Endpoint]) -> Endpoint:
        """Envoy's LEAST_REQUEST: the less busy of two random endpoints."""
        if len(endpoints) == 1:
            return endpoints[0]
        a, b = self.rng.sample(endpoints, 2)
        return a if self._active.get(a.key, 0) <= self._active.get(b.key, 0) else b

    async def _send(self, ep: Endpoint, method: str, authority: str, path: str, headers: CIMultiDict[str],
                    body: bytes, timeout: float) -> Upstream:
        assert self.session is not None
        out = CIMultiDict(headers)
        out["Host"] = authority
        out[PEER_HEADER] = peer_header(self.peer)
        url = URL.build(scheme="http", host=ep.host, port=ep.port, encoded=True).join(URL(path, encoded=True))
        self._active[ep.key] = self._active.get(ep.key, 0) + 1
        try:
            async with self.session.request(method, url, headers=out, data=body or None, allow_redirects=False,
                                            timeout=aiohttp.ClientTimeout(total=timeout or None,
                                                                          sock_connect=5)) as resp:
                payload = await resp.read()
                return Upstream(resp.status, CIMultiDict(resp.headers), payload, endpoint=ep)
        except aiohttp.ClientConnectorError:
            return Upstream(503, CIMultiDict(), (UPSTREAM_FAILURE + "connection failure").encode(), "UF",
                            "upstream_reset_before_response_started{connection_failure}", ep)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError):
            return Upstream(503, CIMultiDict(), (UPSTREAM_FAILURE + "connection termination").encode(), "UC",
                            "upstream_reset_before_response_started{connection_termination}", ep)
        except TimeoutError:
            return Upstream(504, CIMultiDict(), b"upstream request timeout", "UT", "response_timeout", ep)
        finally:
            self._active[ep.key] -= 1

    # --- telemetry ----------------------------------------------------------------------------------
    def _observe(self, reporter: str, request: Request, decision: Decision, up: Upstream, start: datetime,
                 millis: float, req_bytes: int, req: web.Request) -> None:
        cluster = decision.cluster or ""
        svc_host, svc_name, svc_ns = _service_of(self.config, cluster, request.authority, decision)
        dest = up.endpoint.peer if up.endpoint else Peer()
        self.metrics.record(reporter, self.peer, dest, svc_host, svc_name, svc_ns, up.status, up.flags, millis,
                            req_bytes, len(up.body))
        if self.access_log:
            upstream_host = f"{up.endpoint.host}:{up.endpoint.port}" if up.endpoint else "-"
            self.log.write(access_log_line(start, request, up, millis, cluster or "-", upstream_host,
                                           decision.route_name or "-", req, req_bytes))


def _seconds(text: str | None) -> float:
    from meshlib.units import parse_duration

    return parse_duration(text) if text else 0.0


def _retriable(up: Upstream, retry_on: set[str], codes: set[int]) -> bool:
    if up.flags.startswith("UF") and ({"connect-failure", "reset", "5xx", "gateway-error"} & retry_on):
        return True
    if up.flags.startswith("UC") and ({"reset", "5xx"} & retry_on):
        return True
    if up.flags.startswith("UT"):
        return bool({"5xx", "gateway-error"} & retry_on)
    if up.details != "via_upstream":
        return False
    if "retriable-status-codes" in retry_on and up.status in codes:
        return True
    if "5xx" in retry_on and up.status >= 500:
        return True
    return "gateway-error" in retry_on and up.status in (502, 503, 504)


def redirect_location(decision: Decision, authority: str, path: str) -> str:
    """Envoy's redirect URL: scheme, host, port and path each swapped when the route says so."""
    redirect = decision.redirect or {}
    scheme = redirect.get("schemeRedirect", "http")
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        host, port = authority, ""
    if redirect.get("hostRedirect"):
        host, port = redirect["hostRedirect"], ""
    if redirect.get("portRedirect"):
        port = str(redirect["portRedirect"])
    target, _, query = path.partition("?")
    if redirect.get("pathRedirect"):
        new_path, _, new_query = redirect["pathRedirect"].partition("?")
        target, query = new_path, new_query or query
    elif redirect.get("prefixRewrite") is not None and decision.route is not None:
        prefix = decision.route["match"].get("prefix", "")
        target = redirect["prefixRewrite"] + target[len(prefix):]
    return f"{scheme}://{host}{':' + port if port else ''}{target}{'?' + query if query else ''}"


def _apply_header_ops(decision: Decision, headers: CIMultiDict[str]) -> None:
    for name in decision.request_headers_to_remove:
        headers.popall(name, None)
    for op in decision.request_headers_to_add:
        key, value = op["header"]["key"], op["header"]["value"]
        if op.get("appendAction") == "APPEND_IF_EXISTS_OR_ADD":
            headers.add(key, value)
        else:
            headers[key] = value


def _rewrite_path(decision: Decision, path: str) -> str:
    if decision.path_rewrite is None or decision.route is None:
        return path
    match = decision.route["match"]
    if "prefix" in match:
        return decision.path_rewrite + path[len(match["prefix"]):]
    query = path.partition("?")[2]
    return decision.path_rewrite + (f"?{query}" if query else "")


def _service_of(pc: ProxyConfig | None, cluster: str, authority: str, decision: Decision) -> tuple[str, str, str]:
    if decision.route_name == "block_all" or cluster == BLACKHOLE:
        return authority.split(":")[0], "BlackHoleCluster", "unknown"
    if cluster == PASSTHROUGH:
        return authority.split(":")[0], "PassthroughCluster", "unknown"
    meta = (((pc.clusters.get(cluster) or {}).get("metadata") or {}).get("filterMetadata") or {}) if pc else {}
    services = (meta.get("istio") or {}).get("services") or []
    if services:
        s = services[0]
        return s["host"], s["name"], s["namespace"]
    parsed = parse_cluster(cluster)
    host = parsed[3] if parsed else authority.split(":")[0]
    return host, host.split(".")[0], "unknown"


def access_log_line(start: datetime, request: Request, up: Upstream, millis: float, cluster: str,
                    upstream_host: str, route_name: str, req: web.Request, req_bytes: int) -> str:
    """Istio's default TEXT access log format (istio-semantics.md §6.2)."""
    def q(v: str | None) -> str:
        return v if v else "-"

    stamp = start.strftime("%Y-%m-%dT%H:%M:%S.") + f"{start.microsecond // 1000:03d}Z"
    peer = req.transport.get_extra_info("peername") if req.transport else None
    sock = req.transport.get_extra_info("sockname") if req.transport else None
    downstream_remote = f"{peer[0]}:{peer[1]}" if peer else "-"
    downstream_local = f"{sock[0]}:{sock[1]}" if sock else "-"
    service_time = up.headers.get("x-envoy-upstream-service-time") or (str(int(millis))
                                                                         if up.details == "via_upstream" else "-")
    return (f'[{stamp}] "{request.method} {request.path} HTTP/1.1" {up.status} {up.flags} {up.details} - '
            f'"{up.failure or "-"}" {req_bytes} '
            f'{len(up.body)} {int(millis)} {service_time} "{q(request.header("x-forwarded-for"))}" '
            f'"{q(request.header("user-agent"))}" "{q(request.header("x-request-id"))}" "{request.authority}" '
            f'"{upstream_host}" {cluster} - {downstream_local} {downstream_remote} - {route_name}')


class GatewayProxy(Proxy):
    """The ingress gateway: one listener on the NodePort-like port, routing by Host."""

    async def start(self, port: int, listener_port: int) -> None:
        await self.start_admin()
        app = web.Application(client_max_size=64 * 1024 * 1024)

        async def handle(req: web.Request) -> web.StreamResponse:
            peer = req.transport.get_extra_info("peername") if req.transport else None
            return await self.route(req, listener_port, req.headers.get("Host", ""), req.raw_path or "/",
                                    xff=peer[0] if peer else "")

        app.router.add_route("*", "/{tail:.*}", handle)
        self.port = await self._serve(app, port)


class SidecarProxy(Proxy):
    """A pod's sidecar: an explicit outbound proxy for the app and one inbound listener per container port."""

    def __init__(self, *args, app_ports: Callable[[], dict[int, int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.app_ports = app_ports  # container port -> where the app really listens
        self.outbound_port = 0
        self.inbound_ports: dict[int, int] = {}

    async def start(self, container_ports: list[int]) -> None:
        await self.start_admin()
        outbound = web.Application(client_max_size=64 * 1024 * 1024)
        outbound.router.add_route("*", "/{tail:.*}", self._outbound)
        self.outbound_port = await self._serve(outbound, 0)
        for cport in container_ports:
            inbound = web.Application(client_max_size=64 * 1024 * 1024)
            inbound.router.add_route("*", "/{tail:.*}", self._make_inbound(cport))
            self.inbound_ports[cport] = await self._serve(inbound, 0)

    @property
    def outbound_url(self) -> str:
        return f"http://127.0.0.1:{self.outbound_port}"

    async def _outbound(self, req: web.Request) -> web.StreamResponse:
        target = URL(req.raw_path, encoded=True)
        if not target.is_absolute():
            return web.Response(status=400, text="meshlib sidecar: send absolute-form requests (use it as HTTP_PROXY)")
        authority = req.headers.get("Host") or target.raw_authority
        port = target.explicit_port or 80
        path = target.raw_path_qs or "/"
        return await self.route(req, port, authority, path)

    def _make_inbound(self, container_port: int):
        async def inbound(req: web.Request) -> web.StreamResponse:
            return await self._inbound(req, container_port)

        return inbound

    async def _inbound(self, req: web.Request, container_port: int) -> web.StreamResponse:
        """Deliver to the app on `container_port`; report as `reporter="destination"`."""
        started = time.monotonic()
        start_time = datetime.now(UTC)
        body = await req.read()
        source = parse_peer(req.headers.get(PEER_HEADER))
        mirrored = MIRROR_HEADER in req.headers
        headers = CIMultiDict((k, v) for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP
                              and k.lower() not in INTERNAL_HEADERS)
        authority = req.headers.get("Host", "")
        app_port = self.app_ports().get(container_port)
        cluster = f"inbound|{container_port}||"
        me = Endpoint("127.0.0.1", app_port or 0, self.peer, self.name)
        if app_port is None:
            up = Upstream(503, CIMultiDict(), (UPSTREAM_FAILURE + "connection failure").encode(), "UF",
                          "upstream_reset_before_response_started{connection_failure}", me)
        else:
            up = await self._send(me, req.method, authority, req.raw_path or "/", headers, body, 0)
            up.headers.popall("x-envoy-peer-metadata-id", None)
        millis = (time.monotonic() - started) * 1000
        request = Request.of(authority, req.raw_path or "/", req.method, headers.items())
        self.mesh.record_served(Served(headers.get("x-request-id", ""), self.name, self.peer, authority,
                                       req.raw_path or "/", up.status, mirrored, started))
        svc = self.mesh.service_for_inbound(self.peer, self.namespace, container_port)
        self.metrics.record("destination", source, self.peer, svc[0], svc[1], svc[2], up.status, up.flags, millis,
                            len(body), len(up.body))
        if self.access_log:
            self.log.write(access_log_line(start_time, request, up, millis, cluster,
                                           f"127.0.0.1:{app_port}", "default", req, len(body)))
        if up.status == 0:
            if req.transport is not None:
                req.transport.close()
            raise asyncio.CancelledError
        # an app that resets or refuses gets Envoy's local reply (503 UC/UF), not a dropped connection
        resp_headers = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP)
        if up.body and up.details != "via_upstream" and "content-type" not in resp_headers:
            resp_headers["content-type"] = "text/plain"
        return web.Response(status=up.status, headers=resp_headers, body=up.body)
