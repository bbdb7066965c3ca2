"""The kinds meshlib understands, their schemas, and the Resource object built from a YAML document."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import re2

from meshlib.config.apis import CLUSTER_SCOPED, NAMELESS, group_kinds, split_api_version, suggestion
from meshlib.config.loader import Document, Path_
from meshlib.config.schema import (
    Anything,
    Bool,
    Enum,
    Int,
    IntOrStr,
    IntRange,
    ListOf,
    MapOf,
    NonNegInt,
    Num,
    Obj,
    Scalar,
    Str,
    fail,
    short,
    type_name,
)
from meshlib.errors import ConfigError, Source
from meshlib.units import duration_problem

ISTIO_NETWORKING = ("networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1")
ISTIO_TELEMETRY = ("telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1")
FLAGGER = ("flagger.app/v1beta1",)

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# modelled kind names that other API groups have too (Kubernetes' Gateway API): not modelled, not a mistake
HOMONYMS = frozenset((("gateway.networking.k8s.io", "Gateway"),))

Duration = Scalar((str,), "a duration like 10s", duration_problem)

INT32 = 2**31 - 1
MAX_REPLICAS = 50  # per Deployment: the embedded mesh runs every replica as real processes (an Envoy and its apps)
Port = IntRange(1, 65535, "a port number")
Count = IntRange(0, INT32, "a count", "Istio's int32")
Percent100 = IntRange(0, 100, "a percentage")
Replicas = IntRange(0, MAX_REPLICAS, "a number of replicas",
                    f"meshlib runs at most {MAX_REPLICAS} pods per Deployment, each a real Envoy and its apps")


def _port_or_name_problem(value: int | str) -> str | None:
    if isinstance(value, int):
        return None if 1 <= value <= 65535 else f"port must be between 1 and 65,535, got {value:,}"
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?", value):
        return f"port name {short(value)} is not a valid name (lower-case letters, digits and '-', at most 15)"
    return None


PortOrName = Scalar((int, str), "a port number or name", _port_or_name_problem)


def _ip_problem(value: str) -> str | None:
    if value in ("", "None"):
        return None  # unset, or a headless Service
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{short(value)} is not an IP address (or None for a headless Service)"
    return None


ClusterIP = Scalar((str,), "an IP address or None", _ip_problem)


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
PortSelector = Obj({"number": Port})
Destination = Obj({"host": Str, "subset": Str, "port": PortSelector}, required=("host",))
HeaderOps = Obj({"set": MapOf(Str), "add": MapOf(Str), "remove": ListOf(Str)})
Headers = Obj({"request": HeaderOps, "response": HeaderOps})

HTTPMatch = Obj({
    "name": Str, "uri": StringMatch, "scheme": StringMatch, "method": StringMatch, "authority": StringMatch,
    "headers": MapOf(StringMatch), "withoutHeaders": MapOf(StringMatch), "queryParams": MapOf(StringMatch),
    "port": Port, "sourceLabels": Labels, "sourceNamespace": Str, "gateways": ListOf(Str),
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


HTTPRouteDestination = Obj({"destination": Destination, "weight": IntRange(0, INT32, "a weight (0 or more)"),
                            "headers": Headers}, required=("destination",))
Fault = Obj({
    "delay": Obj({"fixedDelay": Duration, "exponentialDelay": Duration, "percentage": Percent,
                  "percent": Percent100}, one_of=("fixedDelay", "exponentialDelay")),
    "abort": Obj({"httpStatus": Scalar((int,), "an HTTP status", lambda v: None if 200 <= v <= 599
                                        else f"HTTP status must be 200-599, got {v}"),
                  "grpcStatus": Str, "http2Error": Str, "percentage": Percent}),
})
Retries = Obj({"attempts": IntRange(0, INT32, "a number of attempts"), "perTryTimeout": Duration,
               "retryOn": Str, "retryRemoteLocalities": Bool, "retryIgnorePreviousHosts": Bool, "backoff": Duration})
Rewrite = Obj({"uri": Str, "authority": Str, "uriRegexRewrite": Obj({"match": Regex, "rewrite": Str},
                                                                      required=("match", "rewrite"))})
HTTPRoute = Obj({
    "name": Str, "match": ListOf(HTTPMatch), "route": ListOf(HTTPRouteDestination),
    "redirect": Obj({"uri": Str, "authority": Str, "port": Port, "scheme": Str, "redirectCode": Int,
                     "derivePort": Enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")}, one_of=("port", "derivePort")),
    "directResponse": Obj({"status": IntRange(200, 599, "an HTTP status"),
                           "body": Obj({"string": Str, "bytes": Str}, one_of=("string", "bytes"))},
                          required=("status",)),
    "delegate": Obj({"name": Str, "namespace": Str}, required=("name",)),
    "rewrite": Rewrite,
    "timeout": Duration,
    "retries": Retries,
    "fault": Fault,
    "mirror": Destination,
    "mirrors": ListOf(Obj({"destination": Destination, "percentage": Percent}, required=("destination",))),
    "mirrorPercentage": Percent,
    "mirrorPercent": Percent100,
    "corsPolicy": Obj({}, open=True),
    "headers": Headers,
}, extra=_route_rule_extra)

OPEN = Obj({}, open=True)

RouteDestination = Obj({"destination": Destination, "weight": IntRange(0, INT32, "a weight (0 or more)")},
                       required=("destination",))
TLSMatch = Obj({"sniHosts": ListOf(Str), "destinationSubnets": ListOf(Str), "port": Port, "sourceLabels": Labels,
                "gateways": ListOf(Str), "sourceNamespace": Str}, required=("sniHosts",))
TLSRoute = Obj({"match": ListOf(TLSMatch), "route": ListOf(RouteDestination)}, required=("match", "route"))


def _virtual_service_extra(vs: dict, doc: Document, path: Path_) -> None:
    """validateTLSRoute (pkg/config/validation): every SNI host of a tls route is one of the VirtualService's
    hosts (or covered by a wildcard host)."""
    hosts = [h.lower() for h in vs.get("hosts") or []]
    for i, rule in enumerate(vs.get("tls") or []):
        for j, match in enumerate(rule.get("match") or []):
            for k, sni in enumerate(match.get("sniHosts") or []):
                if not any(_host_covers(h, sni.lower()) or _host_covers(sni.lower(), h) for h in hosts):
                    raise fail(doc, (*path, "tls", i, "match", j, "sniHosts", k),
                               f"SNI host {sni!r} is not matched by any host of the VirtualService",
                               "list it (or a wildcard covering it) under hosts")


def _host_covers(pattern: str, host: str) -> bool:
    return pattern == "*" or pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


VirtualService = Obj({
    "hosts": ListOf(Str), "gateways": ListOf(Str), "http": ListOf(HTTPRoute),
    "tcp": ListOf(OPEN), "tls": ListOf(TLSRoute), "exportTo": ListOf(Str),
}, extra=_virtual_service_extra)
RingSize = IntRange(0, 8_388_608, "a ring size", "Envoy's largest ring")
ConsistentHash = Obj({
    "httpHeaderName": Str, "httpCookie": Obj({"name": Str, "path": Str, "ttl": Duration}, required=("name",)),
    "useSourceIp": Bool, "httpQueryParameterName": Str,
    "ringHash": Obj({"minimumRingSize": RingSize}), "maglev": Obj({"tableSize": Count}), "minimumRingSize": RingSize,
}, one_of=("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"))
LocalityLbSetting = Obj({
    "distribute": ListOf(Obj({"from": Str, "to": MapOf(Percent100)})),
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
    "baseEjectionTime": Duration, "maxEjectionPercent": Percent100, "minHealthPercent": Percent100,
})
_POLICY = {"loadBalancer": LoadBalancer, "connectionPool": ConnectionPool, "outlierDetection": OutlierDetection,
           "tls": OPEN}
TrafficPolicy = Obj({**_POLICY, "portLevelSettings": ListOf(Obj({"port": PortSelector, **_POLICY})),
                     "tunnel": OPEN, "proxyProtocol": OPEN})
DestinationRule = Obj({
    "host": Str, "trafficPolicy": TrafficPolicy, "exportTo": ListOf(Str),
    "subsets": ListOf(Obj({"name": Str, "labels": Labels, "trafficPolicy": TrafficPolicy}, required=("name",))),
    "workloadSelector": Obj({"matchLabels": Labels}),
}, required=("host",))
TLS_VERSION = Enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")
TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")
ServerTLS = Obj({
    "httpsRedirect": Bool, "mode": Enum(*TLS_MODES), "serverCertificate": Str, "privateKey": Str,
    "caCertificates": Str, "caCrl": Str, "credentialName": Str, "credentialNames": ListOf(Str),
    "caCertCredentialName": Str, "tlsCertificates": ListOf(OPEN), "subjectAltNames": ListOf(Str),
    "verifyCertificateSpki": ListOf(Str), "verifyCertificateHash": ListOf(Str),
    "minProtocolVersion": TLS_VERSION, "maxProtocolVersion": TLS_VERSION, "cipherSuites": ListOf(Str),
})
# protocol.Parse (pkg/config/protocol): anything else is "Unsupported", which Gateway validation rejects
SERVER_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "TCP", "TLS", "UDP", "MONGO", "REDIS",
                    "MYSQL")


def _server_extra(server: dict, doc: Document, path: Path_) -> None:
    """Istio's validateServer / validateTLSOptions (pkg/config/validation): the TLS settings a port's protocol
    needs or forbids. The mode defaults to PASSTHROUGH (the API's zero value)."""
    port = server.get("port") or {}
    protocol = str(port.get("protocol") or "HTTP").upper()
    if protocol not in SERVER_PROTOCOLS:
        raise fail(doc, (*path, "port", "protocol"), f"unsupported protocol {short(port.get('protocol'))}",
                   f"use one of {', '.join(SERVER_PROTOCOLS)}")
    tls = server.get("tls")
    mode = (tls or {}).get("mode") or "PASSTHROUGH"
    if protocol in ("HTTPS", "TLS"):
        if not tls:
            raise fail(doc, path, f"a {protocol} server needs tls settings",
                       "add tls: {mode: SIMPLE, credentialName: <Secret name>} (or mode: PASSTHROUGH)")
        if not port.get("name"):
            raise fail(doc, (*path, "port"), f"a {protocol} server's port needs a name",
                       "istiod names its route configuration https.<number>.<port name>.<gateway>.<namespace>")
    elif tls:
        file_certs = any(tls.get(k) for k in ("serverCertificate", "privateKey", "caCertificates"))
        if protocol not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY") or \
                mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH") or file_certs:
            raise fail(doc, (*path, "tls"), f"a {protocol} server cannot have TLS settings "
                       "(a plain-text HTTP server takes only tls.httpsRedirect)",
                       "use protocol HTTPS for a server that terminates TLS")
    if tls and mode in ("SIMPLE", "MUTUAL") and not (tls.get("credentialName") or tls.get("credentialNames")):
        for key in ("serverCertificate", "privateKey") + (("caCertificates",) if mode == "MUTUAL" else ()):
            if not tls.get(key):
                raise fail(doc, (*path, "tls"), f"{mode} TLS needs credentialName (or {key})",
                           "name a kubernetes.io/tls Secret in the gateway's namespace: credentialName: <name>")
    if tls and mode == "ISTIO_MUTUAL":
        for key in ("serverCertificate", "privateKey", "caCertificates", "credentialName"):
            if tls.get(key):
                raise fail(doc, (*path, "tls", key), f"ISTIO_MUTUAL TLS cannot have {key}")


