"""Loading and validating manifests: every malformed input is one readable line with `file:line` and the problem.

Each table row is a whole manifest as a user would write it, the line the error must point at, and words the
message must contain. Lines are counted in the YAML as written below (line 1 = first line after `y(...)`).
"""

from __future__ import annotations

import pytest
from helpers import CATALOG_DR, CH5, NS, WORLD, proxy, world, y

from meshlib.config.hosts import fqdn
from meshlib.config.loader import load_documents, parse_documents
from meshlib.config.store import ConfigStore, MeshSettings
from meshlib.errors import ConfigError, MeshlibError
from meshlib.profile import profile_for

FILE = "bad.yaml"


def error_of(text: str, version: str | None = None, namespace: str = "default") -> ConfigError:
    store = ConfigStore(profile_for(version))
    with pytest.raises(ConfigError) as info:
        store.apply_text(y(text), namespace, filename=FILE)
    return info.value


def assert_one_line(err: ConfigError, line: int, *fragments: str) -> None:
    text = str(err)
    assert "\n" not in text, f"error spans several lines: {text!r}"
    assert text.startswith(f"{FILE}:{line}: "), text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


VS_HEAD = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: catalog
spec:
  hosts: [catalog]
  http:
"""  # the first rule starts on line 8


def vs_rule(rule: str) -> str:
    return VS_HEAD + "\n".join("  " + line for line in y(rule).splitlines()) + "\n"


# --- document-level problems -----------------------------------------------------------------------------------
DOCUMENT_CASES = [
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n spec: {}\n", 5, ["invalid YAML"],
                 id="yaml-bad-indentation"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata: {name: [x\n", 3, ["invalid YAML"], id="yaml-unclosed-flow"),
    pytest.param("kind: Service\napiVersion: v1\nmetadata:\n\tname: x\n", 4, ["invalid YAML", "\\t"], id="yaml-tab"),
    pytest.param("- apiVersion: v1\n- kind: Service\n", 1, ["must be a mapping"], id="not-a-mapping"),
    pytest.param("just a string\n", 1, ["must be a mapping"], id="scalar-document"),
    pytest.param("apiVersion: v1\nmetadata: {name: x}\n", 1, ["missing 'kind'"], id="missing-kind"),
    pytest.param("apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n", 2,
                 ["unknown kind 'Servce' in apiVersion 'v1'", "did you mean Service?"], id="unknown-kind"),
    pytest.param("apiVersion: networking.istio.io/v1beta1\nkind: VirtualSevice\nmetadata: {name: x}\n", 2,
                 ["unknown kind 'VirtualSevice'", "did you mean VirtualService?"], id="unknown-istio-kind"),
    pytest.param("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\n", 1,
                 ["apiVersion 'networking.istio.io/v2'", "networking.istio.io/v1beta1"], id="wrong-apiVersion"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", None, [], id="ok-service-control"),
    pytest.param("apiVersion: apps/v1\nkind: Service\nmetadata: {name: x}\n", 1, ["apiVersion 'apps/v1'", "v1"],
                 id="service-in-apps-v1"),
    pytest.param("apiVersion: v1\nkind: Service\nspec: {}\n", 1, ["metadata"], id="missing-metadata"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  namespace: a\n", 3, ["missing required field 'name'"],
                 id="missing-metadata-name"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  name: Catalog_V1\n", 4,
                 ["'Catalog_V1' is not a valid name"], id="invalid-name"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  name: 42\n", 4, ["expected a string"],
                 id="name-not-a-string"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels:\n    version: 1\n", 6,
                 ["metadata.labels.version", "expected a string"], id="label-value-int"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespce: a\n", 5,
                 ["unknown field 'namespce'"], id="metadata-typo"),
    pytest.param("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspecs: {}\n", 4,
                 ["unknown top-level field 'specs'"], id="top-level-typo"),
]


@pytest.mark.parametrize(("text", "line", "fragments"), DOCUMENT_CASES)
def test_document_errors_name_file_line_and_problem(text: str, line: int | None, fragments: list[str]) -> None:
    if line is None:
        ConfigStore().apply_text(text, filename=FILE)
        return
    assert_one_line(error_of(text), line, *fragments)


# --- unknown fields, kind by kind: the typo is reported on its own line -----------------------------------------
UNKNOWN_FIELD_CASES = [
    pytest.param(vs_rule("""
        - route:
          - destination:
              host: catalog
              subsets: version-v1
        """), 11, "spec.http[0].route[0].destination", "'subsets'", id="VirtualService-destination-subsets"),
    pytest.param(vs_rule("""
        - match:
          - uri: {prefix: /}
            header: {x: {exact: y}}
          route:
          - destination: {host: catalog}
        """), 10, "spec.http[0].match[0]", "'header'", id="VirtualService-match-header"),
    pytest.param("""
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata: {name: catalog}
        spec:
          host: catalog
          subsets:
          - name: v1
            label: {version: v1}
        """, 8, "spec.subsets[0]", "'label'", id="DestinationRule-subset-label"),
    pytest.param("""
        apiVersion: networking.istio.io/v1beta1
        kind: Gateway
        metadata: {name: gw}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            host: ["*"]
        """, 8, "spec.servers[0]", "'host'", id="Gateway-server-host"),
    pytest.param("""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata: {name: jsonplaceholder}
        spec:
          hosts: [jsonplaceholder.typicode.com]
          resolutions: DNS
        """, 6, "spec", "'resolutions'", id="ServiceEntry-resolutions"),
    pytest.param("""
        apiVersion: networking.istio.io/v1beta1
        kind: Sidecar
        metadata: {name: default}
        spec:
          egres:
          - hosts: ["./*"]
        """, 5, "spec", "'egres'", id="Sidecar-egres"),
    pytest.param("""
        apiVersion: telemetry.istio.io/v1alpha1
        kind: Telemetry
        metadata: {name: webapp}
        spec:
          selector: {matchLabels: {app: webapp}}
          accesLogging:
          - providers: [{name: envoy}]
        """, 6, "spec", "'accesLogging'", id="Telemetry-accesLogging"),
    pytest.param("""
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata: {name: catalog-release}
        spec:
          targetRef: {apiVersion: apps/v1, kind: Deployment, name: catalog}
          service: {name: catalog, port: 80}
          analysis:
            interval: 45s
            stepweight: 10
        """, 9, "spec.analysis", "'stepweight'", id="Canary-stepweight"),
    pytest.param("""
        apiVersion: v1
        kind: Service
        metadata: {name: catalog}
        spec:
          selectors: {app: catalog}
          ports:
          - port: 80
        """, 5, "spec", "'selectors'", id="Service-selectors"),
    pytest.param("""
        apiVersion: v1
        kind: Service
        metadata: {name: catalog}
        spec:
          ports:
          - port: 80
            targetport: 3000
        """, 7, "spec.ports[0]", "'targetport'", id="Service-port-targetport"),
    pytest.param("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: catalog}
        spec:
          replica: 2
          template:
            spec:
              containers: [{name: catalog, image: istioinaction/catalog}]
        """, 5, "spec", "'replica'", id="Deployment-replica"),
]


