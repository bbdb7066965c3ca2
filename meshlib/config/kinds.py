"""The kinds meshlib understands, their schemas, and the Resource object built from a YAML document."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import re2

from meshlib.config.loader import Document, Path_
from meshlib.config.schema import (
    Anything,
    Bool,
    Enum,
    Int,
    IntOrStr,
    ListOf,
    MapOf,
    NonNegInt,
    Num,
    Obj,
    Scalar,
    Str,
    fail,
)
from meshlib.errors import ConfigError, Source
from meshlib.units import duration_problem

ISTIO_NETWORKING = ("networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1")
ISTIO_TELEMETRY = ("telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1")
FLAGGER = ("flagger.app/v1beta1",)

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

Duration = Scalar((str,), "a duration like 10s", duration_problem)


_RE2_QUIET = re2.Options()
_RE2_QUIET.log_errors = False  # the error goes into our message, not onto stderr


def _regex_problem(value: str) -> str | None:
    if not value:
        return "regex must not be empty"
    try:
        re2.compile(value, options=_RE2_QUIET)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"invalid RE2 regular expression {value!r}: {reason}"
    return None


def _percent_problem(value: float) -> str | None:
    return None if 0 <= value <= 100 else f"percentage must be between 0 and 100, got {value}"


Percent = Obj({"value": Scalar((int, float), "a percentage", _percent_problem)})
Regex = Scalar((str,), "an RE2 regular expression", _regex_problem)
StringMatch = Obj({"exact": Str, "prefix": Str, "regex": Regex}, one_of=("exact", "prefix", "regex"))
Labels = MapOf(Str)
PortSelector = Obj({"number": Int})
Destination = Obj({"host": Str, "subset": Str, "port": PortSelector}, required=("host",))
HeaderOps = Obj({"set": MapOf(Str), "add": MapOf(Str), "remove": ListOf(Str)})
Headers = Obj({"request": HeaderOps, "response": HeaderOps})

HTTPMatch = Obj({
    "name": Str, "uri": StringMatch, "scheme": StringMatch, "method": StringMatch, "authority": StringMatch,
    "headers": MapOf(StringMatch), "withoutHeaders": MapOf(StringMatch), "queryParams": MapOf(StringMatch),
    "port": Int, "sourceLabels": Labels, "sourceNamespace": Str, "gateways": ListOf(Str),
    "ignoreUriCase": Bool, "statPrefix": Str,
})


def _route_rule_extra(rule: dict, doc: Document, path: Path_) -> None:
    actions = [k for k in ("route", "redirect", "directResponse", "delegate") if rule.get(k)]
    if not actions:
        raise fail(doc, path, "a rule needs one of route, redirect, directResponse or delegate")
    if len(actions) > 1:
        raise fail(doc, path, f"a rule takes only one of route, redirect, directResponse, delegate; "
                              f"found {' and '.join(actions)}")
    if rule.get("redirect") and (rule.get("fault") or rule.get("rewrite")):
        raise fail(doc, path, "redirect cannot be combined with fault or rewrite")
    if rule.get("mirror") and rule.get("mirrors"):
        raise fail(doc, path, "set mirror or mirrors, not both")
    if rule.get("mirrorPercentage") is not None and rule.get("mirrorPercent") is not None:
        raise fail(doc, path, "set mirrorPercentage or the deprecated mirrorPercent, not both")
    if rule.get("delegate"):
        raise fail(doc, (*path, "delegate"), "delegate VirtualServices are not modelled by meshlib yet",
                   "inline the delegate's rules into this VirtualService")
    authorities = [v for v in [(rule.get("rewrite") or {}).get("authority")] if v]
    for op in ("set", "add"):
        ops = ((rule.get("headers") or {}).get("request") or {}).get(op) or {}
        authorities += [v for k, v in ops.items() if k.lower() in ("host", ":authority")]
    if len(authorities) > 1:
        raise fail(doc, path, f"authority is set more than once ({', '.join(map(repr, authorities))})",
                   "use rewrite.authority or a host header, not both")
    dests = rule.get("route") or []
    if len(dests) > 1:
        weights = [d.get("weight", 0) or 0 for d in dests]
        if sum(weights) == 0:
            raise fail(doc, (*path, "route"), "with several destinations at least one needs a weight above 0",
                       "give each destination a weight, e.g. 90 and 10")


HTTPRouteDestination = Obj({"destination": Destination, "weight": NonNegInt("a weight (0 or more)"),
                            "headers": Headers}, required=("destination",))
Fault = Obj({
    "delay": Obj({"fixedDelay": Duration, "exponentialDelay": Duration, "percentage": Percent,
                  "percent": Scalar((int,), "a percentage", _percent_problem)}),
    "abort": Obj({"httpStatus": Scalar((int,), "an HTTP status", lambda v: None if 200 <= v <= 599
                                        else f"HTTP status must be 200-599, got {v}"),
                  "grpcStatus": Str, "http2Error": Str, "percentage": Percent}),
})
HTTPRoute = Obj({
    "name": Str, "match": ListOf(HTTPMatch), "route": ListOf(HTTPRouteDestination),
    "redirect": Obj({"uri": Str, "authority": Str, "port": Int, "scheme": Str, "redirectCode": Int,
                     "derivePort": Enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")}, one_of=("port", "derivePort")),
    "directResponse": Obj({"status": Int, "body": Obj({"string": Str, "bytes": Str})}, required=("status",)),
    "delegate": Obj({"name": Str, "namespace": Str}, required=("name",)),
    "rewrite": Obj({"uri": Str, "authority": Str,
                    "uriRegexRewrite": Obj({"match": Regex, "rewrite": Str})}),
    "timeout": Duration,
    "retries": Obj({"attempts": Int, "perTryTimeout": Duration, "retryOn": Str, "retryRemoteLocalities": Bool,
                    "retryIgnorePreviousHosts": Bool, "backoff": Duration}),
    "fault": Fault,
    "mirror": Destination,
    "mirrors": ListOf(Obj({"destination": Destination, "percentage": Percent}, required=("destination",))),
    "mirrorPercentage": Percent,
    "mirrorPercent": Scalar((int,), "a percentage", _percent_problem),
    "corsPolicy": Obj({}, open=True),
    "headers": Headers,
}, extra=_route_rule_extra)

OPEN = Obj({}, open=True)

VirtualService = Obj({
    "hosts": ListOf(Str), "gateways": ListOf(Str), "http": ListOf(HTTPRoute),
    "tcp": ListOf(OPEN), "tls": ListOf(OPEN), "exportTo": ListOf(Str),
})
Count = NonNegInt()
ConsistentHash = Obj({
    "httpHeaderName": Str, "httpCookie": Obj({"name": Str, "path": Str, "ttl": Duration}, required=("name",)),
    "useSourceIp": Bool, "httpQueryParameterName": Str,
    "ringHash": Obj({"minimumRingSize": Count}), "maglev": Obj({"tableSize": Count}), "minimumRingSize": Count,
}, one_of=("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"))
LocalityLbSetting = Obj({
    "distribute": ListOf(Obj({"from": Str, "to": MapOf(Count)})),
    "failover": ListOf(Obj({"from": Str, "to": Str})), "failoverPriority": ListOf(Str), "enabled": Bool,
})
LoadBalancer = Obj({
    "simple": Enum("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"),
    "consistentHash": ConsistentHash, "localityLbSetting": LocalityLbSetting, "warmupDurationSecs": Duration,
})
ConnectionPool = Obj({
    "tcp": Obj({"maxConnections": Count, "connectTimeout": Duration, "tcpKeepalive": OPEN,
                "maxConnectionDuration": Duration, "idleTimeout": Duration}),
    "http": Obj({"http1MaxPendingRequests": Count, "http2MaxRequests": Count, "maxRequestsPerConnection": Count,
                 "maxRetries": Count, "idleTimeout": Duration,
                 "h2UpgradePolicy": Enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"), "useClientProtocol": Bool,
                 "maxConcurrentStreams": Count}),
})
OutlierDetection = Obj({
    "consecutiveErrors": Count, "consecutive5xxErrors": Count, "consecutiveGatewayErrors": Count,
    "consecutiveLocalOriginFailures": Count, "splitExternalLocalOriginErrors": Bool, "interval": Duration,
    "baseEjectionTime": Duration, "maxEjectionPercent": Count, "minHealthPercent": Count,
})
_POLICY = {"loadBalancer": LoadBalancer, "connectionPool": ConnectionPool, "outlierDetection": OutlierDetection,
           "tls": OPEN}
TrafficPolicy = Obj({**_POLICY, "portLevelSettings": ListOf(Obj({"port": Obj({"number": Count}), **_POLICY})),
                     "tunnel": OPEN, "proxyProtocol": OPEN})
DestinationRule = Obj({
    "host": Str, "trafficPolicy": TrafficPolicy, "exportTo": ListOf(Str),
    "subsets": ListOf(Obj({"name": Str, "labels": Labels, "trafficPolicy": TrafficPolicy}, required=("name",))),
    "workloadSelector": Obj({"matchLabels": Labels}),
}, required=("host",))
Gateway = Obj({
    "selector": Labels,
    "servers": ListOf(Obj({
        "port": Obj({"number": Int, "name": Str, "protocol": Str, "targetPort": Int}, required=("number",)),
        "hosts": ListOf(Str), "tls": OPEN, "bind": Str, "defaultEndpoint": Str, "name": Str,
    }, required=("port", "hosts"))),
}, required=("servers",))
ServiceEntry = Obj({
    "hosts": ListOf(Str), "addresses": ListOf(Str),
    "ports": ListOf(Obj({"number": Int, "protocol": Str, "name": Str, "targetPort": Int}, required=("number",))),
    "location": Enum("MESH_EXTERNAL", "MESH_INTERNAL"),
    "resolution": Enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
    "endpoints": ListOf(OPEN), "exportTo": ListOf(Str), "workloadSelector": Obj({"labels": Labels}),
    "subjectAltNames": ListOf(Str),
}, required=("hosts",))
OutboundPolicy = Obj({"mode": Enum("REGISTRY_ONLY", "ALLOW_ANY"), "egressProxy": OPEN})
Sidecar = Obj({
    "workloadSelector": Obj({"labels": Labels}), "ingress": ListOf(OPEN),
    "egress": ListOf(Obj({"port": OPEN, "bind": Str, "captureMode": Str, "hosts": ListOf(Str)},
                         required=("hosts",))),
    "outboundTrafficPolicy": OutboundPolicy, "inboundConnectionPool": OPEN,
})
Telemetry = Obj({
    "selector": Obj({"matchLabels": Labels}), "targetRef": OPEN, "targetRefs": ListOf(OPEN),
    "accessLogging": ListOf(Obj({"providers": ListOf(Obj({"name": Str})), "disabled": Bool,
                                 "filter": Obj({"expression": Str}), "match": OPEN})),
    "metrics": ListOf(OPEN), "tracing": ListOf(OPEN),
})
MeshConfig = Obj({"outboundTrafficPolicy": OutboundPolicy, "accessLogFile": Str, "accessLogEncoding":
                  Enum("TEXT", "JSON"), "accessLogFormat": Str, "defaultHttpRetryPolicy": OPEN}, open=True)
IstioOperator = Obj({"meshConfig": MeshConfig}, open=True)
CanaryMetric = Obj({
    "name": Str, "interval": Duration, "threshold": Num,
    "thresholdRange": Obj({"min": Num, "max": Num}), "query": Str,
    "templateRef": Obj({"name": Str, "namespace": Str}, required=("name",)), "templateVariables": MapOf(Str),
}, required=("name",))
Canary = Obj({
    "provider": Str, "metricsServer": Str,
    "targetRef": Obj({"apiVersion": Str, "kind": Str, "name": Str}, required=("name",)),
    "autoscalerRef": OPEN, "ingressRef": OPEN, "upstreamRef": OPEN,
    "progressDeadlineSeconds": NonNegInt(), "skipAnalysis": Bool, "suspend": Bool, "revertOnDeletion": Bool,
    "service": Obj({"name": Str, "port": Int, "targetPort": IntOrStr, "portName": Str, "portDiscovery": Bool,
                    "gateways": ListOf(Str), "hosts": ListOf(Str), "trafficPolicy": TrafficPolicy,
                    "match": ListOf(HTTPMatch), "retries": OPEN, "timeout": Duration, "headers": Headers,
                    "corsPolicy": OPEN, "rewrite": OPEN, "appProtocol": Str}, required=("port",)),
    "analysis": Obj({
        "interval": Duration, "threshold": NonNegInt(), "maxWeight": NonNegInt(), "stepWeight": NonNegInt(),
        "stepWeights": ListOf(NonNegInt()), "stepWeightPromotion": NonNegInt(), "iterations": NonNegInt(),
        "mirror": Bool, "mirrorWeight": NonNegInt(), "match": ListOf(HTTPMatch), "metrics": ListOf(CanaryMetric),
        "webhooks": ListOf(OPEN), "alerts": ListOf(OPEN), "primaryReadyThreshold": Int,
        "canaryReadyThreshold": Int, "sessionAffinity": OPEN,
    }),
}, required=("targetRef", "service"))
MetricTemplate = Obj({"provider": Obj({"type": Str, "address": Str, "secretRef": OPEN,
                                       "insecureSkipVerify": Bool}, open=True),
                      "query": Str}, required=("query",))

ServicePort = Obj({"port": Int, "targetPort": IntOrStr, "name": Str, "protocol": Enum("TCP", "UDP", "SCTP"),
                   "nodePort": Int, "appProtocol": Str}, required=("port",))
# Kubernetes core kinds: every field of the spec is listed (kubectl rejects unknown ones too); the fields meshlib
# does not model are accepted as they are.
Service = Obj({"selector": Labels, "ports": ListOf(ServicePort),
               "type": Enum("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"),
               **{k: Anything for k in (
                   "allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs", "externalName",
                   "externalTrafficPolicy", "healthCheckNodePort", "internalTrafficPolicy", "ipFamilies",
                   "ipFamilyPolicy", "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges",
                   "publishNotReadyAddresses", "sessionAffinity", "sessionAffinityConfig", "trafficDistribution")}})
EnvVar = Obj({"name": Str, "value": Scalar((str,), "a string (quote numbers and booleans)"),
              "valueFrom": OPEN}, required=("name",))
Container = Obj({"name": Str, "image": Str, "env": ListOf(EnvVar), "command": ListOf(Str), "args": ListOf(Str),
                 "ports": ListOf(Obj({"containerPort": Int, "name": Str, "protocol": Str}, open=True,
                                     required=("containerPort",)))},
                open=True, required=("name", "image"))
PodTemplate = Obj({"metadata": Obj({"labels": Labels, "annotations": MapOf(Str)}, open=True),
                   "spec": Obj({"containers": ListOf(Container)}, open=True, required=("containers",))},
                  required=("spec",))
Deployment = Obj({"replicas": NonNegInt(), "selector": Obj({"matchLabels": Labels, "matchExpressions": ListOf(OPEN)}),
                  "template": PodTemplate,
                  **{k: Anything for k in ("minReadySeconds", "paused", "progressDeadlineSeconds",
                                           "revisionHistoryLimit", "strategy")}},
                 required=("template",))
Metadata = Obj({"name": Str, "namespace": Str, "labels": Labels, "annotations": MapOf(Str),
                **{k: Anything for k in ("generateName", "uid", "resourceVersion", "generation", "creationTimestamp",
                                         "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences",
                                         "finalizers", "managedFields", "selfLink")}},
               required=("name",))


@dataclass(frozen=True)
class Kind:
    name: str
    api_versions: tuple[str, ...]
    spec: Obj | None
    namespaced: bool = True
    spec_field: str = "spec"


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("Namespace", ("v1",), None, namespaced=False),
    Kind("ServiceAccount", ("v1",), None),
    Kind("ConfigMap", ("v1",), MapOf(Anything), spec_field="data"),
    Kind("Service", ("v1",), Service),
    Kind("Deployment", ("apps/v1",), Deployment),
    Kind("Gateway", ISTIO_NETWORKING, Gateway),
    Kind("VirtualService", ISTIO_NETWORKING, VirtualService),
    Kind("DestinationRule", ISTIO_NETWORKING, DestinationRule),
    Kind("ServiceEntry", ISTIO_NETWORKING, ServiceEntry),
    Kind("Sidecar", ISTIO_NETWORKING, Sidecar),
    Kind("Telemetry", ISTIO_TELEMETRY, Telemetry),
    Kind("Canary", FLAGGER, Canary),
    Kind("MetricTemplate", FLAGGER, MetricTemplate),
    Kind("IstioOperator", ("install.istio.io/v1alpha1",), IstioOperator),
)}


@dataclass
class Resource:
    """One validated object with its resolved namespace and where it was written."""

    kind: str
    api_version: str
    name: str
    namespace: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    doc: Document

    @property
    def source(self) -> Source:
        return self.doc.source

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels") or {}

    def where(self, *path: str | int) -> Source:
        """Source line of a field below `spec` (or of the nearest ancestor written in the file)."""
        field = KINDS[self.kind].spec_field
        return self.doc.where((field, *path))

    def ref(self) -> str:
        return f"{self.kind}/{self.name}.{self.namespace}" if self.namespace else f"{self.kind}/{self.name}"


def build_resource(doc: Document, default_namespace: str) -> Resource:
    """Check `doc` against its kind's schema and return the Resource; ConfigError with file:line otherwise."""
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(doc.source, "a manifest must be a mapping with apiVersion, kind and metadata")
    kind_name = data.get("kind")
    api_version = data.get("apiVersion")
    if not kind_name or not isinstance(kind_name, str):
        raise ConfigError(doc.source, "missing 'kind'", "every manifest needs apiVersion, kind and metadata")
    kind = KINDS.get(kind_name)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise ConfigError(doc.where(("kind",)), f"unknown kind {kind_name!r}",
                          f"meshlib understands: {known}")
    if api_version not in kind.api_versions:
        raise ConfigError(doc.where(("apiVersion",)),
                          f"{kind_name} does not exist in apiVersion {api_version!r}",
                          f"use one of: {', '.join(kind.api_versions)}")
    if data.get("metadata") is None:
        raise ConfigError(doc.source, f"{kind_name} has no 'metadata'", "add metadata: {name: …}")
    Metadata.check(data.get("metadata"), doc, ("metadata",))
    metadata = data["metadata"]
    name = metadata["name"]
    if not _DNS1123.match(name) or len(name) > 253:
        raise ConfigError(doc.where(("metadata", "name")),
                          f"metadata.name {name!r} is not a valid name",
                          "use lower-case letters, digits, '-' and '.'")
    namespace = (metadata.get("namespace") or default_namespace) if kind.namespaced else ""
    spec = data.get(kind.spec_field)
    if spec is None:
        spec = {}
    if kind.spec is not None:
        kind.spec.check(spec, doc, (kind.spec_field,))
    for key in data:
        if key not in ("apiVersion", "kind", "metadata", kind.spec_field, "status"):
            if kind.name == "ConfigMap" and key == "binaryData":
                continue
            raise ConfigError(doc.where((key,)), f"unknown top-level field {key!r} in {kind_name}",
                              f"did you mean '{kind.spec_field}'?")
    return Resource(kind_name, api_version, name, namespace, metadata, spec, doc)