Gateway = Obj({
    "selector": Labels,
    "servers": ListOf(Obj({
        "port": Obj({"number": Port, "name": Str, "protocol": Str, "targetPort": Port}, required=("number",)),
        "hosts": ListOf(Str), "tls": ServerTLS, "bind": Str, "defaultEndpoint": Str, "name": Str,
    }, required=("port", "hosts"), extra=_server_extra)),
}, required=("servers",))
ServiceEntry = Obj({
    "hosts": ListOf(Str), "addresses": ListOf(Str),
    "ports": ListOf(Obj({"number": Port, "protocol": Str, "name": Str, "targetPort": Port}, required=("number",))),
    "location": Enum("MESH_EXTERNAL", "MESH_INTERNAL"),
    "resolution": Enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
    "endpoints": ListOf(Obj({"address": Str, "ports": MapOf(Port), "labels": Labels, "network": Str,
                             "locality": Str, "weight": Count, "serviceAccount": Str})),
    "exportTo": ListOf(Str), "workloadSelector": Obj({"labels": Labels}),
    "subjectAltNames": ListOf(Str),
}, required=("hosts",))
OutboundPolicy = Obj({"mode": Enum("REGISTRY_ONLY", "ALLOW_ANY"), "egressProxy": OPEN})
Sidecar = Obj({
    "workloadSelector": Obj({"labels": Labels}), "ingress": ListOf(OPEN),
    "egress": ListOf(Obj({"port": Obj({"number": Port, "protocol": Str, "name": Str, "targetPort": Port}),
                          "bind": Str, "captureMode": Str, "hosts": ListOf(Str)},
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
                  Enum("TEXT", "JSON"), "accessLogFormat": Str, "defaultHttpRetryPolicy": Retries}, open=True)
IstioOperator = Obj({"meshConfig": MeshConfig}, open=True)
CanaryMetric = Obj({
    "name": Str, "interval": Duration, "threshold": Num,
    "thresholdRange": Obj({"min": Num, "max": Num}), "query": Str,
    "templateRef": Obj({"name": Str, "namespace": Str}, required=("name",)), "templateVariables": MapOf(Str),
}, required=("name",))
ObjectRef = Obj({"apiVersion": Str, "kind": Str, "name": Str}, required=("name",))
Webhook = Obj({"name": Str, "type": Enum("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                                         "confirm-promotion", "post-rollout", "rollback", "event"),
               "url": Str, "timeout": Duration, "muteAlert": Bool, "metadata": MapOf(Str), "retries": Count,
               "disableTLS": Bool}, required=("name", "url"))
Canary = Obj({
    "provider": Str, "metricsServer": Str,
    "targetRef": ObjectRef,
    "autoscalerRef": ObjectRef, "ingressRef": ObjectRef, "upstreamRef": ObjectRef,
    "progressDeadlineSeconds": NonNegInt(), "skipAnalysis": Bool, "suspend": Bool, "revertOnDeletion": Bool,
    "service": Obj({"name": Str, "port": Port, "targetPort": PortOrName, "portName": Str, "portDiscovery": Bool,
                    "gateways": ListOf(Str), "hosts": ListOf(Str), "trafficPolicy": TrafficPolicy,
                    "match": ListOf(HTTPMatch), "retries": Retries, "timeout": Duration, "headers": Headers,
                    "corsPolicy": OPEN, "rewrite": Rewrite, "appProtocol": Str, "delegation": Bool},
                   required=("port",)),
    "analysis": Obj({
        "interval": Duration, "threshold": Count, "maxWeight": Percent100, "stepWeight": Percent100,
        "stepWeights": ListOf(Percent100), "stepWeightPromotion": Percent100, "iterations": Count,
        "mirror": Bool, "mirrorWeight": Percent100, "match": ListOf(HTTPMatch), "metrics": ListOf(CanaryMetric),
        "webhooks": ListOf(Webhook), "alerts": ListOf(OPEN), "primaryReadyThreshold": Percent100,
        "canaryReadyThreshold": Percent100, "sessionAffinity": OPEN,
    }),
}, required=("targetRef", "service"))
MetricTemplate = Obj({"provider": Obj({"type": Str, "address": Str, "secretRef": OPEN,
                                       "insecureSkipVerify": Bool}, open=True),
                      "query": Str}, required=("query",))

ServicePort = Obj({"port": Port, "targetPort": PortOrName, "name": Str, "protocol": Enum("TCP", "UDP", "SCTP"),
                   "nodePort": Port, "appProtocol": Str}, required=("port",))
# Kubernetes core kinds: every field of the spec is listed (kubectl rejects unknown ones too); the fields meshlib
# does not model are accepted as they are.
Service = Obj({"selector": Labels, "ports": ListOf(ServicePort),
               "type": Enum("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"),
               "clusterIP": ClusterIP, "clusterIPs": ListOf(ClusterIP), "externalName": Str,
               **{k: Anything for k in (
                   "allocateLoadBalancerNodePorts", "externalIPs",
                   "externalTrafficPolicy", "healthCheckNodePort", "internalTrafficPolicy", "ipFamilies",
                   "ipFamilyPolicy", "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges",
                   "publishNotReadyAddresses", "sessionAffinity", "sessionAffinityConfig", "trafficDistribution")}})
KeyRef = Obj({"name": Str, "key": Str, "optional": Bool}, required=("key",))
EnvSource = Obj({"fieldRef": Obj({"fieldPath": Str, "apiVersion": Str}, required=("fieldPath",)),
                 "configMapKeyRef": KeyRef, "secretKeyRef": KeyRef,
                 "resourceFieldRef": Obj({"resource": Str, "containerName": Str, "divisor": IntOrStr},
                                         required=("resource",))},
                one_of=("fieldRef", "configMapKeyRef", "secretKeyRef", "resourceFieldRef"))
EnvVar = Obj({"name": Str, "value": Scalar((str,), "a string (quote numbers and booleans)"),
              "valueFrom": EnvSource}, required=("name",), one_of=("value", "valueFrom"))
ContainerPort = Obj({"containerPort": Port, "name": Str, "protocol": Enum("TCP", "UDP", "SCTP"), "hostPort": Port,
                     "hostIP": Str}, required=("containerPort",))
Container = Obj({"name": Str, "image": Str, "env": ListOf(EnvVar), "command": ListOf(Str), "args": ListOf(Str),
                 "ports": ListOf(ContainerPort)},
                open=True, required=("name", "image"))
PodTemplate = Obj({"metadata": Obj({"labels": Labels, "annotations": MapOf(Str)}, open=True),
                   "spec": Obj({"containers": ListOf(Container)}, open=True, required=("containers",))},
                  required=("spec",))
Deployment = Obj({"replicas": Replicas, "selector": Obj({"matchLabels": Labels, "matchExpressions": ListOf(OPEN)}),
                  "template": PodTemplate,
                  **{k: Anything for k in ("minReadySeconds", "paused", "progressDeadlineSeconds",
                                           "revisionHistoryLimit", "strategy")}},
                 required=("template",))
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
TLS_SECRET = "kubernetes.io/tls"


def _base64_problem(value: str) -> str | None:
    try:
        base64.b64decode(value.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return "not valid base64 (data values are base64-encoded; put plain text under stringData)"
    return None


def pem_problem(key: str, text: bytes) -> str | None:
    """A PEM block of the kind `key` holds, whose body is base64 (what Envoy needs to load it)."""
    want = "CERTIFICATE" if key == "tls.crt" else "PRIVATE KEY"
    found = re.search(rb"-----BEGIN ([A-Z ]+)-----([A-Za-z0-9+/=\s]*)-----END \1-----", text)
    if found is None or not found.group(1).decode().endswith(want):
        return f"no PEM {want} block in it (-----BEGIN {'' if want == 'CERTIFICATE' else '… '}{want}-----)"
    try:
        base64.b64decode(b"".join(found.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        return f"the PEM {want} block's body is not base64"
    return None


def secret_values(spec: dict[str, Any]) -> dict[str, bytes]:
    """A Secret's keys and decoded values as the cluster stores them: `data` decoded, `stringData` over it."""
    out = {k: base64.b64decode(str(v).replace("\n", "")) for k, v in (spec.get("data") or {}).items()}
    out.update({k: str(v).encode() for k, v in (spec.get("stringData") or {}).items()})
    return out


def _secret_extra(secret: dict, doc: Document, path: Path_) -> None:
    for field_name in ("data", "stringData"):
        for key in secret.get(field_name) or {}:
            if not SECRET_KEY.match(key):
                raise fail(doc, (*path, field_name, key), f"key {key!r} is not a valid Secret key",
                           "use letters, digits, '-', '_' and '.'")
    if secret.get("type") != TLS_SECRET:
        return
    values = secret_values(secret)
    for key in ("tls.crt", "tls.key"):
        if key not in values:
            raise fail(doc, (*path, "data") if "data" in secret else path,
                       f"a {TLS_SECRET} Secret needs {key} (under data, base64, or stringData)",
                       "kubectl create secret tls NAME --cert=cert.pem --key=key.pem writes both")
        problem = pem_problem(key, values[key])
        if problem:
            where = "stringData" if key in (secret.get("stringData") or {}) else "data"
            raise fail(doc, (*path, where, key), problem, "the gateway's Envoy could not load it")


Base64 = Scalar((str,), "a base64 string", _base64_problem)
Secret = Obj({"type": Str, "data": MapOf(Base64), "stringData": MapOf(Scalar((str,), "a string (quote numbers)")),
              "immutable": Bool}, extra=_secret_extra)
SECRET_FIELDS = ("type", "data", "stringData", "immutable")

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
    spec_field: str = "spec"  # "" : the spec is the top-level fields `top_fields` (a Secret's type, data …)
    top_fields: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("Namespace", ("v1",), None, namespaced=False),
    Kind("ServiceAccount", ("v1",), None),
    Kind("ConfigMap", ("v1",), MapOf(Scalar((str,), "a string (quote numbers and booleans)")),
         spec_field="data"),
    Kind("Service", ("v1",), Service),
    Kind("Secret", ("v1",), Secret, spec_field="", top_fields=SECRET_FIELDS),
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
    """One validated object with its resolved namespace and where it was written.

    A kind meshlib does not model (`modelled` False) keeps its whole body in `spec`, unchecked and unused by the
    translator: it is stored and listed, as a cluster would keep it.
    """

    kind: str
    api_version: str
    name: str
    namespace: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    doc: Document
    modelled: bool = True

    @property
    def source(self) -> Source:
        return self.doc.source

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, namespace, name); a kind not modelled is qualified by its group (`Gateway.gateway.networking.k8s.io`)
        so it never replaces a modelled object of the same name."""
        group = split_api_version(self.api_version)[0]
        kind = self.kind if self.modelled or not group else f"{self.kind}.{group}"
        return (kind, self.namespace, self.name)

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels") or {}

    def where(self, *path: str | int) -> Source:
        """Source line of a field below `spec` (or of the nearest ancestor written in the file)."""
        if not self.modelled:
            return self.doc.where(path)
        spec_field = KINDS[self.kind].spec_field
        return self.doc.where((spec_field, *path) if spec_field else path)

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
        raise ConfigError(doc.where(("kind",)) if "kind" in data else doc.source,
                          "missing 'kind'" if not kind_name else f"'kind' must be a name, got {kind_name!r}",
                          "every manifest needs apiVersion, kind and metadata")
    if not api_version or not isinstance(api_version, str):
        raise ConfigError(doc.where(("apiVersion",)) if "apiVersion" in data else doc.source,
                          f"{kind_name} has no apiVersion" if not api_version
                          else f"'apiVersion' must be a string like networking.istio.io/v1, got {api_version!r}",
                          "every manifest needs apiVersion, kind and metadata")
    kind = KINDS.get(kind_name)
    if kind is None or api_version not in kind.api_versions:
        _check_kind_exists(doc, kind_name, api_version)
        return _not_modelled(doc, kind_name, api_version, default_namespace)
    if data.get("metadata") is None:
        raise ConfigError(doc.source, f"{kind_name} has no 'metadata'", "add metadata: {name: …}")
    Metadata.check(data.get("metadata"), doc, ("metadata",))
    metadata = Metadata.normalized(data["metadata"])
    name = metadata["name"]
    if not _DNS1123.match(name) or len(name) > 253:
        raise ConfigError(doc.where(("metadata", "name")),
                          f"metadata.name {name!r} is not a valid name",
                          "use lower-case letters, digits, '-' and '.'")
    namespace = (metadata.get("namespace") or default_namespace) if kind.namespaced else ""
    if kind.namespaced and not _DNS_LABEL.match(namespace):
        raise ConfigError(doc.where(("metadata", "namespace")), f"namespace {namespace!r} is not a valid name",
                          "use lower-case letters, digits and '-', at most 63")
    if kind.spec_field:
        spec = data.get(kind.spec_field)
        spec_path: Path_ = (kind.spec_field,)
    else:
        spec = {k: data[k] for k in kind.top_fields if k in data}
        spec_path = ()
    if spec is None:
        spec = {}
    if kind.spec is not None:
        kind.spec.check(spec, doc, spec_path)
        spec = kind.spec.normalized(spec)
    for key in data:
        if key not in ("apiVersion", "kind", "metadata", kind.spec_field, "status", *kind.top_fields):
            if kind.name == "ConfigMap" and key == "binaryData":
                continue
            raise ConfigError(doc.where((key,)), f"unknown top-level field {key!r} in {kind_name}",
                              f"did you mean '{kind.spec_field}'?" if kind.spec_field
                              else f"{kind_name} has {', '.join(kind.top_fields)}")
    return Resource(kind_name, api_version, name, namespace, metadata, spec, doc)


def _check_kind_exists(doc: Document, kind_name: str, api_version: str) -> None:
    """A modelled kind in another apiVersion, or a kind its (known) group does not have, is a mistake."""
    group, _ = split_api_version(api_version)
    kind = KINDS.get(kind_name)
    if kind is not None and (group, kind_name) not in HOMONYMS:
        raise ConfigError(doc.where(("apiVersion",)),
                          f"{kind_name} does not exist in apiVersion {api_version!r}",
                          f"use one of: {', '.join(kind.api_versions)}")
    kinds = group_kinds(api_version)
    if kinds is not None and kind_name not in kinds:
        raise ConfigError(doc.where(("kind",)), f"unknown kind {kind_name!r} in apiVersion {api_version!r}",
                          suggestion(kind_name, kinds))


def _not_modelled(doc: Document, kind_name: str, api_version: str, default_namespace: str) -> Resource:
    """A kind meshlib does not model: only what identifies it is checked."""
    metadata = doc.data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise fail(doc, ("metadata",), f"expected a mapping, got {type_name(metadata)}")
    name = metadata.get("name")
    if name is None and kind_name in NAMELESS:
        name = str(doc.source)
    elif not isinstance(name, str) or not name.strip():
        raise fail(doc, ("metadata",) if name is None else ("metadata", "name"),
                   "missing required field 'name'" if name is None else f"name must be a string, got {name!r}")
    namespace = metadata.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and _DNS_LABEL.match(namespace)):
        raise fail(doc, ("metadata", "namespace"), f"namespace {namespace!r} is not a valid name",
                   "use lower-case letters, digits and '-', at most 63")
    namespace = "" if kind_name in CLUSTER_SCOPED else (namespace or default_namespace)
    body = {k: v for k, v in doc.data.items() if k not in ("apiVersion", "kind", "metadata")}
    return Resource(kind_name, api_version, name, namespace, metadata, body, doc, modelled=False)
