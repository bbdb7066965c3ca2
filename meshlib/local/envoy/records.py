"""Envoy's request records → the request ledger and Istio's standard metrics.

Every Envoy of the embedded mesh writes one JSON line per request on each HTTP connection manager
(`meshlib.xds.accesslog.record_log`). `direction` says which side of the request the proxy's own workload is:
"outbound" (a gateway, or a sidecar's outbound listeners: the workload is the source) or "inbound" (a sidecar's
inbound listener: the workload is the destination). Each pod has its own loopback IP, and a sidecar's upstream
connections leave from it, so an inbound record's `downstream_remote` names the source pod and an outbound
record's `upstream_host` (IP:port, the inbound listener of the pod it reached) names the destination pod.

    ledger = Ledger()
    records = PodRecords(log_path, pod_name, peer, ledger)   # one per proxy
    records.refresh(resolver)        # read what Envoy appended since the last call (never per request)
    records.exposition()             # Istio's metrics of this proxy, Prometheus text
    ledger.served(request_id)        # which pods served a request, mirrored copies marked

Nothing here runs on the request path: records are read when metrics are scraped or the ledger is asked, so
the cost is one `json.loads` and a few dictionary look-ups per request, paid in bulk.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from sys import intern
from typing import Any, BinaryIO, Protocol

from meshlib.local.metrics import UNKNOWN, Labels, Peer, ProxyMetrics, label_values

OUTBOUND = "outbound"
INBOUND = "inbound"
SHADOW_SUFFIX = "-shadow"
MAX_LEDGER = 200_000  # request ids kept; the oldest are dropped first
READ_CHUNK = 1 << 20
# An outbound record is written when the request ends, with the start time of its downstream request; hops
# it caused start after it. Allow for clocks printed with coarser precision than ours (ms).
START_SLACK = 0.002
PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
SPECIAL_CLUSTERS = frozenset({BLACKHOLE, PASSTHROUGH, "InboundPassthroughCluster", "InboundPassthroughClusterIpv4",
                              "InboundPassthroughClusterIpv6"})
ROUTE_SERVICE_NAMES = {"block_all": BLACKHOLE, "allow_any": PASSTHROUGH}  # Istio's catch-all routes
# Flags of requests that never reached an upstream host: no inbound record will follow.
NOT_DELIVERED = frozenset({"UF", "UH", "UO", "NR", "NC", "FI", "DC"})
# Envoy's flag for a client (downstream) that closed the connection before the response was complete. Such a
# record counts as failed: status 0 in the ledger and `response_code="0"` in Istio's metrics, as Istio reports
# a disconnect before the response; Envoy itself logs the code it had begun to send (200 `DC` mid-body).
DOWNSTREAM_DISCONNECT = "DC"


# --- records ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Record:
    """One line of a record log, typed. Text fields are "" and optional numbers None where Envoy printed
    nothing (`null` or `-`). Read-only by convention (not frozen: building one is on the bulk path)."""

    direction: str  # "outbound" | "inbound"
    start: float  # epoch seconds
    method: str = ""
    path: str = ""
    authority: str = ""
    request_id: str = ""
    attempt: int | None = None  # x-envoy-attempt-count as received (inbound: which try of the caller this is)
    attempts: int | None = None  # upstream tries this proxy made (outbound: the final try's number)
    protocol: str = ""
    status: int = 0  # 0: no (complete) response reached the client: none was sent, or it disconnected (DC)
    flags: str = ""  # Envoy's short response flags, "" for none
    details: str = ""
    duration_ms: int | None = None
    bytes_received: int = 0  # bodies
    bytes_sent: int = 0
    wire_bytes_received: int | None = None  # headers and bodies, as Istio's size histograms count them
    wire_bytes_sent: int | None = None
    upstream_host: str = ""
    upstream_cluster: str = ""
    downstream_local: str = ""
    downstream_remote: str = ""
    route: str = ""

    @property
    def request_bytes(self) -> int:
        return self.wire_bytes_received if self.wire_bytes_received is not None else self.bytes_received

    @property
    def response_bytes(self) -> int:
        return self.wire_bytes_sent if self.wire_bytes_sent is not None else self.bytes_sent

    @property
    def final_attempt(self) -> int:
        """The number of the try whose answer this (outbound) proxy returned."""
        return self.attempts or self.attempt or 1


def _text(value: Any) -> str:
    if value.__class__ is str:
        return "" if value == "-" else value
    return "" if value is None else str(value)


def _number(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if value is None or value == "-" or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)  # a float, or numeric text; anything else raises ValueError


_decode = json.JSONDecoder().decode


def parse_record(line: str) -> Record | None:
    """One record line → `Record`; None (never an exception) for a line that is not a record."""
    try:
        obj = _decode(line)
        if not isinstance(obj, dict) or obj.get("direction") not in (OUTBOUND, INBOUND):
            return None
        start = obj.get("start")
        if start is None or isinstance(start, bool):
            return None
        get = obj.get
        flags = _text(get("flags"))
        status = _number(get("status")) or 0
        if DOWNSTREAM_DISCONNECT in flags and DOWNSTREAM_DISCONNECT in flags.split(","):
            status = 0  # the client never got the whole response: a failed request, whatever Envoy had sent
        return Record(  # positional, in field order: several times cheaper than keywords
            obj["direction"], float(start), _text(get("method")), _text(get("path")), _text(get("authority")),
            _text(get("request_id")), _number(get("attempt")), _number(get("attempts")), _text(get("protocol")),
            status, flags, _text(get("details")), _number(get("duration_ms")),
            _number(get("bytes_received")) or 0, _number(get("bytes_sent")) or 0,
            _number(get("wire_bytes_received")), _number(get("wire_bytes_sent")), _text(get("upstream_host")),
            _text(get("upstream_cluster")), _text(get("downstream_local")), _text(get("downstream_remote")),
            _text(get("route")))
    except (ValueError, TypeError, OverflowError, RecursionError):  # json.JSONDecodeError is a ValueError
        return None


def address_ip(address: str) -> str:
    """`127.0.0.5:41234` → `127.0.0.5`, `[::1]:80` → `::1`; "" stays ""."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


