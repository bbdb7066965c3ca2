"""Envoy's request records → typed records, Istio metrics and the request ledger (hand-written record lines)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshlib.local.envoy.records import Ledger, PodRecords, Record, RecordFile, is_shadow, parse_record
from meshlib.local.metrics import Peer

NS = "istioinaction"
CATALOG = ("catalog.istioinaction.svc.cluster.local", "catalog", NS)
FORUM = ("forum.istioinaction.svc.cluster.local", "forum", NS)
WEBAPP = ("webapp.istioinaction.svc.cluster.local", "webapp", NS)
SE = ("jsonplaceholder.typicode.com", "jsonplaceholder.typicode.com", NS)


def peer(workload: str, app: str, version: str | None = None, ns: str = NS) -> Peer:
    return Peer.of(workload, ns, {"app": app, **({"version": version} if version else {})})


# pod name -> (IP, Peer, container port)
PODS = {
    "gw": ("127.0.1.1", peer("istio-ingressgateway", "istio-ingressgateway", ns="istio-system"), 8080),
    "webapp-1": ("127.0.1.2", peer("webapp", "webapp"), 8080),
    "catalog-v1-a": ("127.0.1.3", peer("catalog", "catalog", "v1"), 3000),
    "catalog-v1-b": ("127.0.1.4", peer("catalog", "catalog", "v1"), 3000),
    "catalog-v2-a": ("127.0.1.5", peer("catalog-v2", "catalog", "v2"), 3000),
    "forum-1": ("127.0.1.6", peer("forum", "forum"), 8080),
}


class FakeMesh:
    """The Resolver: pods by IP, clusters' services, which service sends to which pod port."""

    def peer_at(self, ip: str) -> tuple[str, Peer] | None:
        return next(((name, p) for name, (pip, p, _) in PODS.items() if pip == ip), None)

    def service_of_cluster(self, pod: str, cluster: str) -> tuple[str, str, str] | None:
        return {"outbound|80|version-v1|catalog.istioinaction.svc.cluster.local": CATALOG,
                "outbound|80|version-v2|catalog.istioinaction.svc.cluster.local": CATALOG,
                "outbound|80||catalog.istioinaction.svc.cluster.local": CATALOG,
                "outbound|80||forum.istioinaction.svc.cluster.local": FORUM,
                "outbound|80||webapp.istioinaction.svc.cluster.local": WEBAPP,
                "outbound|80||jsonplaceholder.typicode.com": SE}.get(cluster)

    def inbound_service(self, pod: str, port: int) -> tuple[str, str, str] | None:
        app = PODS[pod][1].app
        return {("catalog", 3000): CATALOG, ("webapp", 8080): WEBAPP}.get((app, port))


def addr(pod: str, port: int | None = None) -> str:
    ip, _, cport = PODS[pod]
    return f"{ip}:{port if port is not None else cport}"


def outbound(pod: str, start: float, rid: str, to: str | None, cluster: str | None, *, status: int = 200,
             attempts: int = 1, authority: str = "catalog.istioinaction", flags: str = "-",
             route: str | None = "default") -> str:
    """An outbound record line as Envoy writes it (`to`: the pod its final try reached)."""
    return json.dumps({
        "start": f"{start:.6f}", "method": "GET", "path": "/items", "authority": authority, "request_id": rid,
        "attempt": str(attempts) if cluster else None, "attempts": attempts if cluster else 0,
        "protocol": "HTTP/1.1", "status": status, "flags": flags, "details": "via_upstream", "duration_ms": 4,
        "bytes_received": 0, "bytes_sent": 12, "wire_bytes_received": 90, "wire_bytes_sent": 180,
        "upstream_host": addr(to) if to else None, "upstream_cluster": cluster,
        "downstream_local": "127.0.0.1:30000", "downstream_remote": "127.0.0.1:50000", "route": route,
        "direction": "outbound"})


