"""Analyzers (istioctl analyze / Kiali style) and the command line over the walkthrough's manifests.

Each analyzer row is a small set of manifests with one mistake; the finding must carry the code, the level
and the `file:line` of the offending field. The walkthrough's consistent sets must be clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    CATALOG_DEFAULT,
    CATALOG_GATEWAY,
    CH5,
    CH6,
    CH6_BASE,
    NS,
    SERVICES,
    V1,
    V2,
    WORLD,
    ch6_sets,
    ch6_store,
    y,
)

from meshlib.cli import main
from meshlib.config.analyze import CODES, ERROR, INFO, WARNING, Finding, analyze
from meshlib.config.store import ConfigStore
from meshlib.xds import build_proxy_config

DR_FILE = CH5 / "catalog-dest-rule.yaml"
GW_FILE = CH5 / "catalog-gateway.yaml"
WEBAPP = f"outbound|80||webapp.{NS}.svc.cluster.local"


def findings_for(*docs: str, dr: bool = True) -> list[Finding]:
    """Analyze the catalog world plus `docs`; each doc is applied from its own file `docN.yaml`."""
    store = ConfigStore()
    store.apply_text(WORLD, NS, filename="world.yaml")
    if dr:
        store.apply_text(DR_FILE.read_text(), NS, filename="dr.yaml")
    for i, doc in enumerate(docs):
        store.apply_text(y(doc), NS, filename=f"doc{i}.yaml")
    return analyze(store)


def vs(http: str, *, hosts: str = "[catalog]", gateways: str = "[mesh]", name: str = "catalog") -> str:
    """A VirtualService whose first rule starts on line 9 of its file."""
    body = "\n".join("  " + line for line in y(http).splitlines())
    return (f"apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n"
            f"  hosts: {hosts}\n  gateways: {gateways}\n  http:\n{body}\n")


ANALYZER_CASES = [
    pytest.param([vs("""
        - route:
          - destination:
              host: ratings
        """)], "IST0101", ERROR, "doc0.yaml:11", 'Referenced host not found: "ratings.istioinaction.svc.cluster.local"',
        id="IST0101-host"),
    pytest.param([vs("""
        - route:
          - destination:
              host: catalog
              subset: version-v3
        """)], "IST0101", ERROR, "doc0.yaml:12", "catalog.istioinaction.svc.cluster.local+version-v3",
        id="IST0101-subset"),
    pytest.param([vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
          mirror:
            host: catalog
            subset: canary
        """)], "IST0101", ERROR, "doc0.yaml:13", "+canary", id="IST0101-mirror-subset"),
    pytest.param([vs("- route:\n  - destination: {host: catalog}\n", hosts="[catalog.istioinaction.io]",
                     gateways="\n  - catalog-gateway")], "IST0101", ERROR, "doc0.yaml:8",
                 'Referenced gateway not found: "istioinaction/catalog-gateway"', id="IST0101-gateway"),
    pytest.param(["apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: ratings}\n"
                  "spec:\n  host: ratings\n"], "IST0101", WARNING, "doc0.yaml:5",
                 'Referenced host not found: "ratings.istioinaction.svc.cluster.local"', id="IST0101-dr-host"),
    pytest.param([vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n", name="first"),
                  vs("- route:\n  - destination: {host: catalog, subset: version-v2}\n", name="second",
                     hosts="\n  - catalog")], "IST0109", ERROR, "doc1.yaml:7",
                 "istioinaction/first (doc0.yaml:1), istioinaction/second", id="IST0109"),
    pytest.param([vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
        - match: [{headers: {x-istio-cohort: {exact: internal}}}]
          route:
          - destination: {host: catalog, subset: version-v2}
        """)], "IST0130", ERROR, "doc0.yaml:11", "rule #1 not used", id="IST0130"),
    pytest.param([vs("""
        - match: [{uri: {prefix: /api}}]
          route:
          - destination: {host: catalog, subset: version-v2}
        - match:
          - uri: {prefix: /items}
          - uri: {prefix: /api}
          route:
          - destination: {host: catalog, subset: version-v1}
        """)], "IST0131", WARNING, "doc0.yaml:14", "rule #1 match #1 is not used", id="IST0131"),
    pytest.param([CATALOG_GATEWAY, vs("- route:\n  - destination: {host: catalog}\n",
                                      hosts="\n  - catalog.istioinaction.io\n  - shop.example.com",
                                      gateways="[catalog-gateway]")],
                 "IST0132", WARNING, "doc1.yaml:8", "host [shop.example.com]", id="IST0132"),
    pytest.param(["apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: catalog}\n"
                  "spec:\n  host: catalog\n  subsets:\n  - name: version-v1\n    labels: {version: v1}\n"
                  "  - name: version-v3\n    labels: {version: v3}\n"], "KIA0203", WARNING, "doc0.yaml:9",
                 'subset "version-v3" selects no pods (version=v3)', id="KIA0203"),
    pytest.param([vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: 9
          - destination: {host: catalog, subset: version-v2}
            weight: 1
        """)], "MSH0001", INFO, "doc0.yaml:9", "weights sum to 10", id="MSH0001"),
    pytest.param([vs("""
        - route:
          - destination: {host: catalog, subset: version-v2}
            weight: 0
        """)], "MSH0002", WARNING, "doc0.yaml:11", "still receives 100%", id="MSH0002"),
    pytest.param(["apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\n"
                  "spec: {maxReplicas: 3}\n"], "MSH0003", INFO, "doc0.yaml:1",
                 "not modelled: HorizontalPodAutoscaler/web (stored and listed", id="MSH0003"),
    pytest.param(["apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: lua}\nspec:\n"
                  "  configPatches:\n  - applyTo: HTTP_FILTER\n    patch: {operation: INSERT_BEFORE, value: {}}\n"],
                 "MSH0004", WARNING, "doc0.yaml:6", "applyTo HTTP_FILTER is not supported", id="MSH0004"),
    pytest.param(["apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: tcp}\nspec:\n"
                  "  selector: {istio: ingressgateway}\n  servers:\n"
                  "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n"],
                 "MSH0005", WARNING, "doc0.yaml:7", "a TCP server is not modelled", id="MSH0005"),
    pytest.param(["apiVersion: v1\nkind: Secret\nmetadata: {name: web, namespace: istio-system}\n"
                  "stringData: {password: x}\n",
                  "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: web}\nspec:\n"
                  "  selector: {istio: ingressgateway}\n  servers:\n"
                  "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['web.io']\n"
                  "    tls:\n      mode: SIMPLE\n      credentialName: web\n"],
                 "IST0161", ERROR, "doc1.yaml:11", "The credential referenced by the Gateway web in namespace "
                 "istio-system is invalid", id="IST0161"),
    pytest.param(["apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: web}\nspec:\n"
                  "  selector: {istio: ingressgateway}\n  servers:\n"
                  "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['web.io']\n"
                  "    tls:\n      mode: SIMPLE\n      credentialName: web\n"],
                 "IST0101", ERROR, "doc0.yaml:11", 'Referenced credentialName not found: "web"',
                 id="IST0101-credentialName"),
]