def address_port(address: str) -> int | None:
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def is_shadow(authority: str) -> bool:
    """Whether Envoy marked the request as a mirror copy: `-shadow` on the host, before any `:port`
    (checked with Envoy 1.40: `catalog:8080` is mirrored as `catalog-shadow:8080`)."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or host.endswith("]"):
        host = authority
    return host.endswith(SHADOW_SUFFIX)


# --- reading a file Envoy appends to ------------------------------------------------------------------
class RecordFile:
    """Reads the lines Envoy appended to `path` since the last call.

    Keeps its offset and the start of an unfinished last line (it is returned once its newline arrives); a file
    that does not exist yet reads as empty; a file that shrank (truncated) is read again from its start; a file
    replaced under the same path (rotated: another inode) is read to its end first, then the new one from its
    start. Lines Envoy writes to a rotated file after that switch are not seen: rotate, ask Envoy to reopen its
    logs (`POST /reopen_logs`), then read. A file truncated and refilled past the offset between two reads is not
    noticed (its first lines are lost, a cut line is counted as malformed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.offset = 0
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""

    def read_lines(self) -> list[str]:
        lines: list[str] = []
        if self._file is not None:
            self._drain(lines)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines  # not created yet, or rotated away and not yet recreated
        if self._file is None or (st.st_dev, st.st_ino) != self._identity:  # first open, or rotated
            self._switch(lines)
            if self._file is not None:
                self._drain(lines)
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _switch(self, lines: list[str]) -> None:
        if self._partial:  # the old file ended without a newline: hand over what there is
            lines.append(self._partial.decode("utf-8", "replace"))
        self.close()
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open across calls
        except FileNotFoundError:
            return
        st = os.fstat(self._file.fileno())
        self._identity = (st.st_dev, st.st_ino)
        self.offset, self._partial = 0, b""

    def _drain(self, lines: list[str]) -> None:
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self.offset:  # truncated under us
            self._file.seek(0)
            self.offset, self._partial = 0, b""
        while chunk := self._file.read(READ_CHUNK):
            self.offset += len(chunk)
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            lines.extend(c.decode("utf-8", "replace") for c in complete if c)

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the mesh as records see it -----------------------------------------------------------------------
ServiceRef = tuple[str, str, str]  # host (FQDN), short name, namespace


class Resolver(Protocol):
    """What records need to know of the mesh (`LocalMesh` implements it; a cluster backend could too)."""

    def peer_at(self, ip: str) -> tuple[str, Peer] | None:
        """The pod (name, Peer) whose loopback IP this is; None for anything else (clients, stand-ins)."""
        ...

    def service_of_cluster(self, pod: str, cluster: str) -> ServiceRef | None:
        """The service of an upstream cluster of `pod`'s proxy (its `istio` metadata); None if it has none."""
        ...

    def inbound_service(self, pod: str, port: int) -> ServiceRef | None:
        """The service that sends to `pod` on container `port`; None if none does."""
        ...


# --- the ledger ---------------------------------------------------------------------------------------
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
    started: float  # epoch seconds when the request arrived: the ledger orders hops by it
    attempt: int = 1  # which try of the caller this was (x-envoy-attempt-count)


@dataclass(slots=True)
class _Hop:
    """An inbound record: `pod` served a request that came from `source` (None: not a pod of the mesh)."""

    pod: str
    peer: Peer
    source: str | None
    local: str  # the inbound listener's address: what the caller's outbound record shows as upstream_host
    attempt: int | None
    authority: str
    path: str
    status: int
    flags: str
    started: float


@dataclass(slots=True)
class _Call:
    """An outbound record: `pod`'s proxy sent the request, and its final try (number `attempts`) went to
    `upstream_host`, the pod `destination` (None: no pod, e.g. an external stand-in)."""

    pod: str
    upstream_host: str
    destination: str | None
    attempts: int
    flags: str
    started: float


@dataclass(slots=True)
class _Entry:
    hops: list[_Hop] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)


