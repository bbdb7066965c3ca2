"""meshlib's ADS server: one consistent, versioned snapshot per proxy, pushed whole, as istiod pushes it.

    server = XdsServer()
    port = server.start()                      # 127.0.0.1:port, Envoy's `xds-grpc` cluster points here
    server.set_snapshot("catalog-v1.istioinaction", Snapshot("3", clusters, endpoints, listeners, routes))
    server.wait("catalog-v1.istioinaction", "3", timeout=5).state   # "SYNCED" or "REJECTED" (with .error)

State-of-the-World ADS (`envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources`)
over grpcio's threaded server. Resources are proto3 JSON dicts (camelCase as istioctl prints them, or
snake_case); `set_snapshot` converts all of them first, so a bad field is an error before anything is sent.

A new snapshot goes out in istiod's push order, CDS, EDS, LDS, RDS, one type at a time: the next type is
sent once Envoy has answered the previous one, so a listener never arrives before the clusters its routes
use. EDS and RDS carry what Envoy asks for (`resource_names`); a request that asks for new names (new
clusters warming, a listener naming a new route configuration) is answered at once. A NACK stops the push
at that type: Envoy keeps its last good config for it and the later types stay at the old version, and
`status()` says REJECTED with Envoy's own message.
"""

from __future__ import annotations

import importlib
import itertools
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# grpcio reads these once, at import: its INFO log (on by default in 1.85) prints a line each time meshlib forks
# an Envoy while a stream is open, and its fork handlers are useless here (a child only runs exec).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc  # noqa: E402
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from google.protobuf import any_pb2, json_format  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

from meshlib.errors import MeshlibError  # noqa: E402
from meshlib.local.envoy.binary import dumped_name, envoy_reason  # noqa: E402

# Every extension meshlib's translator puts in a typed_config: importing a module registers its messages,
# so json_format can resolve the `@type` inside Any fields.
EXTENSION_MODULES = (
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.filters.http.cors.v3.cors_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2",
    "envoy.extensions.transport_sockets.internal_upstream.v3.internal_upstream_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)
for _module in EXTENSION_MODULES:
    importlib.import_module(_module)

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}
NAMED = (ENDPOINT, ROUTE)  # types Envoy asks for by resource name; CDS and LDS are wildcard
ALWAYS_SUBSCRIBED = (CLUSTER, LISTENER)  # every meshlib bootstrap has cds_config and lds_config over ADS

SYNCED, STALE, NOT_SENT, REJECTED, DISCONNECTED = "SYNCED", "STALE", "NOT SENT", "REJECTED", "DISCONNECTED"

_MESSAGES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}
_KINDS = {CLUSTER: "Cluster", ENDPOINT: "ClusterLoadAssignment", LISTENER: "Listener", ROUTE: "RouteConfiguration"}
_PARSE_CHAIN = re.compile(r"(Failed to parse \w+ field: )+")
_CLOSED = object()  # stream event: the RPC ended (or the server is closing)
_WAKE = object()  # stream event: the node has a new snapshot
STOP_GRACE = 1.0


class XdsConfigError(MeshlibError):
    """A snapshot resource that is not valid Envoy v3 proto JSON; names the resource and the field."""


@dataclass(frozen=True)
class Snapshot:
    """Everything one proxy runs, at one version: proto3 JSON dicts of Clusters, ClusterLoadAssignments,
    Listeners and RouteConfigurations. Give every change a new version string."""

    version: str
    clusters: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    listeners: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TypeStatus:
    """One xDS type on one proxy: what meshlib sent, what Envoy runs, and why it refused (if it did)."""

    type_url: str
    subscribed: bool = False
    names: tuple[str, ...] = ()  # what Envoy asks for (EDS, RDS)
    sent_version: str = ""
    acked_version: str = ""  # the version Envoy runs; a NACK leaves it at the last good one
    rejected_version: str = ""  # the version of a response Envoy refused ("" when the latest was not refused)
    error: str = ""  # that refusal on one line, naming the resource: `RouteConfiguration 'web': missing ): (`
    envoy_message: str = ""  # Envoy's error_detail.message as sent (may hold a multi-line proto dump)

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.type_url, self.type_url.rsplit(".", 1)[-1])

    def state(self, version: str) -> str:
        """As istioctl proxy-status prints one column, against the snapshot `version` meshlib wants."""
        if self.rejected_version and self.rejected_version == version:
            return REJECTED
        if version and self.acked_version == version:
            return SYNCED
        if version and self.sent_version == version:
            return STALE
        return NOT_SENT