@pytest.mark.parametrize(("docs", "code", "level", "where", "words"), ANALYZER_CASES)
def test_each_analyzer_fires_with_file_and_line(docs: list[str], code: str, level: str, where: str,
                                                words: str) -> None:
    found = [f for f in findings_for(*docs) if f.code == code]
    assert len(found) == 1, findings_for(*docs)
    f = found[0]
    assert (f.level, str(f.source)) == (level, where)
    assert words in f.message
    assert str(f).startswith(f"{level} [{code}] (")
    assert where in str(f) and "\n" not in str(f)


def test_every_code_is_covered_by_a_case() -> None:
    assert {c.values[1] for c in ANALYZER_CASES} == set(CODES)


def test_subset_referenced_without_any_destination_rule() -> None:
    found = findings_for(vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n"), dr=False)
    assert [(f.code, str(f.source)) for f in found] == [("IST0101", "doc0.yaml:10")]
    assert "503 NC" in found[0].message


def test_catch_all_limited_by_a_selector_does_not_shadow_later_rules() -> None:
    assert findings_for(vs("""
        - match: [{sourceLabels: {app: webapp}}]
          route:
          - destination: {host: catalog, subset: version-v2}
        - route:
          - destination: {host: catalog, subset: version-v1}
        """)) == []


def test_findings_are_sorted_errors_first() -> None:
    found = findings_for(vs("""
        - route:
          - destination: {host: ratings}
            weight: 0
        """), vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n", name="other"))
    assert [f.level for f in found] == sorted((f.level for f in found), key=[ERROR, WARNING, INFO].index)
    assert [f.code for f in found] == ["IST0101", "IST0109", "MSH0002"]


# --- the walkthrough's consistent sets are clean -------------------------------------------------------------------
CH5_VIRTUAL_SERVICES = sorted(p.name for p in CH5.glob("*.yaml") if "kind: VirtualService" in p.read_text())


def walkthrough_files(name: str) -> list[Path]:
    files = [SERVICES, DR_FILE, CH5 / name]
    if "gateways:\n  - catalog-gateway" in (CH5 / name).read_text():
        files.insert(2, GW_FILE)
    return files


def test_the_walkthrough_has_the_expected_virtual_services() -> None:
    assert CH5_VIRTUAL_SERVICES == [
        "catalog-vs-v1-mesh.yaml", "catalog-vs-v1.yaml", "catalog-vs-v2-10-90-mesh.yaml",
        "catalog-vs-v2-50-50-mesh.yaml", "catalog-vs-v2-mirror.yaml", "catalog-vs-v2-request-mesh.yaml",
        "catalog-vs-v2-request.yaml", "catalog-vs.yaml", "webapp-catalog-gw-vs.yaml"]


@pytest.mark.parametrize("name", CH5_VIRTUAL_SERVICES)
def test_walkthrough_virtual_service_with_services_and_destination_rule_is_clean(name: str) -> None:
    assert analyze(ConfigStore.from_paths(walkthrough_files(name), NS)) == []


@pytest.mark.parametrize("extra", ["forum-serviceentry.yaml", "mesh-registry-only.yaml", "webapp-access-log.yaml",
                                   "flagger/catalog-release.yaml", "catalog-gateway.yaml"])
def test_other_walkthrough_manifests_are_clean(extra: str) -> None:
    assert analyze(ConfigStore.from_paths([SERVICES, DR_FILE, CH5 / extra], NS)) == []


@pytest.mark.parametrize("names", ch6_sets(), ids="+".join)
def test_chapter_6_manifests_over_their_world_are_clean(names: tuple[str, ...]) -> None:
    """Every ch6 file applied over simple-web, simple-backend and their gateway, as the book applies it (`kubectl
    apply`: a Deployment or VirtualService of the same name is replaced), and the files that act together: no
    finding in any Istio profile, and every proxy translates with each EnvoyFilter patch applied."""
    for version in ("1.13", "1.17", "1.22", "1.24", "1.28"):
        store = ch6_store(*names, version=version)
        assert [str(f) for f in analyze(store)] == [], version
        assert all(not build_proxy_config(store, w).not_applied for w in store.workloads()), version


def test_two_mesh_virtual_services_from_the_walkthrough_conflict() -> None:
    store = ConfigStore.from_paths([SERVICES, DR_FILE, CH5 / "catalog-vs-v1-mesh.yaml"], NS)
    store.apply_text((CH5 / "catalog-vs-v2-mirror.yaml").read_text().replace("name: catalog", "name: catalog-mirror"),
                     NS, filename="mirror.yaml")
    assert [(f.code, str(f.source)) for f in analyze(store)] == [("IST0109", "mirror.yaml:7")]


def test_walkthrough_without_the_destination_rule_reports_the_missing_subsets() -> None:
    store = ConfigStore.from_paths([SERVICES, CH5 / "catalog-vs-v2-10-90-mesh.yaml"], NS)
    assert [(f.code, f.source.line) for f in analyze(store)] == [("IST0101", 14), ("IST0101", 18)]


# --- the command line -------------------------------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_analyze_missing_subset_exits_1_with_code_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    vs_file = CH5 / "catalog-vs-v2-10-90-mesh.yaml"
    code, out, _ = run_cli(capsys, "analyze", "-f", SERVICES, "-f", vs_file, "-n", NS)
    assert code == 1
    assert "Error [IST0101]" in out and f"{vs_file}:14" in out and f"{vs_file}:18" in out
    assert "version-v1" in out and "version-v2" in out


def test_cli_analyze_warnings_only_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n    weight: 0\n"))
    code, out, _ = run_cli(capsys, "analyze", "-f", SERVICES, "-f", DR_FILE, "-f", f, "-n", NS)
    assert code == 0 and "Warning [MSH0002]" in out and f"{f}:11" in out


def test_cli_analyze_clean_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "analyze", "-f", SERVICES, "-f", DR_FILE, "-f", CH5 / "catalog-vs-v2-mirror.yaml",
                             "-n", NS)
    assert (code, err) == (0, "")
    assert "No validation issues found" in out


def test_cli_analyze_of_chapter_6_hedging_with_its_world_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    files = [CH6 / name for name in (*CH6_BASE, "simple-backend-vs-retry-per-try-timeout.yaml",
                                     "simple-backend-envoyfilter-hedging.yaml")]
    code, out, err = run_cli(capsys, "analyze", "-n", NS, *[a for f in files for a in ("-f", f)])
    assert (code, err) == (0, "") and "No validation issues found" in out, out


@pytest.mark.parametrize("command", [["analyze"], ["proxy-config", "routes", "deploy/webapp.istioinaction"],
                                     ["explain", "--from", "deploy/webapp.istioinaction", "--host", "catalog"]])
def test_cli_malformed_yaml_exits_2_with_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       command: list[str]) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: catalog\n"
                 "spec:\n  hosts: [catalog\n  http: []\n")
    code, out, err = run_cli(capsys, *command, "-f", SERVICES, "-f", f, "-n", NS)
    assert code == 2
    assert err.startswith(f"error: {f}:")
    line = int(err.split(f"{f}:")[1].split(":")[0])
    assert line in (6, 7)
    assert "Traceback" not in err and "Traceback" not in out and err.count("\n") == 1