class Ledger:
    """Which pods served each request id, from every proxy's records (bounded: the oldest ids are dropped).

    Inbound records are the ledger's entries ("this pod served this request id"); outbound records are kept
    beside them to tell the copies a route's mirror policy sent from the request itself, and are decided each
    time `served` is asked, so the order in which proxies' logs are read does not matter.

    An inbound record is a mirror copy when any of these holds:
    - its Host carries Envoy's `-shadow` suffix (Istio ≤ 1.27 leaves `disable_shadow_host_suffix_append` off);
    - (Istio ≥ 1.28: no suffix) no try of a request explains it. The caller's outbound record names the host
      its final try reached (`upstream_host`, the serving sidecar's inbound address) and that try's number N;
      the other tries, 1..N-1, went to the same cluster. So, per outbound record, in start order, among the
      inbound records of the same id whose source pod is that record's pod (or unknown):
        1. the final try is the first not yet explained whose listener address is `upstream_host` and whose
           `x-envoy-attempt-count` is N (or absent);
        2. each earlier try k is the first not yet explained with attempt count k (or absent) that started
           before the final try, preferring the workload of the final try (retries stay in the route's
           cluster; mirrors go to another) and a failed answer (5xx, none, or a downstream reset);
      inbound records still unexplained are mirror copies. Envoy sends a mirror copy with attempt count 1, so
      only ambiguity between a mirror copy and a retried first try needs the preferences above.
      An inbound record whose source sent no outbound record of that id (it is not a pod of the mesh, or its
      records were not read yet) cannot be judged and counts as served.
    - its source pod's own hops of that request id are all mirror copies (a call the mirror target's app
      made while serving the copy); the first two rules only look one hop back.
    Earlier tries are not mirrored; each `Served` keeps its try number in `attempt`.
    """

    def __init__(self, max_ids: int = MAX_LEDGER) -> None:
        self.max_ids = max_ids
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    def add(self, record: Record, pod: str, peer: Peer, other_pod: str | None) -> None:
        """File one record of `pod`'s proxy; `other_pod` is the pod at the other end (source of an inbound
        record, destination of an outbound one), None if that is not a pod."""
        if not record.request_id:
            return
        with self._lock:
            entry = self._entries.get(record.request_id)
            if entry is None:
                entry = self._entries[record.request_id] = _Entry()
                while len(self._entries) > self.max_ids:
                    self._entries.popitem(last=False)
            # addresses, hosts and paths repeat across requests: share one copy of each (~40% of an entry)
            if record.direction == INBOUND:
                entry.hops.append(_Hop(pod, peer, other_pod, intern(record.downstream_local), record.attempt,
                                       intern(record.authority), intern(record.path), record.status,
                                       intern(record.flags), record.start))
            elif record.upstream_host:  # a local reply (no route, fault, block_all) reached no pod
                entry.calls.append(_Call(pod, intern(record.upstream_host), other_pod, record.final_attempt,
                                         intern(record.flags), record.start))

    def served(self, request_id: str) -> list[Served]:
        """Every pod that served this request id (mirror copies marked), in the order the requests arrived."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return []
            hops, calls = list(entry.hops), list(entry.calls)
        mirrored = _mirrored(hops, calls)
        return [Served(request_id, h.pod, h.peer, h.authority, h.path, h.status, id(h) in mirrored, h.started,
                       h.attempt or 1) for h in sorted(hops, key=lambda h: h.started)]

    def settled(self, request_id: str) -> bool:
        """Whether both ends of every hop of this request id are in: each outbound record that reached a pod
        has that pod's inbound record, and each inbound record from a pod has that pod's outbound record.
        (Mirror copies can still come later: nothing announces them.) Use it to wait, bounded, for Envoy's
        logs to be flushed before asking `served`."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return False
            hops, calls = list(entry.hops), list(entry.calls)
        callers = {c.pod for c in calls}
        if any(h.source is not None and h.source not in callers for h in hops):
            return False
        arrived = {h.local for h in hops}
        return all(c.upstream_host in arrived for c in calls
                   if c.destination is not None and not NOT_DELIVERED.intersection(c.flags.split(",")))


