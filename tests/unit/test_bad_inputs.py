"""A catalogue of bad inputs, each run through the real command line: exit status 2, exactly one `error:` line
naming the file and line where there is one, what is wrong and what to do; never a traceback.

MANIFESTS are whole files as a user would write them (`H(...)` is a four-line header, so a body starts on line
5); each row gives the line the error must name and words it must contain. Every manifest is run from a file
and again from standard input (`-f -`, named `<stdin>`). CLI_CASES are argument lists with the words their error
must contain; a few need a mesh state file, which each test points at its own temporary path.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from meshlib.cli import main

NET = "networking.istio.io/v1beta1"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


def H(api: str, kind: str, name: str = "x") -> str:
    """apiVersion, kind, metadata, name: the body that follows starts on line 5."""
    return f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n"


def body(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def vs(text: str) -> str:
    return H(NET, "VirtualService") + "spec:\n  hosts: [catalog]\n  http:\n" + textwrap.indent(body(text), "  ")


def dr(text: str) -> str:
    return H(NET, "DestinationRule") + "spec:\n  host: catalog\n" + textwrap.indent(body(text), "  ")


def deploy(container: str, replicas: str = "1") -> str:
    return (H("apps/v1", "Deployment") + f"spec:\n  replicas: {replicas}\n  template:\n    spec:\n      containers:\n"
            + textwrap.indent(body(container), "      "))


def mesh_config(text: str) -> str:
    return (H("install.istio.io/v1alpha1", "IstioOperator") + "spec:\n  meshConfig:\n"
            + textwrap.indent(body(text), "    "))


def canary(text: str) -> str:
    return (H("flagger.app/v1beta1", "Canary") + "spec:\n  targetRef: {name: catalog}\n  service: {port: 80}\n"
            + textwrap.indent(body(text), "  "))


C = pytest.param
# (manifest, line, words the error contains, extra CLI arguments)
MANIFESTS = [
    # --- YAML itself -------------------------------------------------------------------------------------------
    C("apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n", 4, ["found character '\\t'", "spaces, not tabs"],
      id="yaml-tab"),
    C("apiVersion: v1\nkind: Service\nmetadata: {name: [x\n", 3, ["invalid YAML"], id="yaml-unclosed-flow"),
    C("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n spec: {}\n", 5, ["invalid YAML"], id="yaml-indent"),
    C("apiVersion: v1\nkind: Service\nkind: Service\nmetadata: {name: x}\n", 3,
      ["duplicate key 'kind', first on line 2", "keep one"], id="duplicate-key"),
    C(H("v1", "Service") + "  labels: {app: a, app: b}\n", 5, ["duplicate key 'app'"], id="duplicate-key-flow"),
    C(vs("- route:\n  - destination: {host: catalog}\n    weight: 1\n    weight: 2\n"), 11,
      ["duplicate key 'weight', first on line 10"], id="duplicate-key-deep"),
    C(BOMB, 1, ["aliases expand this document to more than 250,000 values", "alias"], id="alias-bomb"),
    C("a: &x [*x]\n", 1, ["an alias refers to a value that contains it"], id="recursive-alias"),
    C("a: *nope\n", 1, ["invalid YAML", "undefined alias"], id="undefined-alias"),
    C("[" * 5000 + "]" * 5000 + "\n", 1, ["nesting deeper than 100 levels"], id="deep-flow-nesting"),
    C("".join(" " * i + "a:\n" for i in range(150)) + " " * 150 + "a: 1\n", 102, ["nesting deeper than 100"],
      id="deep-block-nesting"),
    C(H("apps/v1", "Deployment") + "spec:\n  replicas: !!int three\n", 6, ["!!int 'three' is not an integer"],
      id="tag-int-bad"),
    C(H("v1", "Service") + "spec:\n  ports:\n  - port: !!float x\n", 7, ["!!float 'x' is not a number"],
      id="tag-float-bad"),
    C(H("v1", "Service") + "spec:\n  publishNotReadyAddresses: !!bool maybe\n", 6,
      ["!!bool 'maybe' is not true or false"], id="tag-bool-bad"),
    C(H("v1", "ConfigMap") + "data:\n  key: !!binary aGVsbG8=\n", 6, ["YAML tag !!binary is not supported"],
      id="tag-binary"),
    C(H("v1", "ConfigMap") + "data:\n  when: !!timestamp 2026-02-31\n", 6, ["!!timestamp is not supported"],
      id="tag-timestamp"),
    C(H("v1", "ConfigMap") + "data: !!set {a, b}\n", 5, ["!!set is not supported"], id="tag-set"),
    C("!!python/object:os.system\nx: 1\n", 1, ["unknown YAML tag !!python/object:os.system"], id="tag-python"),
    C(H("v1", "ConfigMap") + "data:\n  a: !secret x\n", 6, ["unknown YAML tag !secret"], id="tag-custom"),
    C(H("apps/v1", "Deployment") + "spec:\n  replicas: 2026-02-31\n", 6,
      ["expected a number of replicas, got a string '2026-02-31'"], id="impossible-date-as-number"),
    C(H("v1", "Service") + "  labels: {app: \x07bell}\n", 5, ["control character U+0007 at column 17"],
      id="control-bell"),
    C(H("v1", "Service") + "  labels: {app: a\x00b}\n", 5, ["control character U+0000"], id="control-nul"),
    C(H("v1", "Service") + "  labels: {app: \x1b[31m}\n", 5, ["control character U+001B"], id="control-escape"),
    C(H("v1", "Service") + "  labels: {app: a\x7fb}\n", 5, ["control character U+007F"], id="control-delete"),
    C("---\na: 1\n" * 5001, 10002, ["more than 5,000 YAML documents", "smaller batches"], id="too-many-documents"),
    C("? [a, b]\n: c\n", 1, ["mapping key must be a plain name"], id="complex-key"),
    C(b"apiVersion: v1\nkind: Service\nmetadata: {name: caf\xe9}\n", 3, ["not UTF-8 text (byte 0xe9)", "UTF-8"],
      id="latin-1-bytes"),
    # --- documents ---------------------------------------------------------------------------------------------
    C("- apiVersion: v1\n- kind: Service\n", 1, ["must be a mapping"], id="list-document"),
    C("just words\n", 1, ["must be a mapping"], id="scalar-document"),
    C("apiVersion: v1\nmetadata: {name: x}\n", 1, ["missing 'kind'"], id="missing-kind"),
    C("apiVersion: v1\nkind: [Service]\nmetadata: {name: x}\n", 2, ["'kind' must be a name"], id="kind-list"),
    C("kind: Service\nmetadata: {name: x}\n", 1, ["Service has no apiVersion"], id="missing-apiVersion"),
    C("apiVersion: 1\nkind: Service\nmetadata: {name: x}\n", 1, ["'apiVersion' must be a string"],
      id="apiVersion-number"),
    C(H("v1", "Servce"), 2, ["unknown kind 'Servce' in apiVersion 'v1'", "did you mean Service?"],
      id="kind-typo-core"),
    C(H("apps/v1", "Deploymnet"), 2, ["unknown kind 'Deploymnet'", "did you mean Deployment?"], id="kind-typo-apps"),
    C(H(NET, "VirtualSevice"), 2, ["did you mean VirtualService?"], id="kind-typo-istio"),
    C(H("networking.istio.io/v2", "VirtualService"), 1, ["VirtualService does not exist in apiVersion"],
      id="istio-version-unknown"),
    C(H("apps/v1beta1", "Deployment"), 1, ["Deployment does not exist in apiVersion 'apps/v1beta1'", "apps/v1"],
      id="deployment-old-api"),
    C(H("apps/v1", "Service"), 1, ["Service does not exist in apiVersion 'apps/v1'"], id="service-in-apps"),
    C("apiVersion: v1\nkind: Service\nspec: {}\n", 1, ["Service has no 'metadata'"], id="missing-metadata"),
    C("apiVersion: v1\nkind: Service\nmetadata: [x]\n", 3, ["metadata: expected a mapping"], id="metadata-list"),
    C("apiVersion: v1\nkind: Service\nmetadata:\n  namespace: a\n", 3, ["missing required field 'name'"],
      id="missing-name"),
    C(H("v1", "Service", "Catalog_V1"), 4, ["'Catalog_V1' is not a valid name", "lower-case"], id="name-invalid"),
    C(H("v1", "Service", "42"), 4, ["expected a string, got a number 42"], id="name-number"),
    C(H("v1", "Service") + "  namespace: Bad_NS\n", 5, ["namespace 'Bad_NS' is not a valid name"],
      id="namespace-invalid"),
    C("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nrules: []\n", 1, ["missing required field 'name'"],
      id="not-modelled-without-name"),
    C("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: web\n", 3,
      ["metadata: expected a mapping"], id="not-modelled-metadata-string"),
    C(H("v1", "Service") + "specs: {}\n", 5, ["unknown top-level field 'specs'", "did you mean 'spec'?"],
      id="top-level-typo"),
    C(H("v1", "Service") + "  labels: {version: 1}\n", 5, ["metadata.labels.version: expected a string"],
      id="label-number"),
    C(H("v1", "Service") + "---\n" + H("v1", "Service") + "spec: {type: NodePort}\n", 6,
      ["Service/x.istioinaction is defined twice, differently (first at", ":1)"], id="duplicate-resource"),
    # --- VirtualService ----------------------------------------------------------------------------------------
    C(H(NET, "VirtualService") + "spec:\n  hosts: catalog\n", 6, ["spec.hosts: expected a list"], id="vs-hosts-string"),
    C(H(NET, "VirtualService") + "spec:\n  http: {route: []}\n", 6, ["spec.http: expected a list"],
      id="vs-http-mapping"),
    C(vs("- route:\n  - destination: {host: catalog}\n    weight: -10\n"), 10,
      ["weight: must not be negative, got -10"],
      id="vs-weight-negative"),
    C(vs("- route:\n  - destination: {host: catalog}\n    weight: '50'\n"), 10, ["expected a weight"],
      id="vs-weight-string"),
    C(vs("- route:\n  - destination: {host: catalog}\n    weight: 4294967296\n"), 10, ["2,147,483,647"],
      id="vs-weight-huge"),
    C(vs("- route:\n  - weight: 100\n"), 9, ["missing required field 'destination'"], id="vs-no-destination"),
    C(vs("- route:\n  - destination: {subset: v1}\n"), 9, ["missing required field 'host'"], id="vs-no-host"),
    C(vs("- route:\n  - destination: {host: catalog, port: {number: 0}}\n"), 9,
      ["port.number: must be between 1 and 65,535"], id="vs-port-zero"),
    C(vs("- route:\n  - destination: {host: catalog, port: {number: 70000}}\n"), 9, ["got 70,000"],
      id="vs-port-huge"),
    C(vs("- route:\n  - destination: {host: catalog, port: {number: http}}\n"), 9,
      ["expected a port number, got a string 'http'"], id="vs-port-name"),
    C(vs("- route:\n  - destination: {host: catalog}\n  timeout: 10\n"), 10, ["timeout: expected a duration"],
      id="vs-timeout-number"),
    C(vs("- route:\n  - destination: {host: catalog}\n  timeout: -1s\n"), 10, ["is not a duration"],
      id="vs-timeout-negative"),
    C(vs("- route:\n  - destination: {host: catalog}\n  timeout: 99999999999999h\n"), 10,
      ["longer than the largest duration Envoy takes"], id="vs-timeout-huge"),
    C(vs("- route:\n  - destination: {host: catalog}\n  timeout: " + "9" * 400 + "s\n"), 10,
      ["longer than the largest duration"], id="vs-timeout-infinite"),
    C(vs("- route:\n  - destination: {host: catalog}\n  retries: {attempts: '3'}\n"), 10,
      ["retries.attempts: expected a number of attempts"], id="vs-retries-string"),
    C(vs("- route:\n  - destination: {host: catalog}\n  retries: {attempts: -1}\n"), 10,
      ["attempts: must not be negative"], id="vs-retries-negative"),
    C(vs("- route:\n  - destination: {host: catalog}\n  retries: {attempts: 2, perTryTimeout: 5}\n"), 10,
      ["perTryTimeout: expected a duration"], id="vs-per-try-number"),
    C(vs("- match:\n  - uri: {regex: 'a['}\n  route:\n  - destination: {host: catalog}\n"), 9,
      ["invalid RE2 regular expression"], id="vs-regex-invalid"),
    C(vs("- match:\n  - uri: {regex: ''}\n  route:\n  - destination: {host: catalog}\n"), 9,
      ["regex must not be empty"], id="vs-regex-empty"),
    C(vs("- match:\n  - uri: {exact: /a, prefix: /b}\n  route:\n  - destination: {host: catalog}\n"), 9,
      ["set only one of exact, prefix, regex"], id="vs-uri-two-kinds"),
    C(vs("- match:\n  - port: 0\n  route:\n  - destination: {host: catalog}\n"), 9, ["port: must be between 1"],
      id="vs-match-port-zero"),
    C(vs("- match:\n  - sourceLabels: {app: 1}\n  route:\n  - destination: {host: catalog}\n"), 9,
      ["sourceLabels.app: expected a string"], id="vs-source-labels-number"),
    C(vs("- route:\n  - destination: {host: catalog}\n  mirror: {host: catalog}\n  mirrorPercentage: {value: 150}\n"),
      11, ["percentage must be between 0 and 100, got 150"], id="vs-mirror-percentage"),
    C(vs("- route:\n  - destination: {host: catalog}\n  mirror: {host: catalog}\n  mirrorPercent: '50'\n"), 11,
      ["expected a percentage"], id="vs-mirror-percent-string"),
    C(vs("- route:\n  - destination: {host: catalog}\n  fault: {abort: {httpStatus: 700}}\n"), 10,
      ["HTTP status must be 200-599"], id="vs-fault-status"),
    C(vs("- route:\n  - destination: {host: catalog}\n  fault:\n"
         "    delay: {fixedDelay: 1s, percentage: {value: 101}}\n"),
      11, ["percentage must be between 0 and 100"], id="vs-fault-percentage"),
    C(vs("- route:\n  - destination: {host: catalog}\n  redirect: {uri: /new}\n"), 8,
      ["only one of route, redirect, directResponse, delegate"], id="vs-route-and-redirect"),
    C(vs("- match:\n  - uri: {prefix: /}\n"), 8, ["a rule needs one of route, redirect"], id="vs-no-action"),
    C(vs("- delegate: {name: other}\n"), 8, ["delegate VirtualServices are not modelled"], id="vs-delegate"),
    C(vs("- directResponse: {status: 700}\n"), 8, ["directResponse.status: must be between 200 and 599"],
      id="vs-direct-response-status"),
    C(vs("- directResponse: {status: '200'}\n"), 8, ["expected an HTTP status"], id="vs-direct-response-string"),
    C(vs("- route:\n  - destination: {host: catalog}\n  headers: {request: {set: {x-a: 1}}}\n"), 10,
      ["headers.request.set.x-a: expected a string"], id="vs-header-value-number"),
    C(vs("- route:\n  - destination: {host: catalog}\n  retries: [3]\n"), 10, ["retries: expected a mapping"],
      id="vs-retries-list"),
    C(H(NET, "VirtualService") + "spec:\n  gateways: mesh\n", 6, ["spec.gateways: expected a list"],
      id="vs-gateways-string"),
    C(vs("- route:\n  - destination: {host: catalog, subset: v1}\n    weight: 9\n"
         "  - destination: {host: catalog, subset: v2}\n    weight: 1\n"), 8,
      ["total destination weight 10 != 100", "Istio 1.13"], ["--istio-version", "1.13"], id="vs-weights-1.13"),
    # --- DestinationRule ---------------------------------------------------------------------------------------
    C(H(NET, "DestinationRule") + "spec:\n  subsets: []\n", 5, ["missing required field 'host'"], id="dr-no-host"),
    C(dr("trafficPolicy:\n  loadBalancer: {simple: [ROUND_ROBIN]}\n"), 8,
      ["loadBalancer.simple: expected one of", "got a list"], id="dr-simple-list"),
    C(dr("trafficPolicy:\n  loadBalancer: {simple: FASTEST}\n"), 8, ["'FASTEST' is not one of"],
      id="dr-simple-unknown"),
    C(dr("trafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeaderName: x, useSourceIp: true}\n"), 9,
      ["set only one of httpHeaderName"], id="dr-hash-two"),
    C(dr("trafficPolicy:\n  loadBalancer:\n    consistentHash: {ringHash: {minimumRingSize: 100000000}}\n"), 9,
      ["Envoy's largest ring"], id="dr-ring-huge"),
    C(dr("trafficPolicy:\n  outlierDetection: {maxEjectionPercent: 150}\n"), 8, ["must be between 0 and 100"],
      id="dr-ejection-percent"),
    C(dr("trafficPolicy:\n  connectionPool: {tcp: {maxConnections: -1}}\n"), 8,
      ["maxConnections: must not be negative"],
      id="dr-max-connections-negative"),
    C(dr("trafficPolicy:\n  connectionPool: {tcp: {maxConnections: 1099511627776}}\n"), 8, ["Istio's int32"],
      id="dr-max-connections-huge"),
    C(dr("trafficPolicy:\n  outlierDetection: {interval: 5}\n"), 8, ["interval: expected a duration"],
      id="dr-interval-number"),
    C(dr("subsets:\n- labels: {version: v1}\n"), 8, ["missing required field 'name'"], id="dr-subset-no-name"),
    C(dr("subsets:\n- name: v1\n  labels: {version: 1}\n"), 9, ["labels.version: expected a string"],
      id="dr-subset-label-number"),
    C(dr("trafficPolicy:\n  portLevelSettings:\n  - port: {number: 0}\n"), 9, ["must be between 1 and 65,535"],
      id="dr-port-level-zero"),
    C(dr("trafficPolicy: [ROUND_ROBIN]\n"), 7, ["trafficPolicy: expected a mapping"], id="dr-policy-list"),
    # --- Gateway, ServiceEntry, Sidecar, Telemetry -------------------------------------------------------------------
    C(H(NET, "Gateway") + "spec:\n  selector: {istio: ingressgateway}\n", 5, ["missing required field 'servers'"],
      id="gw-no-servers"),
    C(H(NET, "Gateway") + "spec:\n  servers:\n  - port: {number: 0}\n    hosts: ['*']\n", 7,
      ["port.number: must be between 1 and 65,535"], id="gw-port-zero"),
    C(H(NET, "Gateway") + "spec:\n  servers:\n  - port: {number: 80}\n", 7, ["missing required field 'hosts'"],
      id="gw-no-hosts"),
    C(H(NET, "Gateway") + "spec:\n  selector: [ingressgateway]\n  servers: []\n", 6,
      ["selector: expected a mapping"], id="gw-selector-list"),
    C(H(NET, "ServiceEntry") + "spec:\n  resolution: DNS\n", 5, ["missing required field 'hosts'"],
      id="se-no-hosts"),
    C(H(NET, "ServiceEntry") + "spec:\n  hosts: [a.com]\n  resolution: MAGIC\n", 7, ["'MAGIC' is not one of"],
      id="se-resolution"),
    C(H(NET, "ServiceEntry") + "spec:\n  hosts: [a.com]\n  ports:\n  - number: '443'\n", 8,
      ["expected a port number"], id="se-port-string"),
    C(H(NET, "ServiceEntry") + "spec:\n  hosts: [a.com]\n  endpoints:\n  - address: 1.2.3.4\n    ports: {http: 0}\n",
      9, ["ports.http: must be between 1 and 65,535"], id="se-endpoint-port"),
    C(H(NET, "Sidecar") + "spec:\n  egress:\n  - port: {number: 0}\n    hosts: ['./*']\n", 7,
      ["must be between 1 and 65,535"], id="sidecar-port-zero"),
    C(H(NET, "Sidecar") + "spec:\n  outboundTrafficPolicy: {mode: DENY}\n", 6, ["'DENY' is not one of"],
      id="sidecar-mode"),
    C(H("telemetry.istio.io/v1", "Telemetry") + "spec:\n  accessLogging:\n  - providers: envoy\n", 7,
      ["providers: expected a list"], id="telemetry-providers-string"),
    # --- Service, Deployment, ConfigMap --------------------------------------------------------------------------
    C(H("v1", "Service") + "spec:\n  clusterIP: 10\n", 6, ["clusterIP: expected an IP address or None, got a number"],
      id="svc-cluster-ip-number"),
    C(H("v1", "Service") + "spec:\n  clusterIP: ten.0.0.1\n", 6, ["'ten.0.0.1' is not an IP address"],
      id="svc-cluster-ip-text"),
    C(H("v1", "Service") + "spec:\n  ports:\n  - port: 0\n", 7, ["must be between 1 and 65,535"], id="svc-port-zero"),
    C(H("v1", "Service") + "spec:\n  ports:\n  - port: 80\n    targetPort: 70000\n", 8,
      ["port must be between 1 and 65,535"], id="svc-target-port-huge"),
    C(H("v1", "Service") + "spec:\n  ports:\n  - port: 80\n    targetPort: Bad_Name\n", 8,
      ["port name 'Bad_Name' is not a valid name"], id="svc-target-port-name"),
    C(H("v1", "Service") + "spec:\n  selector: {app: 1}\n", 6, ["selector.app: expected a string"],
      id="svc-selector-number"),
    C(H("v1", "Service") + "spec:\n  type: Internal\n", 6, ["'Internal' is not one of"], id="svc-type"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n", "100000000"), 6,
      ["replicas: must be between 0 and 50", "at most 50 pods per Deployment", "got 100,000,000"],
      id="deploy-replicas-huge"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n", "-1"), 6, ["replicas: must not be negative"],
      id="deploy-replicas-negative"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n", "'3'"), 6,
      ["expected a number of replicas, got a string '3'"], id="deploy-replicas-string"),
    C(H("apps/v1", "Deployment") + "spec:\n  replicas: 1\n", 5, ["missing required field 'template'"],
      id="deploy-no-template"),
    C(deploy("- name: app\n"), 10, ["missing required field 'image'"], id="deploy-no-image"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  env:\n  - name: A\n    value: 1\n"), 14,
      ["value: expected a string (quote numbers and booleans)"], id="deploy-env-number"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  env:\n  - name: A\n"
             "    valueFrom: {fieldRef: metadata.name}\n"), 14, ["fieldRef: expected a mapping, got a string"],
      id="deploy-fieldref-string"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  env:\n  - name: A\n"
             "    valueFrom: {fieldRef: {}}\n"),
      14, ["missing required field 'fieldPath'"], id="deploy-fieldref-empty"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  env:\n  - name: A\n    value: a\n"
             "    valueFrom: {fieldRef: {fieldPath: metadata.name}}\n"), 13, ["set only one of value, valueFrom"],
      id="deploy-env-both"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  ports:\n  - containerPort: 0\n"), 13,
      ["containerPort: must be between 1 and 65,535"], id="deploy-container-port-zero"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  ports:\n  - containerPort: http\n"), 13,
      ["expected a port number"], id="deploy-container-port-name"),
    C(deploy("- name: app\n  image: istioinaction/catalog:latest\n  ports:\n  - containerPort: 80\n"
             "    protocol: HTTP\n"),
      14, ["'HTTP' is not one of TCP, UDP, SCTP"], id="deploy-container-protocol"),
    C(H("v1", "ConfigMap") + "data:\n  retries: 3\n", 6, ["data.retries: expected a string (quote numbers"],
      id="configmap-number"),
    C("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n"
      "    outboundTrafficPolicy: {mode: DENY}\n", 6, ["'DENY' is not one of"], id="configmap-mesh-mode"),
    C("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n"
      "    a: [b\n", 6, ["data.mesh: not valid YAML"], id="configmap-mesh-yaml"),
    C("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n"
      "    defaultHttpRetryPolicy: {attempts: x}\n", 6, ["attempts: expected a number of attempts"],
      id="configmap-mesh-retry"),
    # --- mesh config and Flagger ------------------------------------------------------------------------------------
    C(mesh_config("defaultHttpRetryPolicy: [3]\n"), 7, ["defaultHttpRetryPolicy: expected a mapping"],
      id="mesh-retry-list"),
    C(mesh_config("defaultHttpRetryPolicy: {attempts: -1}\n"), 7, ["attempts: must not be negative"],
      id="mesh-retry-negative"),
    C(mesh_config("defaultHttpRetryPolicy: {attempts: 2, perTryTimeout: soon}\n"), 7, ["'soon' is not a duration"],
      id="mesh-retry-per-try"),
    C(mesh_config("defaultHttpRetryPolicy: {retryOn: [5xx]}\n"), 7, ["retryOn: expected a string"],
      id="mesh-retry-on-list"),
    C(mesh_config("accessLogEncoding: XML\n"), 7, ["'XML' is not one of TEXT, JSON"], id="mesh-log-encoding"),
    C(H("flagger.app/v1beta1", "Canary") + "spec:\n  service: {port: 80}\n", 5, ["missing required field 'targetRef'"],
      id="canary-no-target"),
    C(canary("ingressRef: istio-ingressgateway\n"), 8, ["ingressRef: expected a mapping"],
      id="canary-ingress-ref-string"),
    C(canary("analysis:\n  webhooks:\n  - name: load\n"), 10, ["missing required field 'url'"],
      id="canary-webhook-no-url"),
    C(canary("analysis:\n  maxWeight: 150\n"), 9, ["must be between 0 and 100"], id="canary-max-weight"),
    C(canary("analysis:\n  interval: 1\n"), 9, ["interval: expected a duration"], id="canary-interval-number"),
    C(canary("analysis:\n  metrics:\n  - name: request-success-rate\n    threshold: high\n"), 11,
      ["threshold: expected a number"], id="canary-threshold-string"),
    C(canary("analysis:\n  stepWeights: [-1]\n"), 9, ["stepWeights[0]: must not be negative"],
      id="canary-step-weights"),
]


def _write(tmp_path: Path, manifest: str | bytes) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(manifest, bytes):
        path.write_bytes(manifest)
    else:
        path.write_text(manifest, encoding="utf-8")
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}, expected 2; stderr: {err!r}"
    assert "Traceback" not in out + err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one error line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _check(line: str, where: str | None, words: list[str]) -> None:
    if where is not None:
        assert line.startswith(f"error: {where}: "), f"expected {where!r} at the start: {line!r}"
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"


def _stdin(monkeypatch: pytest.MonkeyPatch, data: str | bytes) -> None:
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))


@pytest.mark.parametrize(("manifest", "line", "words", "extra"),
                         [C(*p.values, *([] if len(p.values) == 4 else [[]]), id=p.id) for p in MANIFESTS])
def test_bad_manifest_file_is_one_line_naming_file_and_line(manifest: str | bytes, line: int, words: list[str],
                                                             extra: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, manifest)
    code = main(["analyze", "-f", str(path), "-n", "istioinaction", *extra])
    _check(_one_error_line(capsys, code), f"{path}:{line}", words)


@pytest.mark.parametrize(("manifest", "line", "words", "extra"),
                         [C(*p.values, *([] if len(p.values) == 4 else [[]]), id=p.id) for p in MANIFESTS])
def test_bad_manifest_on_stdin_names_stdin_and_line(manifest: str | bytes, line: int, words: list[str],
                                                    extra: list[str], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, manifest)
    code = main(["analyze", "-f", "-", "-n", "istioinaction", *extra])
    _check(_one_error_line(capsys, code), f"<stdin>:{line}", words)


def test_the_alias_bomb_is_refused_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """345 bytes standing for 387 million values: refused after counting, without expanding anything."""
    import time

    path = _write(tmp_path, BOMB)
    assert len(BOMB) < 400
    start = time.perf_counter()
    code = main(["analyze", "-f", str(path)])
    elapsed = time.perf_counter() - start
    _one_error_line(capsys, code)
    assert elapsed < 0.5, f"the alias bomb took {elapsed:.2f}s to refuse"


# --- command lines ------------------------------------------------------------------------------------------------
GOOD = "apiVersion: v1\nkind: Namespace\nmetadata: {name: istioinaction}\n"
# (argv, words, state file content or None for no state file); `{good}` is a valid manifest, `{dir}` an empty folder
CLI_CASES = [
    C(["up", "--port", "99999", "-f", "{good}"], ["argument --port", "port 99999 is out of range", "1-65535"], None,
      id="up-port-huge"),
    C(["up", "--port", "-1", "-f", "{good}"], ["port -1 is out of range"], None, id="up-port-negative"),
    C(["up", "--port", "http", "-f", "{good}"], ["'http' is not a port number"], None, id="up-port-word"),
    C(["up", "--time-scale", "0", "-f", "{good}"], ["time scale 0 is out of range", "above 0"], None,
      id="up-time-scale-zero"),
    C(["up", "--time-scale", "-1", "-f", "{good}"], ["out of range"], None, id="up-time-scale-negative"),
    C(["up", "--time-scale", "nan", "-f", "{good}"], ["out of range"], None, id="up-time-scale-nan"),
    C(["up", "--time-scale", "inf", "-f", "{good}"], ["out of range"], None, id="up-time-scale-inf"),
    C(["up", "--time-scale", "fast", "-f", "{good}"], ["'fast' is not a number"], None, id="up-time-scale-word"),
    C(["up", "-f", "-", "--detach"], ["-f - cannot be used with --detach"], None, id="up-stdin-detach"),
    C(["up", "-f", "{bad}"], ["bad.yaml:5: ", "replicas: must be between 0 and 50"], None, id="up-bad-manifest"),
    C(["up", "-f", "{good}", "-n", "Bad_NS"], ["'Bad_NS' is not a namespace name"], None, id="up-namespace"),
    C(["analyze"], ["the following arguments are required: -f/--filename"], None, id="analyze-no-file"),
    C(["analyze", "-f", "{missing}"], ["no such file or folder"], None, id="analyze-missing-file"),
    C(["analyze", "-f", "{dir}"], ["folder has no .yaml or .yml files"], None, id="analyze-empty-folder"),
    C(["analyze", "-f", "{good}", "-o", "xml"], ["argument -o/--output: invalid choice: 'xml'"], None,
      id="analyze-output"),
    C(["analyze", "-f", "{good}", "--istio-version", "2.0"], ["Istio 2.0 is not modelled"], None,
      id="analyze-istio-version"),
    C(["analyze", "-f", "{good}", "--istio-version", "latest"], ["unknown Istio version 'latest'"], None,
      id="analyze-istio-version-word"),
    C(["analyze", "-f", "-", "-f", "-"], ["-f - is given more than once"], None, id="analyze-stdin-twice"),
    C(["bogus"], ["invalid choice: 'bogus'"], None, id="unknown-command"),
    C([], ["the following arguments are required: command"], None, id="no-command"),
    C(["proxy-config", "bogus", "deploy/webapp"], ["invalid choice: 'bogus'"], None, id="proxy-config-what"),
    C(["proxy-config", "routes", "deploy/nope.istioinaction", "-f", "{good}"], ["no proxy 'deploy/nope.istioinaction'"],
      None, id="proxy-config-unknown-proxy"),
    C(["explain", "--from", "deploy/istio-ingressgateway", "--host", "a", "-f", "{good}", "-H", "no-colon"],
      ["header 'no-colon' is not 'NAME: VALUE'"], None, id="explain-header"),
    C(["explain", "--from", "deploy/nope", "--host", "a", "-f", "{good}"], ["no proxy 'deploy/nope'"], None,
      id="explain-unknown-proxy"),
    C(["explain", "--host", "a", "-f", "{good}"], ["the following arguments are required: --from"], None,
      id="explain-no-from"),
    C(["logs", "deploy/webapp", "--tail", "-1"], ["-1 lines: use 0 or more"], None, id="logs-tail-negative"),
    C(["logs", "deploy/webapp", "--tail", "ten"], ["'ten' is not a number of lines"], None, id="logs-tail-word"),
    C(["get", "pods", "-o", "xml"], ["invalid choice: 'xml'"], None, id="get-output"),
    C(["get", "pods", "-n", "UPPER"], ["'UPPER' is not a namespace name"], None, id="get-namespace"),
    C(["get", "pods"], ["no local mesh is running", "meshlib up"], None, id="get-no-mesh"),
    C(["apply", "-f", "{good}"], ["no local mesh is running"], None, id="apply-no-mesh"),
    C(["apply", "-f", "{good}"], ["cannot read", "remove it"], "", id="state-empty"),
    C(["apply", "-f", "{good}"], ["cannot read", "remove it"], "{not json", id="state-not-json"),
    C(["apply", "-f", "{good}"], ["is damaged", "pid, control and token"], "{}", id="state-empty-object"),
    C(["get", "pods"], ["is damaged"], "[]", id="state-list"),
    C(["proxy-status"], ["is damaged"], "null", id="state-null"),
    C(["down"], ["is damaged"], '{"pid": "1", "control": "http://127.0.0.1:1", "token": "t"}', id="state-pid-text"),
    C(["apply", "-f", "{good}"], ["does not answer at http://127.0.0.1:9"],
      '{"pid": 1, "control": "http://127.0.0.1:9", "token": "t"}', id="state-mesh-gone"),
    C(["apply", "-f", "{missing}"], ["no such file or folder"], None, id="apply-missing-file"),
    C(["apply", "-f", "-", "-f", "-"], ["-f - is given more than once"], None, id="apply-stdin-twice"),
]


@pytest.mark.parametrize(("argv", "words", "state"), CLI_CASES)
def test_bad_command_line_is_one_line(argv: list[str], words: list[str], state: str | None, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    state_file = tmp_path / "state" / "mesh.json"
    monkeypatch.setenv("MESHLIB_STATE", str(state_file))
    if state is not None:
        state_file.parent.mkdir()
        state_file.write_text(state)
    (tmp_path / "empty").mkdir()
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(deploy("- name: app\n  image: istioinaction/catalog:latest\n", "500").replace(
        "metadata:\n  name: x\nspec:\n", "metadata: {name: x}\nspec:\n"))
    _stdin(monkeypatch, GOOD)
    args = [a.format(good=good, bad=bad, dir=tmp_path / "empty", missing=tmp_path / "missing.yaml") for a in argv]
    code = main(args)
    _check(_one_error_line(capsys, code), None, words)


def test_the_catalogue_has_at_least_100_bad_inputs() -> None:
    assert len(MANIFESTS) + len(CLI_CASES) >= 100, (len(MANIFESTS), len(CLI_CASES))


# --- what is not an error ---------------------------------------------------------------------------------------------
def test_kinds_meshlib_does_not_model_are_stored_and_reported_once(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "\n---\n".join([
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {maxReplicas: 3}",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: db}\nspec: {hard: {pods: '10'}}",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader}\nrules: []",
        f"apiVersion: {NET}\nkind: EnvoyFilter\nmetadata: {{name: lua}}\nspec: {{}}",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny}\nspec: {}",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {}",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}",
        GOOD]))
    assert main(["analyze", "-f", str(path), "-n", "istioinaction"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = [line for line in out.splitlines() if "not modelled" in line]
    assert line.startswith("Info [MSH0003]")
    for name in ("HorizontalPodAutoscaler/web", "ResourceQuota/db", "Role/reader",
                 "AuthorizationPolicy/deny", "HTTPRoute/r", "Gateway/x", "Widget/w", "Kustomization/"):
        assert name in line, name
    assert "EnvoyFilter/lua" not in line  # stored too, but its supported patches are applied (test_envoyfilter.py)


def test_analyze_and_get_speak_json_and_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: db}\n")
    assert main(["analyze", "-f", str(path), "-o", "json"]) == 0
    [finding] = json.loads(capsys.readouterr().out)
    assert (finding["code"], finding["level"], finding["file"], finding["line"]) == ("MSH0003", "Info", str(path), 1)
    assert main(["analyze", "-f", str(path), "-o", "yaml"]) == 0
    import yaml

    assert yaml.safe_load(capsys.readouterr().out)[0]["name"] == "NotModelled"


def test_version_prints_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"meshlib {version('meshlib-bdd')}\n"
