"""A Service port without a protocol name, on the running mesh: webapp's Envoy sends catalog traffic through the
catalog VIP's own listener and route config `<fqdn>:80`, and the VirtualService still decides (issue 10)."""

from __future__ import annotations

import json

from meshclient import CATALOG_V2, CH5, NS, SERVICES, WEBAPP_HOST, send_many

CATALOG = SERVICES / "catalog" / "kubernetes" / "catalog.yaml"
UNNAMED = CATALOG.read_text().replace("  - name: http\n    port: 80\n", "  - port: 80\n")
CATALOG_HOST = f"catalog.{NS}.svc.cluster.local"


def test_traffic_to_an_unnamed_port_takes_the_sniffed_listener_and_its_routes(start_mesh):
    assert UNNAMED != CATALOG.read_text(), "the catalog Service no longer names its port http: update the test"
    mesh = start_mesh([SERVICES / "webapp" / "kubernetes" / "webapp.yaml", CH5 / "webapp-catalog-gw-vs.yaml",
                       CH5 / "catalog-dest-rule.yaml", CATALOG_V2])
    mesh.apply(text=UNNAMED)
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
    assert [r.status for r in replies] == [200] * 20
    assert any("imageUrl" in r.text for r in replies), "catalog v2 never answered: both versions should"

    svc = mesh.store.find_service(CATALOG_HOST)
    assert svc is not None
    dump = json.dumps(mesh.config_dump("webapp"))
    assert f'"name": "{svc.address}_80"' in dump, "webapp's Envoy runs no listener on the catalog VIP"
    assert f'"route_config_name": "{CATALOG_HOST}:80"' in dump
    # Envoy's own count of requests on each outbound HTTP connection manager (stat prefix outbound_<ip>_<port>;
    # the dots of the prefix become separators in Prometheus names)
    counts = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in mesh.metrics_text("webapp").splitlines()
              if "_downstream_rq_total{envoy_http_conn_manager_prefix=\"outbound_" in line}
    vip_tail = "_".join(svc.address.split(".")[1:])
    assert counts.get(f"envoy_http_{vip_tail}_80_downstream_rq_total") == 20, counts
    assert counts.get("envoy_http_0_0_0_80_downstream_rq_total", 0) == 0, counts

    mesh.apply([CH5 / "catalog-vs-v1-mesh.yaml"])
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
    assert [r.status for r in replies] == [200] * 20
    assert not any("imageUrl" in r.text for r in replies), "the VirtualService pinning v1 did not apply"