def _mirrored(hops: list[_Hop], calls: list[_Call]) -> set[int]:
    """ids of the hops that are mirror copies (see `Ledger`)."""
    mirrored = {id(h) for h in hops if is_shadow(h.authority)}
    explained: set[int] = set()
    callers = {c.pod for c in calls}
    ordered = sorted(hops, key=lambda h: h.started)
    for call in sorted(calls, key=lambda c: c.started):
        pool = [h for h in ordered if id(h) not in mirrored and id(h) not in explained
                and (h.source == call.pod or h.source is None) and h.started >= call.started - START_SLACK]
        final = next((h for h in pool if h.local == call.upstream_host and h.attempt in (None, call.attempts)),
                     None)
        if final is not None:
            explained.add(id(final))
        for k in range(call.attempts - 1, 0, -1):
            tries = [h for h in pool if id(h) not in explained and h.attempt in (None, k)
                     and (final is None or h.started <= final.started)]
            if tries:
                best = min(tries, key=lambda h: (final is not None and h.peer.workload != final.peer.workload,
                                                 not _failed(h), h.started))
                explained.add(id(best))
    judged = [h for h in ordered if id(h) not in mirrored and (h.source in callers or (h.source is None and calls))]
    mirrored.update(id(h) for h in judged if id(h) not in explained)
    by_pod: dict[str, list[_Hop]] = {}
    for h in ordered:
        by_pod.setdefault(h.pod, []).append(h)
    for h in ordered:  # a parent starts before the calls it makes
        parents = by_pod.get(h.source or "", [])
        if id(h) not in mirrored and parents and all(id(p) in mirrored for p in parents):
            mirrored.add(id(h))
    return mirrored


def _failed(hop: _Hop) -> bool:
    return hop.status >= 500 or hop.status == 0