def inbound(pod: str, start: float, rid: str, source: str | None, *, attempt: int | None = 1, status: int = 200,
            authority: str = "catalog.istioinaction", flags: str = "-", details: str = "via_upstream") -> str:
    """An inbound record line (`source`: the pod whose sidecar sent it; None: a client outside the mesh)."""
    port = PODS[pod][2]
    return json.dumps({
        "start": f"{start:.6f}", "method": "GET", "path": "/items", "authority": authority, "request_id": rid,
        "attempt": str(attempt) if attempt is not None else None, "attempts": 1, "protocol": "HTTP/1.1",
        "status": status, "flags": flags, "details": details, "duration_ms": 2, "bytes_received": 0,
        "bytes_sent": 12, "wire_bytes_received": 150, "wire_bytes_sent": 170,
        "upstream_host": f"{PODS[pod][0]}:1{port}", "upstream_cluster": f"inbound|{port}||",
        "downstream_local": addr(pod), "downstream_remote": (addr(source, 41000) if source else "127.0.0.1:41000"),
        "route": "default", "direction": "inbound"})


def feed(ledger: Ledger, lines: list[tuple[str, str]]) -> None:
    """(pod, line) pairs into the ledger, each through that pod's PodRecords."""
    for pod, text in lines:
        PodRecords(os.devnull, pod, PODS[pod][1], ledger, gateway=pod == "gw").ingest([text], FakeMesh())


V1 = "outbound|80|version-v1|catalog.istioinaction.svc.cluster.local"
V2 = "outbound|80|version-v2|catalog.istioinaction.svc.cluster.local"
T = 1796205690.0


# --- parse_record ---------------------------------------------------------------------------------------
REAL_LINE = ('{"attempt":"2","attempts":2,"authority":"catalog:8080","bytes_received":11,"bytes_sent":13,'
             '"details":"via_upstream","direction":"outbound","downstream_local":"127.0.0.1:19000",'
             '"downstream_remote":"127.0.0.1:40396","duration_ms":3,"flags":"-","method":"POST","path":"/post",'
             '"protocol":"HTTP/1.1","request_id":"d16567af","route":"r1","start":"1796205707.280609","status":200,'
             '"upstream_cluster":"outbound|80|v1|catalog","upstream_host":"127.0.0.4:19080",'
             '"wire_bytes_received":156,"wire_bytes_sent":179}')
NO_ROUTE_LINE = ('{"attempt":null,"attempts":0,"authority":"other","bytes_received":0,"bytes_sent":0,'
                 '"details":"route_not_found","direction":"outbound","downstream_local":"127.0.0.1:19000",'
                 '"downstream_remote":"127.0.0.1:40374","duration_ms":0,"flags":"NR","method":"GET","path":"/x",'
                 '"protocol":"HTTP/1.1","request_id":"f2e4","route":null,"start":"1796205707.258","status":404,'
                 '"upstream_cluster":null,"upstream_host":null,"wire_bytes_received":70,"wire_bytes_sent":97}')


def test_a_record_line_parses_into_typed_fields():
    r = parse_record(REAL_LINE)
    assert r == Record(direction="outbound", start=1796205707.280609, method="POST", path="/post",
                       authority="catalog:8080", request_id="d16567af", attempt=2, attempts=2, protocol="HTTP/1.1",
                       status=200, flags="", details="via_upstream", duration_ms=3, bytes_received=11, bytes_sent=13,
                       wire_bytes_received=156, wire_bytes_sent=179, upstream_host="127.0.0.4:19080",
                       upstream_cluster="outbound|80|v1|catalog", downstream_local="127.0.0.1:19000",
                       downstream_remote="127.0.0.1:40396", route="r1")
    assert (r.request_bytes, r.response_bytes, r.final_attempt) == (156, 179, 2)


def test_missing_values_become_empty_or_none():
    r = parse_record(NO_ROUTE_LINE)
    assert r is not None
    assert (r.attempt, r.upstream_cluster, r.upstream_host, r.route, r.flags) == (None, "", "", "", "NR")
    assert r.final_attempt == 1
    text_dashes = parse_record('{"direction":"inbound","start":"1.5","status":"-","duration_ms":"-","flags":"-",'
                               '"upstream_host":"-","attempt":"3","bytes_sent":"42"}')
    assert text_dashes is not None
    assert (text_dashes.status, text_dashes.duration_ms, text_dashes.flags, text_dashes.upstream_host,
            text_dashes.attempt, text_dashes.bytes_sent) == (0, None, "", "", 3, 42)
    # older logs without the wire-size fields fall back to body sizes
    assert (text_dashes.request_bytes, text_dashes.response_bytes) == (0, 42)