def test_cli_invalid_manifest_exits_2_with_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(vs("- route:\n  - destination:\n      host: catalog\n      subsets: version-v1\n"))
    code, _, err = run_cli(capsys, "analyze", "-f", f, "-n", NS)
    assert code == 2
    assert err.startswith(f"error: {f}:12: spec.http[0].route[0].destination.subsets: unknown field 'subsets'")


def test_cli_missing_path_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "analyze", "-f", tmp_path / "nope")
    assert code == 2 and "no such file or folder" in err and "Traceback" not in err


# --- explain: every VirtualService of the walkthrough, from the gateway and from webapp -----------------------------
GW_HOST = "catalog.istioinaction.io"
NR = {"status": 404, "flags": "NR", "details": "route_not_found"}
EXPECTED_V1 = {"cluster": V1}
EXPECTED_DEFAULT = {"cluster": CATALOG_DEFAULT}

# (file, from webapp without header, with header, from gateway without header, with header)
EXPLAIN_TABLE = {
    "catalog-vs-v1-mesh.yaml": (EXPECTED_V1, EXPECTED_V1, NR, NR),
    "catalog-vs-v1.yaml": (EXPECTED_DEFAULT, EXPECTED_DEFAULT, EXPECTED_V1, EXPECTED_V1),
    "catalog-vs-v2-10-90-mesh.yaml": ({"weighted": [(V1, 90), (V2, 10)]},) * 2 + (NR, NR),
    "catalog-vs-v2-50-50-mesh.yaml": ({"weighted": [(V1, 50), (V2, 50)]},) * 2 + (NR, NR),
    "catalog-vs-v2-mirror.yaml": ({"cluster": V1, "mirrors": [(V2, 100.0, True)]},) * 2 + (NR, NR),
    "catalog-vs-v2-request-mesh.yaml": (EXPECTED_V1, {"cluster": V2}, NR, NR),
    "catalog-vs-v2-request.yaml": (EXPECTED_DEFAULT, EXPECTED_DEFAULT, EXPECTED_V1, {"cluster": V2}),
    "catalog-vs.yaml": (EXPECTED_DEFAULT, EXPECTED_DEFAULT, EXPECTED_DEFAULT, EXPECTED_DEFAULT),
    "webapp-catalog-gw-vs.yaml": (EXPECTED_DEFAULT, EXPECTED_DEFAULT, {"cluster": WEBAPP}, {"cluster": WEBAPP}),
}
EXPLAIN_CASES = [
    pytest.param(name, source, header, expected[i * 2 + header], id=f"{name}-{source.split('/')[1].split('.')[0]}"
                                                                   f"{'-cohort' if header else ''}")
    for name, expected in EXPLAIN_TABLE.items()
    for i, source in enumerate(["deploy/webapp.istioinaction", "deploy/istio-ingressgateway.istio-system"])
    for header in (0, 1)
]


