"""The framework-neutral step functions against the real embedded mesh (no behave involved)."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest
from testkit.alpha import RANDOM_ALPHA

from meshlib.backend import LocalBackend
from meshlib.dsl import analysis, deploy, distribution, egress, envoy, logs, metrics, responses, sending
from meshlib.dsl.world import World
from meshlib.errors import MeshlibError
from meshlib.expect import ExpectationFailed

ROOT = Path(__file__).resolve().parents[2]
NS = "istioinaction"
BASE = ["services/catalog/kubernetes/catalog.yaml", "services/catalog/kubernetes/catalog-deployment-v2.yaml",
        "services/webapp/kubernetes/webapp.yaml", "ch5/webapp-catalog-gw-vs.yaml", "ch5/catalog-dest-rule.yaml"]
WEBAPP = "webapp.istioinaction.io"


@pytest.fixture
def world():
    backend = LocalBackend(NS, seed=3)
    evidence: list[tuple[str, str, str]] = []
    w = World(backend, NS, ROOT / "manifests", evidence=lambda *e: evidence.append(e))
    w.recorded = evidence  # type: ignore[attr-defined]
    deploy.apply_manifests(w, BASE)
    try:
        yield w
    finally:
        w.stop_background()
        backend.close()


def test_v1_only_responses_and_their_checks(world: World) -> None:
    deploy.apply_manifests(world, ["ch5/catalog-vs-v1-mesh.yaml"])
    sending.through_gateway(world, 30, "/api/catalog", WEBAPP)
    responses.every_status(world, 200)
    responses.none_contain(world, "$..imageUrl")
    responses.all_contain(world, "$[*].name")
    responses.exactly_contain(world, 0, "$[*].imageUrl")
    responses.every_response_from(world, "catalog", "v1")
    envoy.observed_matches_prediction(world, "catalog")
    with pytest.raises(ExpectationFailed, match=r"expected every response to have status 404\n\s+but saw 30 × 200"):
        responses.every_status(world, 404)
    with pytest.raises(ExpectationFailed, match="every response to contain \\$\\[\\*\\].imageUrl"):
        responses.all_contain(world, "$[*].imageUrl")
    with pytest.raises(ValueError, match="invalid JSONPath"):
        responses.none_contain(world, "$[*")
    assert any("30 requests through the ingress gateway" in name for name, _, _ in world.recorded)


def test_split_checks_pass_and_fail_with_the_decision_rule(world: World) -> None:
    deploy.apply_manifests(world, ["ch5/catalog-vs-v2-50-50-mesh.yaml"])
    world.concurrency = 16
    world.alpha = RANDOM_ALPHA  # Envoy's choices are not seeded: keep a correct split's false failures rare
    sending.through_gateway(world, 300, "/api/catalog", WEBAPP)
    distribution.about_share(world, 0.5, "catalog", "v2")
    distribution.split(world, "catalog", {"v1": 0.5, "v2": 0.5})
    with pytest.raises(ExpectationFailed) as err:
        distribution.about_share(world, 0.10, "catalog", "v2")
    text = str(err.value)
    assert "binomial" in text and "p-value" in text and "10" in text


def test_mirror_logs_and_prediction(world: World) -> None:
    deploy.apply_manifests(world, ["ch5/catalog-vs-v2-mirror.yaml"])
    sending.through_gateway(world, 25, "/api/catalog", WEBAPP)
    responses.none_contain(world, "$..imageUrl")
    logs.logs_show(world, "catalog", "v2", 25, "-shadow")
    with pytest.raises(ExpectationFailed, match="logs to show 26 requests"):
        logs.logs_show(world, "catalog", "v2", 26, "-shadow")
    envoy.would_reach(world, "webapp sidecar", "catalog.istioinaction", "/items", {}, "v1", "catalog")
    with pytest.raises(ExpectationFailed, match="would reach v1"):
        envoy.would_reach(world, "webapp sidecar", "catalog.istioinaction", "/items", {}, "v2", "catalog")


def test_gateway_route_and_config_dump(world: World) -> None:
    deploy.apply_manifests(world, ["ch5/catalog-gateway.yaml", "ch5/catalog-vs-v2-request.yaml"])
    envoy.route_goes_to(world, "the ingress gateway", "catalog.istioinaction.io", "/",
                        {"x-istio-cohort": "internal"}, "version-v2")
    envoy.route_goes_to(world, "gateway", "catalog.istioinaction.io", "/", {}, "version-v1")
    with pytest.raises(ExpectationFailed, match="to subset version-v2\n\\s+but it goes to outbound"):
        envoy.route_goes_to(world, "gateway", "catalog.istioinaction.io", "/", {}, "version-v2")
    envoy.config_dump_has(world, "gateway", "$..virtual_hosts[0].name", "catalog.istioinaction.io:80")


def test_egress_and_analysis(world: World) -> None:
    deploy.apply_manifests(world, ["services/forum/kubernetes/forum-all.yaml"])
    egress.allowed(world, "forum", "jsonplaceholder.typicode.com")
    deploy.set_outbound_policy(world, "REGISTRY_ONLY")
    egress.blocked(world, "forum", "jsonplaceholder.typicode.com", 502)
    analysis.no_errors(world)
    deploy.apply_yaml(world, (ROOT / "manifests/ch5/catalog-vs-v2-mirror.yaml").read_text()
                      .replace("version-v2", "version-v3"))
    with pytest.raises(ExpectationFailed, match="IST0101"):
        analysis.no_errors(world)


def test_background_traffic_keeps_flowing_until_stopped(world: World) -> None:
    import time

    sending.start_background(world, 40, "/api/catalog", WEBAPP)
    time.sleep(0.5)
    got = sending.stop_background(world)
    assert 5 <= len(got) <= 40
    responses.every_status(world, 200)


HELD = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: catalog-vs-from-gw
spec:
  hosts: ["catalog.istioinaction.io"]
  gateways: [catalog-gateway]
  http:
  - match:
    - headers:
        x-hold:
          exact: "yes"
    fault:
      delay:
        fixedDelay: 12s
        percentage: {value: 100}
    route:
    - destination: {host: catalog, subset: version-v1}
  - route:
    - destination: {host: catalog, subset: version-v1}
"""