@pytest.mark.parametrize("line", [
    "", "not json", "[1, 2]", '"text"', "null",
    '{"direction": "sideways", "start": "1"}',
    '{"direction": "inbound"}',
    '{"direction": "inbound", "start": "yesterday"}',
    '{"direction": "inbound", "start": true}',
    '{"direction": "inbound", "start": "1", "status": "two hundred"}',
    '{"direction": "inbound", "start": "1", "status": true}',
    '{"direction": "inbound", "start": "1", "duration_ms": [1]}',
    REAL_LINE[:120],
    "{" * 100_000,
], ids=lambda s: s[:40] or "empty")
def test_a_malformed_line_is_none_never_an_exception(line):
    assert parse_record(line) is None


@pytest.mark.parametrize("authority, shadow", [
    ("catalog-shadow:8080", True), ("catalog-shadow", True), ("catalog.istioinaction-shadow", True),
    ("catalog:8080", False), ("catalog", False), ("shadow:80", False), ("[::1]-shadow", True), ("", False),
])
def test_shadow_suffix_sits_before_the_port(authority, shadow):
    assert is_shadow(authority) is shadow


# --- Istio metrics ----------------------------------------------------------------------------------------
def labels_of(pod: str, text: str, *, gateway: bool = False) -> dict[str, str]:
    records = PodRecords(os.devnull, pod, PODS[pod][1], gateway=gateway)
    assert records.ingest([text], FakeMesh()) == 1
    (family,) = [f for f in text_string_to_metric_families(records.exposition().decode())
                 if f.name == "istio_requests"]
    (sample,) = family.samples
    assert sample.value == 1.0
    return sample.labels


