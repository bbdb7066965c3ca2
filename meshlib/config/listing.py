"""`meshlib get`: which stored resources a name like `vs`, `hpa`, `roles` or `all` means, as rows or as data.

Every stored kind is listed, the ones meshlib does not model too (they are marked so), the way `kubectl get`
lists what the API server keeps.
"""

from __future__ import annotations

from typing import Any

from meshlib.config.apis import KNOWN_GROUPS
from meshlib.config.kinds import KINDS, Resource
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError

SHORT_NAMES = {
    "vs": "VirtualService", "dr": "DestinationRule", "gw": "Gateway", "se": "ServiceEntry", "svc": "Service",
    "deploy": "Deployment", "cm": "ConfigMap", "ns": "Namespace", "sa": "ServiceAccount",
    "hpa": "HorizontalPodAutoscaler", "crd": "CustomResourceDefinition", "pdb": "PodDisruptionBudget",
    "ing": "Ingress", "netpol": "NetworkPolicy", "sts": "StatefulSet", "ds": "DaemonSet", "rs": "ReplicaSet",
    "pvc": "PersistentVolumeClaim", "pv": "PersistentVolume", "ap": "AuthorizationPolicy",
    "pa": "PeerAuthentication", "ra": "RequestAuthentication",
}
ALL = "all"


def _names_of(kind: str) -> set[str]:
    low = kind.lower()
    names = {low, low + "s", low + "es"}
    if low.endswith("y"):
        names.add(low[:-1] + "ies")
    return names


def kind_for(what: str, store: ConfigStore) -> str | None:
    """The kind `what` names (`vs`, `virtualservices`, `HorizontalPodAutoscaler`, `hpa`); None for `all`."""
    low = what.strip().lower()
    if low == ALL:
        return None
    if low in SHORT_NAMES:
        return SHORT_NAMES[low]
    known = {k for _, group_kinds in KNOWN_GROUPS.values() for k in group_kinds}
    for kind in sorted({r.kind for r in store} | set(KINDS) | set(SHORT_NAMES.values()) | known):
        if low in _names_of(kind):
            return kind
    raise MeshlibError(f"unknown resource type {what!r}: try pods, all, svc, deploy, vs, dr, gw, se, canary, "
                       "or the name of a kind that was applied (e.g. hpa, roles)")


def resources(store: ConfigStore, what: str, namespace: str) -> list[Resource]:
    """The stored resources `what` names in `namespace` (cluster-scoped ones whatever the namespace)."""
    kind = kind_for(what, store)
    return [r for r in store if (kind is None or r.kind == kind) and r.namespace in (namespace, "")]


def as_data(found: list[Resource]) -> list[dict[str, Any]]:
    """Machine-readable rows (for `-o json` and `-o yaml`)."""
    return [{"kind": r.kind, "apiVersion": r.api_version, "namespace": r.namespace, "name": r.name,
             "modelled": r.modelled, "source": str(r.source)} for r in found]


def as_rows(found: list[Resource], what: str) -> list[tuple[str, ...]]:
    """kubectl-like table rows, header first; `all` adds the kind and whether meshlib models it."""
    if what.strip().lower() == ALL:
        rows: list[tuple[str, ...]] = [("KIND", "NAME", "MODELLED", "SOURCE")]
        rows += [(r.kind, r.name, "yes" if r.modelled else "no", str(r.source)) for r in found]
        return rows
    return [("NAME", "SOURCE")] + [(r.name, str(r.source) + ("" if r.modelled else "  (not modelled)"))
                                   for r in found]


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def not_modelled_line(found: list[Resource], shown: int = 10) -> str | None:
    """One line naming the resources meshlib stores but does not translate, or None."""
    rest = [r for r in found if not r.modelled and r.kind != "EnvoyFilter"]  # EnvoyFilters are applied (xds)
    if not rest:
        return None
    names = [f"{r.kind}/{r.name}" for r in rest]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"not modelled: {', '.join(names[:shown])}{more} (stored and listed; meshlib does not translate "
            "these kinds, so they change no proxy's config)")