@dataclass(frozen=True)
class ProxyStatus:
    """A proxy's config state like a row of `istioctl proxy-status`; `state` is the whole proxy's."""

    node_id: str
    connected: bool
    version: str  # the latest snapshot version set for this proxy ("" if none)
    types: dict[str, TypeStatus]  # by type URL, in push order

    @property
    def state(self) -> str:
        """SYNCED (every type ACKed at `version`), REJECTED (Envoy NACKed one), STALE (sent, not yet ACKed),
        NOT SENT (nothing of `version` sent yet), DISCONNECTED (no Envoy on the stream)."""
        if not self.connected:
            return DISCONNECTED
        if not self.version:
            return NOT_SENT
        states = [t.state(self.version) for t in self._required()]
        if REJECTED in states:
            return REJECTED
        if all(s == SYNCED for s in states):
            return SYNCED
        if any(t.sent_version == self.version for t in self.types.values()):
            return STALE
        return NOT_SENT

    @property
    def error(self) -> str:
        """The rejection on one line, `Kind 'name': Envoy's reason` (see TypeStatus.envoy_message for Envoy's own
        text), else ""."""
        for t in self.types.values():
            if t.state(self.version) == REJECTED:
                return t.error
        return ""

    def summary(self) -> str:
        """One line: `node: STATE at version V (CDS SYNCED, EDS SYNCED, LDS SYNCED, RDS REJECTED): Kind 'name': why`."""
        columns = ", ".join(f"{t.short_name} {t.state(self.version)}" for t in self.types.values())
        line = f"{self.node_id}: {self.state}"
        line += f" at version {self.version}" if self.version else ""
        line += f" ({columns})"
        return f"{line}: {self.error}" if self.error else line

    def _required(self) -> list[TypeStatus]:
        return [t for t in self.types.values() if t.type_url in ALWAYS_SUBSCRIBED or (t.subscribed and t.names)]


@dataclass(frozen=True)
class _Compiled:
    """A snapshot as packed protos: type URL → resource name → Any."""

    version: str
    resources: dict[str, dict[str, any_pb2.Any]]


def compile_snapshot(snapshot: Snapshot) -> _Compiled:
    """Convert every resource of a snapshot to its proto; XdsConfigError names the first bad resource and field."""
    by_type = {CLUSTER: snapshot.clusters, ENDPOINT: snapshot.endpoints, LISTENER: snapshot.listeners,
               ROUTE: snapshot.routes}
    resources: dict[str, dict[str, any_pb2.Any]] = {}
    for type_url, items in by_type.items():
        packed: dict[str, any_pb2.Any] = {}
        for index, item in enumerate(items):
            message = _parse(type_url, index, item)
            name = _name_of(message)
            if not name:
                raise XdsConfigError(f"{_KINDS[type_url]} #{index + 1} of snapshot {snapshot.version} has no name; "
                                     "every xDS resource needs one")
            if name in packed:
                raise XdsConfigError(f"snapshot {snapshot.version} has two {_KINDS[type_url]}s named {name!r}; "
                                     "names must be unique per type")
            any_message = any_pb2.Any()
            any_message.Pack(message, deterministic=True)  # equal content, equal bytes
            packed[name] = any_message
        resources[type_url] = packed
    return _Compiled(snapshot.version, resources)