METRIC_CASES = [
    ("sidecar outbound to a subset", "webapp-1", False,
     outbound("webapp-1", T, "r", "catalog-v1-a", V1),
     {"reporter": "source", "source_workload": "webapp", "source_app": "webapp", "source_version": "unknown",
      "source_canonical_service": "webapp", "source_canonical_revision": "latest", "source_workload_namespace": NS,
      "source_cluster": "Kubernetes", "destination_workload": "catalog", "destination_app": "catalog",
      "destination_version": "v1", "destination_canonical_service": "catalog", "destination_canonical_revision": "v1",
      "destination_workload_namespace": NS, "destination_service": CATALOG[0], "destination_service_name": "catalog",
      "destination_service_namespace": NS, "destination_cluster": "Kubernetes", "request_protocol": "http",
      "response_code": "200", "response_flags": "-", "connection_security_policy": "unknown",
      "source_principal": "unknown", "destination_principal": "unknown", "grpc_response_status": ""}),
    ("gateway outbound", "gw", True,
     outbound("gw", T, "r", "webapp-1", "outbound|80||webapp.istioinaction.svc.cluster.local",
              authority="webapp.istioinaction.io"),
     {"reporter": "source", "source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system",
      "destination_workload": "webapp", "destination_service": WEBAPP[0], "destination_service_name": "webapp"}),
    ("ALLOW_ANY: allow_any route to PassthroughCluster, Host header names the service", "webapp-1", False,
     outbound("webapp-1", T, "r", None, "PassthroughCluster", authority="httpbin.org", route="allow_any",
              status=503, flags="UF"),
     {"destination_service": "httpbin.org", "destination_service_name": "PassthroughCluster",
      "destination_service_namespace": "unknown", "destination_workload": "unknown",
      "destination_canonical_revision": "latest", "destination_cluster": "unknown", "response_code": "503",
      "response_flags": "UF"}),
    ("REGISTRY_ONLY: block_all direct response", "webapp-1", False,
     outbound("webapp-1", T, "r", None, None, authority="httpbin.org:80", route="block_all", status=502),
     {"destination_service": "httpbin.org:80", "destination_service_name": "BlackHoleCluster",
      "destination_service_namespace": "unknown", "response_code": "502", "response_flags": "-"}),
    ("BlackHoleCluster closes the connection", "webapp-1", False,
     outbound("webapp-1", T, "r", None, "BlackHoleCluster", authority="db:5432", route=None, status=0, flags="UH"),
     {"destination_service": "db:5432", "destination_service_name": "BlackHoleCluster", "response_code": "0",
      "response_flags": "UH"}),
    ("ServiceEntry host reached through the stand-in (not a pod)", "webapp-1", False,
     outbound("webapp-1", T, "r", None, "outbound|80||jsonplaceholder.typicode.com",
              authority="jsonplaceholder.typicode.com"),
     {"destination_service": SE[0], "destination_service_name": SE[1], "destination_workload": "unknown",
      "destination_service_namespace": "unknown"}),
    ("cluster unknown to the resolver: the host in its name", "webapp-1", False,
     outbound("webapp-1", T, "r", "forum-1", "outbound|8080|v9|forum2.other.svc.cluster.local"),
     {"destination_service": "forum2.other.svc.cluster.local", "destination_service_name": "forum2",
      "destination_workload": "forum", "destination_service_namespace": NS}),
    ("no route on a sidecar: Host header fallback", "webapp-1", False,
     outbound("webapp-1", T, "r", None, None, authority="nowhere:8080", route=None, status=404, flags="NR"),
     {"destination_service": "nowhere:8080", "destination_service_name": "nowhere:8080", "response_code": "404",
      "response_flags": "NR"}),
    ("no route on a gateway: no Host fallback", "gw", True,
     outbound("gw", T, "r", None, None, authority="nowhere.io", route=None, status=404, flags="NR"),
     {"destination_service": "unknown", "destination_service_name": "unknown", "response_flags": "NR"}),
    ("sidecar inbound from a mesh pod", "catalog-v1-a", False,
     inbound("catalog-v1-a", T, "r", "webapp-1", status=503),
     {"reporter": "destination", "source_workload": "webapp", "source_app": "webapp", "source_cluster": "Kubernetes",
      "source_workload_namespace": NS, "destination_workload": "catalog", "destination_version": "v1",
      "destination_service": CATALOG[0], "destination_service_name": "catalog", "destination_service_namespace": NS,
      "response_code": "503", "connection_security_policy": "none", "destination_principal": "unknown"}),
    ("sidecar inbound from outside the mesh", "catalog-v1-a", False,
     inbound("catalog-v1-a", T, "r", None),
     {"source_workload": "unknown", "source_app": "unknown", "source_workload_namespace": "unknown",
      "source_canonical_service": "unknown", "source_canonical_revision": "latest", "source_cluster": "unknown",
      "destination_workload": "catalog"}),
    ("inbound port no service selects: the canonical service", "forum-1", False,
     inbound("forum-1", T, "r", "webapp-1"),
     {"destination_service": "forum", "destination_service_name": "forum", "destination_service_namespace": NS}),
]


@pytest.mark.parametrize("pod, gateway, line, wanted", [c[1:] for c in METRIC_CASES], ids=[c[0] for c in METRIC_CASES])
def test_records_become_istio_metrics_labelled_as_istio_labels_them(pod, gateway, line, wanted):
    labels = labels_of(pod, line, gateway=gateway)
    assert {k: labels[k] for k in wanted} == wanted