def test_explain_table_covers_every_walkthrough_virtual_service() -> None:
    assert sorted(EXPLAIN_TABLE) == CH5_VIRTUAL_SERVICES


@pytest.mark.parametrize(("name", "source", "header", "expected"), EXPLAIN_CASES)
def test_cli_explain_names_the_cluster(capsys: pytest.CaptureFixture[str], name: str, source: str, header: int,
                                      expected: dict) -> None:
    host = ("catalog.istioinaction" if "webapp" in source
            else "webapp.istioinaction.io" if name.startswith("webapp") else GW_HOST)
    files = [x for f in walkthrough_files(name) for x in ("-f", f)]
    if "ingressgateway" in source and GW_FILE not in walkthrough_files(name):
        files += ["-f", GW_FILE]  # the catalog gateway exists, but this VirtualService does not bind to it
    argv = ["explain", *files, "-n", NS, "--from", source, "--host", host, "--path", "/items", "-o", "json"]
    if header:
        argv += ["-H", "x-istio-cohort: internal"]
    code, out, err = run_cli(capsys, *argv)
    assert (code, err) == (0, "")
    got = json.loads(out)
    if "status" in expected:
        assert got["outcome"] == expected and got["cluster"] is None
        return
    assert got["outcome"] == {"forwarded": True}
    assert got["cluster"] == expected.get("cluster")
    assert [(w["name"], w["weight"]) for w in got["weightedClusters"]] == expected.get("weighted", [])
    assert [(mi["cluster"], mi["percent"], mi["shadowSuffix"]) for mi in got["mirrors"]] == expected.get("mirrors", [])
    if expected is not EXPECTED_DEFAULT:
        vs_file = CH5 / name
        assert got["source"].startswith(f"{vs_file}:")