def _parse(type_url: str, index: int, item: dict[str, Any]) -> Message:
    kind = _KINDS[type_url]
    if not isinstance(item, dict):
        raise XdsConfigError(f"{kind} #{index + 1} is a {type(item).__name__}, not a JSON object")
    try:
        return json_format.ParseDict(item, _MESSAGES[type_url]())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        name = item.get("name") or item.get("clusterName") or item.get("cluster_name") or f"#{index + 1}"
        # protobuf repeats every enclosing field, and lists all the valid ones after a bad one
        reason = _PARSE_CHAIN.sub("", str(exc)).splitlines()[0].rstrip(".")
        hint = ("meshlib knows the @types of EXTENSION_MODULES in meshlib.local.envoy.xds" if "type_url" in reason
                else "check the name and value against Envoy's v3 API")
        raise XdsConfigError(f"{kind} {name!r}: {reason} ({hint})") from None


def _name_of(message: Message) -> str:
    return message.cluster_name if isinstance(message, endpoint_pb2.ClusterLoadAssignment) else message.name  # type: ignore[attr-defined]


def describe_rejection(type_url: str, message: str, sent: tuple[str, ...]) -> str:
    """Envoy's NACK message on one line, naming the resource: Envoy names it for some errors (`listener(s) http`,
    `route web`) but not for others (a bad RE2 regex, a proto constraint), so meshlib adds what it knows."""
    kind = _KINDS.get(type_url, type_url.rsplit(".", 1)[-1])
    reason = envoy_reason(message) or " ".join(message.split())
    culprit = dumped_name(message)  # Envoy printed the whole offending resource
    if culprit:
        return f"{kind} {culprit!r}: {reason}"
    named = [name for name in sent if re.search(rf"(?<![\w.|-]){re.escape(name)}(?![\w.|-])", reason)]
    if len(named) == 1:
        return f"{kind} {named[0]!r}: {reason}"
    if len(sent) == 1:
        return f"{kind} {sent[0]!r}: {reason}"
    if 1 < len(sent) <= 3:
        return f"{kind} {' or '.join(repr(n) for n in sent)}: {reason}"
    return f"one of {len(sent)} {kind}s: {reason}"


@dataclass
class _Track:
    """Mutable per-type state of one stream (guarded by XdsServer._lock)."""

    type_url: str
    subscribed: bool = False
    names: tuple[str, ...] = ()
    sent_version: str = ""
    sent_names: tuple[str, ...] = ()
    nonce: str = ""
    answered: bool = True  # Envoy has ACKed or NACKed the response carrying `nonce`
    acked_version: str = ""
    sent_resources: tuple[str, ...] = ()  # names of the resources in the response carrying `nonce`
    rejected_version: str = ""
    error: str = ""
    envoy_message: str = ""

    def frozen(self) -> TypeStatus:
        return TypeStatus(self.type_url, self.subscribed, self.names, self.sent_version, self.acked_version,
                          self.rejected_version, self.error, self.envoy_message)