def test_histograms_observe_duration_and_wire_sizes():
    records = PodRecords(os.devnull, "webapp-1", PODS["webapp-1"][1])
    records.ingest([outbound("webapp-1", T + i, f"r{i}", "catalog-v1-a", V1) for i in range(3)], FakeMesh())
    text = records.exposition().decode()
    values = {(s.name, s.labels.get("le")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("istio_requests_total", None)] == 3
    assert values[("istio_request_duration_milliseconds_sum", None)] == 12  # 3 × 4 ms
    assert values[("istio_request_duration_milliseconds_bucket", "1.0")] == 0
    assert values[("istio_request_duration_milliseconds_bucket", "5.0")] == 3
    assert values[("istio_request_bytes_sum", None)] == 270  # wire bytes, headers included
    assert values[("istio_response_bytes_sum", None)] == 540
    assert values[("istio_response_bytes_bucket", "+Inf")] == 3
    assert "_created" not in text
    first = next(line for line in text.splitlines() if line.startswith("istio_requests_total{"))
    assert first.startswith('istio_requests_total{reporter="source",source_workload="webapp",')


# --- the ledger -------------------------------------------------------------------------------------------
def chain(served) -> list[tuple[str, bool, int]]:
    return [(s.pod, s.mirrored, s.attempt) for s in served]


LEDGER_CASES = [
    ("gateway → webapp → catalog", [
        ("gw", outbound("gw", T, "r", "webapp-1", "outbound|80||webapp.istioinaction.svc.cluster.local")),
        ("webapp-1", inbound("webapp-1", T + 0.001, "r", "gw")),
        ("webapp-1", outbound("webapp-1", T + 0.002, "r", "catalog-v1-a", V1)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.003, "r", "webapp-1")),
    ], [("webapp-1", False, 1), ("catalog-v1-a", False, 1)]),
    ("mirror, Istio ≤ 1.27: the copy's Host carries -shadow", [
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0011, "r", "webapp-1",
                                 authority="catalog.istioinaction-shadow")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
    ], [("catalog-v1-a", False, 1), ("catalog-v2-a", True, 1)]),
    ("mirror, Istio ≥ 1.28: no suffix; the copy is the hop no try explains", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1)),
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0011, "r", "webapp-1")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
    ], [("catalog-v1-a", False, 1), ("catalog-v2-a", True, 1)]),
    ("mirror ≥ 1.28, the copy arriving first", [
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0005, "r", "webapp-1")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1)),
    ], [("catalog-v2-a", True, 1), ("catalog-v1-a", False, 1)]),
    ("mirror ≥ 1.28 without the caller's record: cannot be told, counts as served", [
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0011, "r", "webapp-1")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
    ], [("catalog-v1-a", False, 1), ("catalog-v2-a", False, 1)]),
    ("retry: the first try's pod served too, not mirrored, with its try number", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-b", V1, attempts=2)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1", status=503)),
        ("catalog-v1-b", inbound("catalog-v1-b", T + 0.030, "r", "webapp-1", attempt=2)),
    ], [("catalog-v1-a", False, 1), ("catalog-v1-b", False, 2)]),
    ("retry and mirror ≥ 1.28: the copy (attempt 1, another workload) is the mirror", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-b", V1, attempts=2)),
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0009, "r", "webapp-1")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1", status=503)),
        ("catalog-v1-b", inbound("catalog-v1-b", T + 0.030, "r", "webapp-1", attempt=2)),
    ], [("catalog-v2-a", True, 1), ("catalog-v1-a", False, 1), ("catalog-v1-b", False, 2)]),
    ("retry and mirror ≤ 1.27", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-b", V1, attempts=2)),
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0009, "r", "webapp-1", authority="catalog-shadow:80")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1", status=503)),
        ("catalog-v1-b", inbound("catalog-v1-b", T + 0.030, "r", "webapp-1", attempt=2)),
    ], [("catalog-v2-a", True, 1), ("catalog-v1-a", False, 1), ("catalog-v1-b", False, 2)]),
    ("the final try went back to the same pod", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1, attempts=2)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1", status=503)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.030, "r", "webapp-1", attempt=2)),
    ], [("catalog-v1-a", False, 1), ("catalog-v1-a", False, 2)]),
    ("calls the mirror copy's app makes are part of the copy", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0012, "r", "webapp-1")),
        ("catalog-v2-a", outbound("catalog-v2-a", T + 0.002, "r", "forum-1",
                                  "outbound|80||forum.istioinaction.svc.cluster.local")),
        ("forum-1", inbound("forum-1", T + 0.003, "r", "catalog-v2-a")),
    ], [("catalog-v1-a", False, 1), ("catalog-v2-a", True, 1), ("forum-1", True, 1)]),
    ("a caller that is not a pod (source unknown) still explains its hops", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1)),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", None)),
        ("catalog-v2-a", inbound("catalog-v2-a", T + 0.0012, "r", None)),
    ], [("catalog-v1-a", False, 1), ("catalog-v2-a", True, 1)]),
    ("one caller, the same request id to two services (fan-out keeps x-request-id)", [
        ("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1)),
        ("webapp-1", outbound("webapp-1", T + 0.010, "r", "forum-1",
                              "outbound|80||forum.istioinaction.svc.cluster.local")),
        ("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1")),
        ("forum-1", inbound("forum-1", T + 0.011, "r", "webapp-1")),
    ], [("catalog-v1-a", False, 1), ("forum-1", False, 1)]),
    ("a local reply reached no pod", [
        ("webapp-1", outbound("webapp-1", T, "r", None, None, route="block_all", status=502)),
    ], []),
]