@pytest.mark.parametrize(("text", "line", "where", "field"), UNKNOWN_FIELD_CASES)
def test_unknown_field_points_at_its_line(text: str, line: int, where: str, field: str) -> None:
    err = error_of(text)
    assert_one_line(err, line, "unknown field", field, where)
    assert "known fields here:" in str(err)


def test_unknown_field_hint_lists_the_right_fields() -> None:
    err = error_of(UNKNOWN_FIELD_CASES[0].values[0])
    assert "host, port, subset" in str(err)


# --- values: types, ranges, regexes, durations, rule shape --------------------------------------------------------
def _one(dest: str = "- destination: {host: catalog}", extra: str = "") -> str:
    return vs_rule(f"- route:\n  {dest}\n{extra}")


VALUE_CASES = [
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: -10
          - destination: {host: catalog, subset: version-v2}
            weight: 110
        """), 10, ["weight", "must not be negative, got -10"], id="weight-negative"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: "90"
          - destination: {host: catalog, subset: version-v2}
            weight: 10
        """), 10, ["spec.http[0].route[0].weight", "got a string '90'"], id="weight-string"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, port: {number: http}}
        """), 9, ["port.number", "expected a port number, got a string 'http'"], id="port-number-string"),
    pytest.param(vs_rule("""
        - match:
          - uri:
              regex: "/items/(\\\\d+"
          route:
          - destination: {host: catalog}
        """), 10, ["spec.http[0].match[0].uri.regex", "invalid RE2", "missing )"], id="uri-regex-unclosed"),
    pytest.param(vs_rule("""
        - match:
          - headers:
              x-user:
                regex: "(?=admin)"
          route:
          - destination: {host: catalog}
        """), 11, ["headers.x-user.regex", "invalid RE2"], id="header-regex-lookahead"),
    pytest.param(vs_rule("""
        - match:
          - queryParams:
              id:
                regex: "[0-9"
          route:
          - destination: {host: catalog}
        """), 11, ["queryParams.id.regex", "invalid RE2"], id="query-regex-class"),
    pytest.param(vs_rule("""
        - match:
          - uri: {exact: /a, prefix: /b}
          route:
          - destination: {host: catalog}
        """), 9, ["set only one of exact, prefix, regex"], id="stringmatch-two-kinds"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          timeout: 10
        """), 10, ["timeout", "expected a duration like 10s, got a number 10"], id="duration-number"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          timeout: 10 seconds
        """), 10, ["timeout", "is not a duration"], id="duration-words"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          retries:
            attempts: 3
            perTryTimeout: 2sec
        """), 12, ["perTryTimeout", "is not a duration"], id="duration-perTryTimeout"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, subset: version-v1}
          mirror: {host: catalog, subset: version-v2}
          mirrorPercentage:
            value: 150
        """), 12, ["mirrorPercentage.value", "between 0 and 100, got 150"], id="mirrorPercentage-over-100"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          mirror: {host: catalog}
          mirrorPercent: 101
        """), 11, ["mirrorPercent", "between 0 and 100"], id="mirrorPercent-over-100"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          fault:
            abort:
              httpStatus: 500
              percentage: {value: 100.5}
        """), 13, ["fault.abort.percentage.value", "between 0 and 100"], id="fault-abort-percentage-over-100"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          fault:
            delay:
              fixedDelay: 1s
              percentage:
                value: 200
        """), 14, ["fault.delay.percentage.value", "between 0 and 100"], id="fault-delay-percentage-over-100"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          fault:
            delay:
              fixedDelay: soon
        """), 12, ["fixedDelay", "is not a duration"], id="fault-delay-bad-duration"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          redirect: {uri: /v2}
        """), 8, ["spec.http[0]", "only one of", "route and redirect"], id="route-and-redirect"),
    pytest.param(vs_rule("""
        - match:
          - uri: {prefix: /}
        """), 8, ["spec.http[0]", "needs one of route, redirect, directResponse"], id="no-action"),
    pytest.param(vs_rule("""
        - redirect: {uri: /v2}
          rewrite: {uri: /v3}
        """), 8, ["redirect cannot be combined with fault or rewrite"], id="redirect-and-rewrite"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog}
          mirror: {host: catalog, subset: version-v2}
          mirrors:
          - destination: {host: catalog, subset: version-v2}
        """), 8, ["set mirror or mirrors, not both"], id="mirror-and-mirrors"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: 0
          - destination: {host: catalog, subset: version-v2}
            weight: 0
        """), 8, ["spec.http[0].route", "at least one needs a weight above 0"], id="all-weights-zero"),
    pytest.param(vs_rule("""
        - route:
          - destination: {host: catalog, subset: version-v1}
          - destination: {host: catalog, subset: version-v2}
        """), 8, ["at least one needs a weight above 0"], id="weights-omitted-several-destinations"),
    pytest.param(vs_rule("""
        - route:
          - destination: {subset: version-v1}
        """), 9, ["destination", "missing required field 'host'"], id="destination-without-host"),
    pytest.param(vs_rule("""
        - match:
          - uri: {regex: ""}
          route:
          - destination: {host: catalog}
        """), 9, ["uri.regex", "regex must not be empty"], id="regex-empty"),
    pytest.param(vs_rule("""
        - rewrite: {authority: a.example.com}
          headers:
            request:
              set: {host: b.example.com}
          route:
          - destination: {host: catalog}
        """), 8, ["authority is set more than once", "'a.example.com', 'b.example.com'"], id="authority-twice"),
    pytest.param(vs_rule("""
        - redirect: {uri: /v2, port: 8080, derivePort: FROM_REQUEST_PORT}
        """), 8, ["spec.http[0].redirect", "set only one of port, derivePort"], id="redirect-port-and-derivePort"),
    pytest.param(vs_rule("""
        - match: [{uri: {prefix: /reviews}}]
          delegate:
            name: reviews
        """), 9, ["spec.http[0].delegate", "not modelled"], id="delegate-unsupported"),
    pytest.param("""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata: {name: se}
        spec:
          hosts: [api.example.com]
          resolution: DNS_ONLY
        """, 6, ["spec.resolution", "'DNS_ONLY' is not one of"], id="serviceentry-enum"),
    pytest.param("""
        apiVersion: v1
        kind: Service
        metadata: {name: catalog}
        spec:
          ports:
          - port: "80"
        """, 6, ["spec.ports[0].port", "expected a port number"], id="service-port-string"),
    pytest.param("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: catalog}
        spec:
          template:
            spec:
              containers:
              - name: catalog
                image: istioinaction/catalog
                env:
                - {name: SHOW_IMAGE, value: true}
        """, 11, ["env[0].value", "quote numbers and booleans"], id="deployment-env-bool"),
]


@pytest.mark.parametrize(("text", "line", "fragments"), VALUE_CASES)
def test_value_errors(text: str, line: int, fragments: list[str]) -> None:
    assert_one_line(error_of(text), line, *fragments)


def test_bad_regex_is_reported_without_noise_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    error_of(VALUE_CASES[3].values[0])
    assert capfd.readouterr().err == ""


# --- weights that do not sum to 100: a version knob ---------------------------------------------------------------
RELATIVE_WEIGHTS = vs_rule("""
    - route:
      - destination: {host: catalog, subset: version-v1}
        weight: 9
      - destination: {host: catalog, subset: version-v2}
        weight: 1
    """)


@pytest.mark.parametrize(("version", "rejected"), [("1.13", True), ("1.14", True), ("1.15", False),
                                                   ("1.17", False), ("1.24", False)])
def test_weights_not_summing_to_100_rejected_only_up_to_1_14(version: str, rejected: bool) -> None:
    if rejected:
        assert_one_line(error_of(RELATIVE_WEIGHTS, version), 8, "total destination weight 10 != 100",
                        f"Istio {version}")
    else:
        store = ConfigStore(profile_for(version))
        store.apply_text(y(RELATIVE_WEIGHTS), filename=FILE)
        assert len(store) == 1


def test_weights_summing_to_100_accepted_by_1_14() -> None:
    store = ConfigStore(profile_for("1.14"))
    store.apply_text(y(RELATIVE_WEIGHTS).replace("weight: 9", "weight: 99"), filename=FILE)
    assert len(store) == 1


# --- files and folders ----------------------------------------------------------------------------------------------
def test_missing_file_names_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_documents([missing])
    assert str(missing) in str(info.value) and "no such file or folder" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_folder_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        ConfigStore.from_paths([tmp_path / "manifests" / "ch9"])


def test_empty_folder_is_an_error(tmp_path) -> None:
    (tmp_path / "README.md").write_text("not yaml")
    with pytest.raises(ConfigError) as info:
        load_documents([tmp_path])
    assert str(tmp_path) in str(info.value) and "no .yaml or .yml files" in str(info.value)


def test_folder_is_read_recursively_in_sorted_order(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\n")
    (tmp_path / "c.txt").write_text("ignored: true\n")
    docs = load_documents([tmp_path])
    assert [(d.data["metadata"]["name"], d.source.file.endswith(n)) for d, n in zip(docs, ["a.yaml", "2.yml"],
                                                                                    strict=True)] == \
        [("one", True), ("two", True)]


def test_error_in_a_file_names_that_file_and_line(tmp_path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n"
                 "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 80\n    nmae: http\n")
    with pytest.raises(ConfigError) as info:
        ConfigStore.from_paths([f])
    assert str(info.value).startswith(f"{f}:11: spec.ports[0].nmae: unknown field 'nmae'")


# --- namespaces and host names --------------------------------------------------------------------------------------
def test_namespace_defaults_to_the_one_given_and_explicit_namespace_wins() -> None:
    store = ConfigStore()
    res = store.apply_text(y("""
        apiVersion: v1
        kind: Service
        metadata: {name: catalog}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: catalog, namespace: other}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: istioinaction}
        """), "istioinaction")
    assert [(r.kind, r.namespace, r.name) for r in res] == [
        ("Service", "istioinaction", "catalog"), ("Service", "other", "catalog"), ("Namespace", "", "istioinaction")]
    assert {s.host for s in store.services()} >= {"catalog.istioinaction.svc.cluster.local",
                                                  "catalog.other.svc.cluster.local"}


@pytest.mark.parametrize(("host", "namespace", "expected"), [
    ("catalog", "istioinaction", "catalog.istioinaction.svc.cluster.local"),
    ("catalog", "other", "catalog.other.svc.cluster.local"),
    ("Catalog", "istioinaction", "catalog.istioinaction.svc.cluster.local"),
    ("catalog.istioinaction", "other", "catalog.istioinaction"),  # dotted: literal, NOT expanded
    ("catalog.istioinaction.svc.cluster.local", "other", "catalog.istioinaction.svc.cluster.local"),
    ("catalog.istioinaction.io", "istioinaction", "catalog.istioinaction.io"),
    ("*", "istioinaction", "*"),
    ("*.istioinaction.io", "istioinaction", "*.istioinaction.io"),
    ("10.0.0.1", "istioinaction", "10.0.0.1"),
    ("::1", "istioinaction", "::1"),
])
def test_short_host_expansion(host: str, namespace: str, expected: str) -> None:
    assert fqdn(host, namespace) == expected


def test_short_hosts_expand_in_the_virtual_service_namespace_not_the_services() -> None:
    """A VS in `other` naming `catalog` points at catalog.other…, so its route never reaches istioinaction."""
    store = world()
    store.apply_text(y("""
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: catalog, namespace: other}
        spec:
          hosts: [catalog.istioinaction.svc.cluster.local]
          http:
          - route:
            - destination: {host: catalog, subset: version-v1}
        """), NS)
    routes = [vh for vh in proxy(store).route_configs["80"]["virtualHosts"]
              if vh["name"] == "catalog.istioinaction.svc.cluster.local:80"][0]["routes"]
    assert routes[0]["route"]["cluster"] == "outbound|80|version-v1|catalog.other.svc.cluster.local"


# --- the store: replace, atomicity ----------------------------------------------------------------------------------
def test_reapplying_the_same_key_replaces() -> None:
    store = world()
    before = len(store)
    store.apply_text(CATALOG_DR.replace("version-v2", "canary"), NS)
    assert len(store) == before
    dr = store.get("DestinationRule", NS, "catalog")
    assert [s["name"] for s in dr.spec["subsets"]] == ["version-v1", "canary"]


def test_reapplying_keeps_the_original_position() -> None:
    """Kubernetes keeps creationTimestamp on update, and Istio orders VirtualServices by it."""
    store = ConfigStore()
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n"
    for name in ("a", "b", "c"):
        store.apply_text(text.format(name))
    store.apply_text(text.format("a"))
    assert [r.name for r in store] == ["a", "b", "c"]


def test_a_bad_document_leaves_the_store_unchanged() -> None:
    store = world()
    snapshot = [(r.key, id(r)) for r in store]
    bad = y("""
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata: {name: catalog}
        spec:
          host: catalog
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: new-service}
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: broken}
        spec:
          hosts: [catalog]
          htp: []
        """)
    with pytest.raises(ConfigError, match=r"^bad.yaml:16: spec.htp: unknown field 'htp'"):
        store.apply_text(bad, NS, filename=FILE)
    assert [(r.key, id(r)) for r in store] == snapshot


def test_yaml_error_in_a_later_document_leaves_the_store_unchanged() -> None:
    store = ConfigStore()
    with pytest.raises(ConfigError, match=r"^bad.yaml:5: invalid YAML"):
        store.apply_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [oops\n", filename=FILE)
    assert len(store) == 0


def test_parse_documents_skips_empty_documents_and_records_lines() -> None:
    docs = parse_documents("---\n# only a comment\n---\n" + WORLD, "w.yaml")
    assert len(docs) == 5
    assert docs[0].source.line == 4
    assert docs[0].where(("spec", "ports", 0, "targetPort")).line == 14


# --- mesh settings --------------------------------------------------------------------------------------------------
def test_mesh_defaults_are_allow_any() -> None:
    assert world().mesh_settings() == MeshSettings("ALLOW_ANY", "", "TEXT", None)


def test_mesh_settings_from_istio_operator() -> None:
    store = ConfigStore.from_paths([CH5 / "mesh-registry-only.yaml"])
    assert store.mesh_settings().outbound_policy == "REGISTRY_ONLY"


ISTIO_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    outboundTrafficPolicy:
      mode: {mode}
"""


