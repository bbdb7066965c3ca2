"""Which pod served a request, from the destination sidecars' access logs: Istio's default TEXT lines.

A sidecar writes one line per request on each listener when access logging is on (a Telemetry resource with the
`envoy` provider, or `meshConfig.accessLogFile`); the `istio-proxy` container's log holds them, among Envoy's and
pilot-agent's own lines. A line whose upstream cluster is `inbound|…` is the destination side: that pod served the
request. Lines are matched against the format meshlib itself configures (`meshlib.xds.accesslog.ISTIO_TEXT_FORMAT`,
`%UPSTREAM_CLUSTER%` or `_RAW`), so what is parsed here is the format the embedded mesh writes.

    index = ServedIndex()
    index.add(pod_name, pod_object, log_text)        # each read of a pod's sidecar log (windows may overlap)
    index.served(request_id)                         # [Served, …] in arrival order, mirror copies marked

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import datetime
from typing import Any

from meshlib.local.envoy.records import Served, is_shadow
from meshlib.local.metrics import Peer
from meshlib.xds.accesslog import ISTIO_TEXT_FORMAT

INBOUND_PREFIX = "inbound|"
MAX_REQUEST_IDS = 200_000  # as the embedded mesh's ledger: the oldest request ids are dropped first
# the operators whose values the index reads, by the name they get here
FIELDS = {
    "START_TIME": "start",
    "REQ(:METHOD)": "method",
    "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "path",
    "RESPONSE_CODE": "status",
    "REQ(X-REQUEST-ID)": "request_id",
    "REQ(:AUTHORITY)": "authority",
    "UPSTREAM_HOST": "upstream_host",
    "UPSTREAM_CLUSTER": "cluster",
    "UPSTREAM_CLUSTER_RAW": "cluster",
}
_OPERATOR = re.compile(r"%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%")


def text_line_pattern(fmt: str = ISTIO_TEXT_FORMAT) -> re.Pattern[str]:
    """A regex for lines of the TEXT format `fmt`: literal text as is, an operator between double quotes as any
    text without a quote, any other operator as one word (Envoy prints `-` for an empty value)."""
    fmt = fmt.rstrip("\n").replace("{cluster}", "%UPSTREAM_CLUSTER%")
    parts: list[str] = []
    pos = 0
    named: set[str] = set()
    for match in _OPERATOR.finditer(fmt):
        parts.append(re.escape(fmt[pos:match.start()]))
        quoted = fmt[match.start() - 1:match.start()] == '"' and fmt[match.end():match.end() + 1] == '"'
        value = r'[^"]*' if quoted else r"\S*"
        name = FIELDS.get(match.group(1))
        if name and name not in named:
            named.add(name)
            parts.append(f"(?P<{name}>{value})")
        else:
            parts.append(f"(?:{value})")
        pos = match.end()
    parts.append(re.escape(fmt[pos:]))
    return re.compile("".join(parts))


TEXT_LINE = text_line_pattern()


def workload_of(pod: dict[str, Any]) -> str:
    """The workload a pod belongs to, as Istio names it: a Deployment's pods are owned by a ReplicaSet named
    `<deployment>-<pod-template-hash>`; other pods are their owner, or themselves."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for owner in meta.get("ownerReferences") or []:
        name = str(owner.get("name") or "")
        template_hash = labels.get("pod-template-hash")
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return name[:-len(template_hash) - 1]
        if name:
            return name
    return str(meta.get("name") or "")


def peer_of(pod: dict[str, Any]) -> Peer:
    """The destination side of a request this pod served, from its labels (as meshlib.config.canonical reads them)."""
    meta = pod.get("metadata") or {}
    return Peer.of(workload_of(pod), str(meta.get("namespace") or ""), dict(meta.get("labels") or {}))


def _epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def inbound_line(pod_name: str, peer: Peer, line: str) -> Served | None:
    """The request a pod's sidecar served, from one line of its log; None for any other line (Envoy's and
    pilot-agent's own lines, outbound requests, a line without an x-request-id)."""
    match = TEXT_LINE.fullmatch(line.strip())
    if match is None or not match["cluster"].startswith(INBOUND_PREFIX):
        return None
    request_id = match["request_id"]
    if not request_id or request_id == "-":
        return None
    authority = "" if match["authority"] == "-" else match["authority"]
    path = "" if match["path"] == "-" else match["path"]
    try:
        status = int(match["status"])
    except ValueError:
        status = 0
    return Served(request_id, pod_name, peer, authority, path, status, is_shadow(authority),
                  _epoch(match["start"]))


class ServedIndex:
    """The inbound access-log lines of a namespace's pods, by x-request-id. Logs are read in overlapping windows,
    so a line seen again (same pod, same text) is counted once; the oldest request ids go first past `limit`."""

    def __init__(self, limit: int = MAX_REQUEST_IDS) -> None:
        self.limit = limit
        self._by_id: OrderedDict[str, dict[tuple[str, str], Served]] = OrderedDict()

    def add(self, pod_name: str, pod: dict[str, Any], text: str) -> int:
        """The lines of one read of the pod's sidecar log; returns how many inbound lines were new."""
        peer = peer_of(pod)
        new = 0
        for line in text.splitlines():
            served = inbound_line(pod_name, peer, line)
            if served is None:
                continue
            seen = self._by_id.setdefault(served.request_id, {})
            key = (pod_name, line.strip())
            if key not in seen:
                seen[key] = served
                new += 1
        while len(self._by_id) > self.limit:
            self._by_id.popitem(last=False)
        return new

    def served(self, request_id: str) -> list[Served]:
        """Every pod that served the request (mirror copies marked), in the order the requests arrived."""
        return sorted((self._by_id.get(request_id) or {}).values(), key=lambda s: s.started)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())
