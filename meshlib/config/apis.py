"""The Kubernetes and Istio API groups meshlib knows the kinds of, to tell a typo from a kind it does not model.

A kind of a group listed here that the group does not have (`v1 Servce`, `networking.istio.io/v1 VirtualSevice`)
is an error with a suggestion; any kind of another group (HorizontalPodAutoscaler, Role, HTTPRoute, CRDs,
Kustomization …) is stored and listed as "not modelled" and never stops a run.
"""

from __future__ import annotations

import difflib

# group ("" is the core group) → (its versions, its kinds); the versions matter only for the kinds meshlib models
KNOWN_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "": (("v1",), ("Binding", "ComponentStatus", "ConfigMap", "Endpoints", "Event", "LimitRange", "List",
                   "Namespace", "Node", "PersistentVolume", "PersistentVolumeClaim", "Pod", "PodTemplate",
                   "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount")),
    "apps": (("v1",), ("ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet")),
    "networking.istio.io": (("v1alpha3", "v1beta1", "v1"),
                            ("DestinationRule", "EnvoyFilter", "Gateway", "ProxyConfig", "ServiceEntry", "Sidecar",
                             "VirtualService", "WorkloadEntry", "WorkloadGroup")),
    "security.istio.io": (("v1beta1", "v1"), ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")),
    "telemetry.istio.io": (("v1alpha1", "v1"), ("Telemetry",)),
    "extensions.istio.io": (("v1alpha1",), ("WasmPlugin",)),
    "install.istio.io": (("v1alpha1",), ("IstioOperator",)),
    "flagger.app": (("v1beta1",), ("AlertProvider", "Canary", "MetricTemplate")),
}

# kinds without a namespace (everything else not modelled is taken as namespaced, as most CRDs are)
CLUSTER_SCOPED = frozenset((
    "APIService", "CertificateSigningRequest", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
    "ComponentStatus", "CSIDriver", "CSINode", "CustomResourceDefinition", "GatewayClass", "IngressClass",
    "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume", "PriorityClass", "RuntimeClass",
    "StorageClass", "ValidatingAdmissionPolicy", "ValidatingWebhookConfiguration", "VolumeAttachment",
))

# kinds that name no object (kustomize's files): stored under their file and line instead of a name
NAMELESS = frozenset(("Kustomization", "Component"))


def split_api_version(api_version: str) -> tuple[str, str]:
    """`apps/v1` → ("apps", "v1"); `v1` → ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


def group_kinds(api_version: str) -> tuple[str, ...] | None:
    """The kinds of `api_version`'s group when meshlib knows them, else None."""
    group, _ = split_api_version(api_version)
    known = KNOWN_GROUPS.get(group)
    return known[1] if known else None


def suggestion(kind: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(kind, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return f"this apiVersion has: {', '.join(choices)}"