@pytest.mark.parametrize("lines, expected", [c[1:] for c in LEDGER_CASES], ids=[c[0] for c in LEDGER_CASES])
def test_the_ledger_says_who_served_a_request_and_marks_mirror_copies(lines, expected):
    ledger = Ledger()
    feed(ledger, lines)
    assert chain(ledger.served("r")) == expected


def test_the_ledger_verdict_does_not_depend_on_which_log_is_read_first():
    lines = LEDGER_CASES[6][1]
    verdicts = set()
    for rotation in range(len(lines)):
        ledger = Ledger()
        feed(ledger, lines[rotation:] + lines[:rotation])
        verdicts.add(tuple(chain(ledger.served("r"))))
    assert verdicts == {tuple(LEDGER_CASES[6][2])}


def test_served_entries_carry_what_the_dsl_reads():
    ledger = Ledger()
    feed(ledger, [("catalog-v1-a", inbound("catalog-v1-a", T + 0.25, "r", "webapp-1", status=503))])
    (s,) = ledger.served("r")
    assert (s.request_id, s.pod, s.peer.workload, s.peer.version, s.authority, s.path, s.status, s.started) == \
        ("r", "catalog-v1-a", "catalog", "v1", "catalog.istioinaction", "/items", 503, T + 0.25)
    assert ledger.served("unknown") == []


def test_the_ledger_is_bounded_and_drops_the_oldest_request_ids():
    ledger = Ledger(max_ids=3)
    feed(ledger, [("catalog-v1-a", inbound("catalog-v1-a", T + i, f"r{i}", "webapp-1")) for i in range(5)])
    assert len(ledger) == 3
    assert "r0" not in ledger and "r1" not in ledger
    assert [s.pod for s in ledger.served("r4")] == ["catalog-v1-a"]
    feed(ledger, [("catalog-v1-b", inbound("catalog-v1-b", T + 9, "r2", "webapp-1"))])  # known id: nothing dropped
    assert len(ledger) == 3 and "r2" in ledger


def test_settled_waits_for_both_ends_of_every_hop():
    ledger = Ledger()
    feed(ledger, [("webapp-1", outbound("webapp-1", T, "r", "catalog-v1-a", V1))])
    assert not ledger.settled("r")  # catalog's inbound record is still in its Envoy's buffer
    feed(ledger, [("catalog-v1-a", inbound("catalog-v1-a", T + 0.001, "r", "webapp-1"))])
    assert ledger.settled("r")
    feed(ledger, [("forum-1", inbound("forum-1", T + 0.002, "r", "catalog-v1-a"))])
    assert not ledger.settled("r")  # catalog's own outbound record is missing
    feed(ledger, [("webapp-1", outbound("webapp-1", T, "q", "catalog-v1-a", V1, status=503, flags="UF"))])
    assert ledger.settled("q")  # a connect failure leaves no inbound record to wait for
    assert not ledger.settled("never-seen")