# --- one proxy's records ------------------------------------------------------------------------------
class PodRecords:
    """One proxy's record log, read lazily into its Istio metrics and the mesh's ledger.

    `pod` and `peer` are the proxy's own workload; `gateway` turns off the Host-header fallback for
    `destination_service` (Istio keeps it only on sidecar outbound listeners). Malformed lines are skipped and
    counted in `malformed`.
    """

    def __init__(self, path: str | os.PathLike[str], pod: str, peer: Peer, ledger: Ledger | None = None, *,
                 gateway: bool = False, metrics: ProxyMetrics | None = None) -> None:
        self.file = RecordFile(path)
        self.pod = pod
        self.peer = peer
        self.ledger = ledger
        self.gateway = gateway
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.records = 0
        self.malformed = 0
        self._lock = threading.Lock()

    def refresh(self, resolver: Resolver) -> int:
        """Read what Envoy appended since the last call; returns how many records that was."""
        with self._lock:
            return self.ingest(self.file.read_lines(), resolver)

    def ingest(self, lines: Iterable[str], resolver: Resolver) -> int:
        """Turn record lines into metrics and ledger entries (what `refresh` does with the file's new lines)."""
        mesh = _Lookups(resolver, self.pod)
        count = 0
        for line in lines:
            record = parse_record(line)
            if record is None:
                self.malformed += 1
                continue
            count += 1
            if record.direction == OUTBOUND:
                other = mesh.peer_at(address_ip(record.upstream_host))
                labels = self._outbound_labels(record, other[1] if other else Peer(), mesh)
            else:
                other = mesh.peer_at(address_ip(record.downstream_remote))
                labels = self._inbound_labels(record, other[1] if other else Peer(), mesh)
            self.metrics.observe(labels, record.duration_ms, record.request_bytes, record.response_bytes)
            if self.ledger is not None:
                self.ledger.add(record, self.pod, self.peer, other[0] if other else None)
        self.records += count
        return count

    def exposition(self, resolver: Resolver | None = None) -> bytes:
        """Istio's metrics of this proxy in Prometheus text (after a `refresh` when given a resolver)."""
        if resolver is not None:
            self.refresh(resolver)
        return self.metrics.exposition()

    def close(self) -> None:
        self.file.close()

    def _outbound_labels(self, record: Record, destination: Peer, mesh: _Lookups) -> Labels:
        """reporter="source", by Istio's client-side rules (istio/proxy istio_stats.cc `populatePeerInfo`):
        the catch-all route or special cluster names the service, else the cluster's service, else the Host
        header (sidecars only); the namespace is the destination pod's."""
        host = name = "" if self.gateway else record.authority
        cluster = record.upstream_cluster
        if record.route in ROUTE_SERVICE_NAMES:
            name = ROUTE_SERVICE_NAMES[record.route]
        elif cluster in SPECIAL_CLUSTERS:
            name = cluster
        elif cluster:
            service = mesh.service_of_cluster(cluster)
            if service is not None:
                host, name = service[0], service[1] or service[0].split(".")[0]
        namespace = destination.namespace if destination.known else UNKNOWN
        return label_values("source", self.peer, destination, host or UNKNOWN, name or UNKNOWN, namespace,
                            record.status, record.flags)

    def _inbound_labels(self, record: Record, source: Peer, mesh: _Lookups) -> Labels:
        """reporter="destination", by Istio's server-side rules: the service of the inbound cluster's port, else
        the workload's canonical service (no Host fallback); the namespace is the workload's own."""
        host = name = ""
        cluster = record.upstream_cluster
        if cluster in SPECIAL_CLUSTERS:
            name = cluster
        elif (port := _inbound_port(cluster)) is not None:
            service = mesh.inbound_service(port)
            if service is not None:
                host, name = service[0], service[1] or service[0].split(".")[0]
        me = self.peer
        return label_values("destination", source, me, host or me.canonical_service, name or me.canonical_service,
                            me.namespace, record.status, record.flags)


class _Lookups:
    """The resolver's answers, remembered for one read (a pod's IP and its proxy's clusters do not change
    within it)."""

    def __init__(self, resolver: Resolver, pod: str) -> None:
        self.resolver = resolver
        self.pod = pod
        self._peers: dict[str, tuple[str, Peer] | None] = {}
        self._clusters: dict[str, ServiceRef | None] = {}
        self._ports: dict[int, ServiceRef | None] = {}

    def peer_at(self, ip: str) -> tuple[str, Peer] | None:
        if ip not in self._peers:
            self._peers[ip] = self.resolver.peer_at(ip) if ip else None
        return self._peers[ip]

    def service_of_cluster(self, cluster: str) -> ServiceRef | None:
        if cluster not in self._clusters:
            self._clusters[cluster] = (self.resolver.service_of_cluster(self.pod, cluster)
                                       or _service_in_name(cluster))
        return self._clusters[cluster]

    def inbound_service(self, port: int) -> ServiceRef | None:
        if port not in self._ports:
            self._ports[port] = self.resolver.inbound_service(self.pod, port)
        return self._ports[port]


def _service_in_name(cluster: str) -> ServiceRef | None:
    """`outbound|80|v1|catalog.ns.svc.cluster.local` → its host, for a cluster the resolver does not know."""
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[3]:
        return parts[3], parts[3].split(".")[0], ""
    return None


def _inbound_port(cluster: str) -> int | None:
    """`inbound|8080||` → 8080."""
    parts = cluster.split("|")
    return int(parts[1]) if len(parts) == 4 and parts[0] == "inbound" and parts[1].isdigit() else None
