"""Reading istiod's /debug/syncz and deciding whether an apply is in effect at the proxies (meshlib.kube.xdssync)."""

from __future__ import annotations

import json

import pytest

from meshlib.errors import MeshlibError
from meshlib.kube.xdssync import TypeSync, parse_syncz, pushed_since, rejected, type_name, unsynced

RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def body(*entries: dict) -> bytes:
    return json.dumps(list(entries)).encode()


def proxy(name: str, rds: tuple[str, str], error: str = "") -> dict:
    return {"proxy": name, "proxy_type": "sidecar", "istio_version": "1.28.1",
            "resources": {CDS: {"sent": "c1", "acked": "c1", "sentTime": "2026-12-03T07:00:00Z"},
                          RDS: {"sent": rds[0], "acked": rds[1], **({"lastError": error} if error else {})}}}


@pytest.mark.parametrize(("url", "name"), [(CDS, "CDS"), (RDS, "RDS"), (EDS, "EDS"),
                                            ("type.googleapis.com/envoy.config.listener.v3.Listener", "LDS"),
                                            ("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "ECDS"),
                                            ("type.googleapis.com/istio.workload.Address", "Address")])
def test_type_urls_read_as_istioctl_names_them(url: str, name: str) -> None:
    assert type_name(url) == name


def test_the_per_type_map_and_the_flat_fields_of_older_istiod_both_parse() -> None:
    parsed = parse_syncz(body(
        proxy("catalog-1.istioinaction", ("n2", "n1"), "rejected"),
        {"proxy": "webapp-1.istioinaction", "cluster_sent": "c5", "cluster_acked": "c5", "route_sent": "r2",
         "route_acked": "r1"},
        {"proxy_type": "sidecar"},  # no proxy id: not a proxy meshlib can name
    ))
    assert set(parsed) == {"catalog-1.istioinaction", "webapp-1.istioinaction"}
    assert parsed["catalog-1.istioinaction"].types == {"CDS": TypeSync("c1", "c1"),
                                                        "RDS": TypeSync("n2", "n1", "rejected")}
    assert parsed["webapp-1.istioinaction"].types == {"CDS": TypeSync("c5", "c5"), "RDS": TypeSync("r2", "r1")}


@pytest.mark.parametrize(("answer", "why"), [(b"<html>forbidden</html>", "not JSON"),
                                             (b'{"proxy": "x"}', "not a list of proxies")])
def test_an_answer_that_is_not_syncz_is_one_line(answer: bytes, why: str) -> None:
    with pytest.raises(MeshlibError, match=why):
        parse_syncz(answer)


def test_a_changed_proxy_is_in_step_once_pushed_since_the_apply_and_acknowledged() -> None:
    a, b = "catalog-1.istioinaction", "webapp-1.istioinaction"
    before = parse_syncz(body(proxy(a, ("n1", "n1")), proxy(b, ("n1", "n1"))))
    # nothing pushed yet: the changed proxy waits, the unchanged one is in step
    assert unsynced(before, before, must_push=[a], others=[b]) == [f"{a}: no push from istiod since the apply"]
    # pushed, not yet acknowledged: waits, naming the type and nonces; an unchanged proxy mid-push waits too
    sent = parse_syncz(body(proxy(a, ("n2", "n1")), proxy(b, ("n2", "n1"))))
    assert unsynced(before, sent, [a], [b]) == [f"{a}: RDS sent n2, acknowledged n1",
                                                f"{b}: RDS sent n2, acknowledged n1"]
    acked = parse_syncz(body(proxy(a, ("n2", "n2")), proxy(b, ("n1", "n1"))))
    assert unsynced(before, acked, [a], [b]) == []
    # a changed proxy istiod does not list is not connected; an unchanged one it does not list is no concern
    assert unsynced(before, parse_syncz(body()), [a], [b]) == [f"{a}: not connected to istiod"]


def test_a_proxy_that_connected_after_the_apply_began_counts_as_pushed() -> None:
    now = parse_syncz(body(proxy("catalog-2.istioinaction", ("n1", "n1"))))["catalog-2.istioinaction"]
    assert pushed_since(None, now)
    assert not pushed_since(now, now)


def test_a_refused_push_is_named_with_envoys_reason_and_an_old_error_on_an_acknowledged_type_is_not() -> None:
    now = parse_syncz(body(proxy("catalog-1.istioinaction", ("n3", "n2"), "Proto constraint validation failed"),
                           proxy("webapp-1.istioinaction", ("n3", "n3"), "an earlier rejection"),
                           proxy("forum-1.istioinaction", ("n3", "n2"), "not ours to wait for")))
    assert rejected(now, ["webapp-1.istioinaction", "catalog-1.istioinaction"]) == [
        "catalog-1.istioinaction rejected RDS (nonce n3): Proto constraint validation failed"]