def test_cli_explain_text_names_rule_line_weights_and_mirror(capsys: pytest.CaptureFixture[str]) -> None:
    mirror = CH5 / "catalog-vs-v2-mirror.yaml"
    code, out, _ = run_cli(capsys, "explain", "-f", SERVICES, "-f", DR_FILE, "-f", mirror, "-n", NS,
                           "--from", "deploy/webapp.istioinaction", "--host", "catalog.istioinaction", "--path",
                           "/items")
    assert code == 0
    assert f"of VirtualService istioinaction/catalog ({mirror}:11)" in out
    assert f"destination  {V1}" in out
    assert f"mirror       100% of requests copied to {V2} (Host gets -shadow" in out
    assert "outcome      forwarded upstream" in out
    weighted = CH5 / "catalog-vs-v2-10-90-mesh.yaml"
    code, out, _ = run_cli(capsys, "explain", "-f", SERVICES, "-f", DR_FILE, "-f", weighted, "-n", NS,
                           "--from", "deploy/webapp.istioinaction", "--host", "catalog.istioinaction")
    assert f"weight        90.0%  {V1}" in out and f"weight        10.0%  {V2}" in out


def test_cli_explain_without_destination_rule_shows_503_nc(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "explain", "-f", SERVICES, "-f", GW_FILE, "-f", CH5 / "catalog-vs-v1.yaml",
                           "-n", NS, "--from", "deploy/istio-ingressgateway.istio-system", "--host", GW_HOST)
    assert code == 0
    assert "outcome      503 NC cluster_not_found" in out


def test_cli_explain_unknown_proxy_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "explain", "-f", SERVICES, "-n", NS, "--from", "deploy/nope.istioinaction",
                           "--host", "catalog")
    assert code == 2 and "no proxy 'deploy/nope.istioinaction'" in err and "deploy/webapp.istioinaction" in err