class _Stream:
    """One ADS stream: its events (requests, wake-ups, end) and its per-type tracks."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.node_id: str | None = None
        self.tracks = {type_url: _Track(type_url) for type_url in PUSH_ORDER}
        self.nonces = itertools.count(1)


@dataclass
class _Node:
    compiled: _Compiled | None = None
    stream: _Stream | None = None
    connected: bool = False
    versions: set[str] = field(default_factory=set)  # every version set, to tell "superseded" from "not yet set"


class XdsServer:
    """ADS on 127.0.0.1: `set_snapshot` per node id, `status` / `wait` for what each Envoy runs."""

    def __init__(self, host: str = "127.0.0.1", max_proxies: int = 256) -> None:
        self.host = host
        self.port = 0
        self._max_proxies = max_proxies
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._nodes: dict[str, _Node] = {}
        self._streams: set[_Stream] = set()
        self._server: grpc.Server | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def start(self, port: int = 0) -> int:
        """Listen on host:port (0 picks a free port); returns the port."""
        if self._closed:
            raise MeshlibError("this xDS server was closed; make a new XdsServer")
        if self._server is not None:
            return self.port
        # every connected Envoy holds one worker for its stream's lifetime
        self._pool = ThreadPoolExecutor(max_workers=self._max_proxies + 4, thread_name_prefix="meshlib-xds")
        server = grpc.server(self._pool)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{port}")
        except RuntimeError as exc:
            raise MeshlibError(f"meshlib's xDS server cannot listen on {self.host}:{port} ({exc}); "
                               "choose another port or 0 for a free one") from None
        server.start()
        self._server, self.port = server, bound
        return bound

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def close(self) -> None:
        """Stop the server and end every stream now (connected Envoys just lose their control plane); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams)
            server, self._server = self._server, None
            self._changed.notify_all()
        for stream in streams:
            stream.events.put(_CLOSED)
        if server is not None:
            server.stop(grace=None).wait(STOP_GRACE)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # no handler thread outlives the server

    def set_snapshot(self, node_id: str, snapshot: Snapshot) -> None:
        """Store the proxy's snapshot and push it if its Envoy is connected (else when it connects).

        Every resource is converted first: XdsConfigError (naming the resource and field) leaves the
        proxy's previous snapshot in place and sends nothing."""
        compiled = compile_snapshot(snapshot)
        with self._lock:
            node = self._nodes.setdefault(node_id, _Node())
            if node.compiled is not None and node.compiled.version == compiled.version:
                if node.compiled.resources != compiled.resources:
                    raise XdsConfigError(f"{node_id}: snapshot version {compiled.version} was already set with "
                                         "other resources; give every change a new version")
                return
            node.compiled = compiled
            node.versions.add(compiled.version)
            stream = node.stream if node.connected else None
            self._changed.notify_all()
        if stream is not None:
            stream.events.put(_WAKE)

    def remove(self, node_id: str) -> None:
        """Forget a proxy (its pod is gone): drop its snapshot and end its stream if one is open."""
        with self._lock:
            node = self._nodes.pop(node_id, None)
            self._changed.notify_all()
        if node is not None and node.stream is not None:
            node.stream.events.put(_CLOSED)

    def status(self, node_id: str) -> ProxyStatus:
        """What the proxy runs now; a node meshlib never heard of is DISCONNECTED with nothing sent."""
        with self._lock:
            return self._status(node_id)

    def wait(self, node_id: str, version: str, timeout: float) -> ProxyStatus:
        """Block until every type of `version` is ACKed, one is NACKed, a newer version replaces it, or `timeout`
        seconds pass; returns the status then (check `.state`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                current = self._status(node_id)
                if current.state in (SYNCED, REJECTED) and current.version == version:
                    return current
                node = self._nodes.get(node_id)
                superseded = node is not None and version in node.versions and current.version != version
                if self._closed or superseded:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    return current
                self._changed.wait(left)

    # --- called with self._lock held -------------------------------------------------------------------

    def _status(self, node_id: str) -> ProxyStatus:
        node = self._nodes.get(node_id)
        if node is None:
            return ProxyStatus(node_id, False, "", {t: TypeStatus(t) for t in PUSH_ORDER})
        version = node.compiled.version if node.compiled else ""
        tracks = node.stream.tracks if node.stream else {t: _Track(t) for t in PUSH_ORDER}
        return ProxyStatus(node_id, node.connected, version, {t: tracks[t].frozen() for t in PUSH_ORDER})

    def _attach(self, stream: _Stream, node_id: str) -> None:
        stream.node_id = node_id
        node = self._nodes.setdefault(node_id, _Node())
        if node.stream is not None and node.stream is not stream:
            node.stream.events.put(_CLOSED)  # Envoy reconnected: its old stream is dead, or a duplicate node id
        node.stream, node.connected = stream, True

    def _detach(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        node = self._nodes.get(stream.node_id or "")
        if node is not None and node.stream is stream:
            node.connected = False

    def _on_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> str | None:
        """Record an ACK, NACK or (re)subscription; returns the type to answer at once (new names asked), if any."""
        if stream.node_id is None:
            self._attach(stream, request.node.id)
        track = stream.tracks.get(request.type_url)
        if track is None:
            return None  # a type meshlib does not serve (e.g. SDS): Envoy waits for it until initial_fetch_timeout
        track.subscribed = True
        if request.response_nonce and request.response_nonce != track.nonce:
            return None  # answers an older response; Envoy sends a fresh request for the newest one
        if request.response_nonce and not track.answered:
            track.answered = True
            track.acked_version = request.version_info  # always the last version Envoy accepted
            if request.HasField("error_detail"):
                message = request.error_detail.message
                track.rejected_version, track.envoy_message = track.sent_version, message
                track.error = describe_rejection(track.type_url, message, track.sent_resources)
            else:
                track.rejected_version, track.error, track.envoy_message = "", "", ""
        if request.type_url in NAMED:
            track.names = tuple(sorted(set(request.resource_names)))
            if track.names and track.names != track.sent_names:
                return request.type_url
        return None

    def _due(self, stream: _Stream, asked: str | None) -> list[discovery_pb2.DiscoveryResponse]:
        """The responses to send now: what Envoy just asked for, then the push in order, one type at a time."""
        node = self._nodes.get(stream.node_id or "")
        if node is None or node.compiled is None or node.stream is not stream:
            return []
        compiled = node.compiled
        out: list[discovery_pb2.DiscoveryResponse] = []
        gate_open = True  # closes at the first type of this version that Envoy has not (happily) answered
        for type_url in PUSH_ORDER:
            track = stream.tracks[type_url]
            if not track.subscribed or (type_url in NAMED and not track.names):
                continue
            behind = track.sent_version != compiled.version or track.sent_names != track.names
            # EDS goes with CDS, not after its ACK: Envoy ACKs a changed cluster only once it has warmed, and a
            # changed cluster warms only on an EDS response (istiod pushes EDS right after CDS, too)
            if behind and (gate_open or type_url == asked or type_url == ENDPOINT):
                out.append(self._response(stream, track, compiled))
                gate_open = False
            elif not track.answered or track.rejected_version == compiled.version:
                gate_open = False
        return out

    def _response(self, stream: _Stream, track: _Track, compiled: _Compiled) -> discovery_pb2.DiscoveryResponse:
        available = compiled.resources.get(track.type_url, {})
        names = [n for n in track.names if n in available] if track.type_url in NAMED else list(available)
        nonce = str(next(stream.nonces))
        track.sent_version, track.sent_names, track.sent_resources, track.nonce, track.answered = (
            compiled.version, track.names, tuple(names), nonce, False)
        return discovery_pb2.DiscoveryResponse(version_info=compiled.version, type_url=track.type_url, nonce=nonce,
                                               resources=[available[name] for name in names])

    # --- the RPC ------------------------------------------------------------------------------------------

    def _serve(self, requests: Iterator[discovery_pb2.DiscoveryRequest],
               context: grpc.ServicerContext) -> Iterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream()
        with self._lock:
            if self._closed:
                return
            self._streams.add(stream)
        context.add_callback(lambda: stream.events.put(_CLOSED))
        reader = threading.Thread(target=_read_requests, args=(requests, stream), name="meshlib-xds-reader",
                                  daemon=True)
        reader.start()
        try:
            while True:
                event = stream.events.get()
                if event is _CLOSED:
                    return
                with self._lock:
                    if self._closed:
                        return
                    asked = self._on_request(stream, event) if isinstance(event, discovery_pb2.DiscoveryRequest) \
                        else None
                    responses = self._due(stream, asked)
                    self._changed.notify_all()
                yield from responses
        finally:
            with self._lock:
                self._detach(stream)
                self._changed.notify_all()


def _read_requests(requests: Iterator[discovery_pb2.DiscoveryRequest], stream: _Stream) -> None:
    try:
        for request in requests:
            stream.events.put(request)
    except Exception:  # noqa: BLE001 - the RPC was cancelled or broke: the stream ends either way
        pass
    finally:
        stream.events.put(_CLOSED)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: XdsServer) -> None:
        self._server = server

    def StreamAggregatedResources(self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest],
                                  context: grpc.ServicerContext) -> Iterator[discovery_pb2.DiscoveryResponse]:
        return self._server._serve(request_iterator, context)