def test_a_batch_whose_records_did_not_arrive_in_time_is_refused_by_the_checks_of_who_served(world: World) -> None:
    """A request held open (12 s) outlasts the records' bound (5 s) twice: the metrics mark before the batch and the
    batch's own settle each wait 5 s. The gateway's proxy is still behind when the batch is tied to its records, so
    the batch is noted, the checks that read who served it fail naming the pods that were behind, the checks of what
    clients got still run, and the next batch, sent after the held request ended, is checked as usual."""
    deploy.apply_manifests(world, ["ch5/catalog-gateway.yaml"])
    deploy.apply_yaml(world, HELD)
    port = world.backend.mesh.gateway_port  # type: ignore[attr-defined]
    held: list[int] = []

    def hold() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", "/items", headers={"Host": "catalog.istioinaction.io", "x-hold": "yes"})
            held.append(conn.getresponse().status)
        finally:
            conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        time.sleep(0.5)  # the held request has begun at the gateway
        sending.through_gateway(world, 10, "/items", "catalog.istioinaction.io")
        assert [n for n in world.notes if "not every record of who served them had arrived" in n], world.notes
        assert any(line.startswith("pod istio-ingressgateway-") for line in world.unsettled), world.unsettled
        with pytest.raises(ExpectationFailed, match=r"a record of who served each of the last 10 requests"):
            responses.every_response_from(world, "catalog", "v1")
        with pytest.raises(MeshlibError, match=r"records had not all arrived when the traffic started.*"
                                               r"pod istio-ingressgateway-"):
            metrics.received(world, "catalog", 10)
        responses.every_status(world, 200)
    finally:
        holder.join()
    assert held == [200]
    sending.through_gateway(world, 10, "/items", "catalog.istioinaction.io")
    assert world.unsettled == ()
    responses.every_response_from(world, "catalog", "v1")
    metrics.received(world, "catalog", 10)
    logs.logs_show_none(world, "catalog", "v2", "GET")