# --- reading the file Envoy appends to --------------------------------------------------------------------
def test_record_file_reads_increments_and_holds_a_partial_last_line(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    f = RecordFile(path)
    assert f.read_lines() == []  # Envoy has not created it yet
    path.write_bytes(b'{"a": 1}\n{"b": ')
    assert f.read_lines() == ['{"a": 1}']
    assert f.read_lines() == []
    with path.open("ab") as out:
        out.write(b'2}\n\n{"c": 3}\n')
    assert f.read_lines() == ['{"b": 2}', '{"c": 3}']
    f.close()


def test_record_file_starts_again_after_truncation(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_text("one\ntwo\n")
    with RecordFile(path) as f:
        assert f.read_lines() == ["one", "two"]
        path.write_text("new\n")  # truncated and rewritten shorter
        assert f.read_lines() == ["new"]
        assert f.offset == 4


def test_record_file_follows_rotation_after_reading_the_old_files_tail(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_text("one\n")
    with RecordFile(path) as f:
        assert f.read_lines() == ["one"]
        with path.open("a") as out:
            out.write("two\nthr")
        path.rename(tmp_path / "r.jsonl.1")
        assert f.read_lines() == ["two"]  # rotated away, not recreated yet: the old file is still read
        with (tmp_path / "r.jsonl.1").open("a") as out:
            out.write("ee\n")  # Envoy writes to the old file until it reopens its logs
        path.write_text("four\n")
        assert f.read_lines() == ["three", "four"]
        with path.open("a") as out:
            out.write("five\n")
        assert f.read_lines() == ["five"]


def test_pod_records_read_lazily_and_count_malformed_lines(tmp_path: Path):
    path = tmp_path / "catalog.jsonl"
    ledger = Ledger()
    records = PodRecords(path, "catalog-v1-a", PODS["catalog-v1-a"][1], ledger)
    assert records.refresh(FakeMesh()) == 0
    good = inbound("catalog-v1-a", T, "r", "webapp-1")
    path.write_text("\n".join([good, "garbage", good.replace('"r"', '"s"')]) + "\n" + good[:50])
    assert "r" not in ledger  # nothing is read until asked
    assert records.refresh(FakeMesh()) == 2
    assert (records.records, records.malformed) == (2, 1)
    with path.open("a") as out:
        out.write(good[50:].replace('"r"', '"t"') + "\n")
    assert records.refresh(FakeMesh()) == 1
    assert [len(ledger.served(rid)) for rid in ("r", "s", "t")] == [1, 1, 1]
    series = [s for f in text_string_to_metric_families(records.exposition().decode()) for s in f.samples
              if s.name == "istio_requests_total"]
    assert [(s.labels["reporter"], s.value) for s in series] == [("destination", 3.0)]
    records.close()


# --- client disconnects (Envoy's DC flag) ---------------------------------------------------------------
DISCONNECT = "downstream_remote_disconnect"


@pytest.mark.parametrize("status, flags", [(200, "DC"), (0, "DI,DC"), (200, "DC,URX"), (503, "DC")],
                         ids=["mid-body", "before the response", "with another flag", "after an error"])
def test_a_client_disconnect_is_a_failed_request_in_the_ledger_and_the_metrics(status, flags):
    """Envoy logs the code it had begun to send (200 `DC` when the client leaves mid-body, as seen on this
    mesh): meshlib counts it as Istio reports a disconnect, response_code 0, never as a success."""
    line = inbound("catalog-v1-a", T, "r", "webapp-1", status=status, flags=flags, details=DISCONNECT)
    record = parse_record(line)
    assert record is not None and (record.status, record.flags) == (0, flags)
    labels = labels_of("catalog-v1-a", line)
    assert (labels["response_code"], labels["response_flags"]) == ("0", flags)
    gateway = labels_of("gw", outbound("gw", T, "r", "webapp-1", "outbound|80||webapp.istioinaction.svc.cluster.local",
                                       status=status, flags=flags, authority="webapp.istioinaction.io"), gateway=True)
    assert (gateway["reporter"], gateway["response_code"], gateway["response_flags"]) == ("source", "0", flags)
    ledger = Ledger()
    feed(ledger, [("catalog-v1-a", line)])
    (served,) = ledger.served("r")
    assert served.status == 0


def test_only_the_dc_flag_turns_a_response_into_a_disconnect():
    for flags, status in [("-", 200), ("UC", 503), ("DI", 200), ("DPE", 400), ("UT", 504)]:
        record = parse_record(inbound("catalog-v1-a", T, "r", "webapp-1", status=status, flags=flags))
        assert record is not None and record.status == status, flags


def test_a_disconnected_request_is_counted_apart_from_the_200s():
    """In the proxies' own counters (what builtin metric checks read), a 200 the client never finished
    reading is a response_code="0" request, not one more 200."""
    records = PodRecords(os.devnull, "catalog-v1-a", PODS["catalog-v1-a"][1])
    lines = [inbound("catalog-v1-a", T + i, f"r{i}", "webapp-1") for i in range(3)]
    lines.append(inbound("catalog-v1-a", T + 3, "r3", "webapp-1", status=200, flags="DC", details=DISCONNECT))
    records.ingest(lines, FakeMesh())
    counts = {s.labels["response_code"]: s.value for f in text_string_to_metric_families(records.exposition().decode())
              for s in f.samples if s.name == "istio_requests_total"}
    assert counts == {"200": 3.0, "0": 1.0}