def test_mesh_settings_from_the_istio_configmap() -> None:
    store = ConfigStore()
    store.apply_text(ISTIO_CONFIGMAP.replace("{mode}", "REGISTRY_ONLY"))
    settings = store.mesh_settings()
    assert (settings.outbound_policy, settings.access_log_file) == ("REGISTRY_ONLY", "/dev/stdout")


def test_configmap_in_another_namespace_is_not_mesh_config() -> None:
    store = ConfigStore()
    store.apply_text(ISTIO_CONFIGMAP.replace("{mode}", "REGISTRY_ONLY").replace("istio-system", "default"))
    assert store.mesh_settings().outbound_policy == "ALLOW_ANY"


def test_configmap_overrides_istio_operator() -> None:
    store = ConfigStore()
    store.apply_text(ISTIO_CONFIGMAP.replace("{mode}", "ALLOW_ANY"))
    store.apply_text(y("""
        apiVersion: install.istio.io/v1alpha1
        kind: IstioOperator
        metadata: {name: control-plane, namespace: istio-system}
        spec:
          meshConfig:
            outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """))
    assert store.mesh_settings().outbound_policy == "ALLOW_ANY"


@pytest.mark.parametrize(("mode", "line", "fragment"), [
    ("[REGISTRY_ONLY", 10, "not valid YAML"),  # the error is inside the string, on the file's line 10
    ("REGISTRY-ONLY", 10, "'REGISTRY-ONLY' is not one of REGISTRY_ONLY, ALLOW_ANY"),
])
def test_bad_mesh_string_is_rejected_on_apply_with_its_line(mode: str, line: int, fragment: str) -> None:
    store = ConfigStore()
    with pytest.raises(ConfigError) as info:
        store.apply_text(ISTIO_CONFIGMAP.replace("{mode}", mode), filename=FILE)
    assert_one_line(info.value, line, fragment)
    assert len(store) == 0


def test_istio_operator_mesh_config_is_validated() -> None:
    err = error_of("""
        apiVersion: install.istio.io/v1alpha1
        kind: IstioOperator
        metadata: {name: cp, namespace: istio-system}
        spec:
          meshConfig:
            outboundTrafficPolicy: {mode: DENY}
        """)
    assert_one_line(err, 6, "spec.meshConfig.outboundTrafficPolicy.mode", "'DENY' is not one of")


def test_unknown_istio_version_is_a_clear_error() -> None:
    with pytest.raises(MeshlibError, match="Istio 1.9 is not modelled"):
        profile_for("1.9")
    with pytest.raises(MeshlibError, match="unknown Istio version 'latest'"):
        profile_for("latest")
