"""How a report names a workload: the app and its version, as Kiali's versioned-app graph does (`catalog v2`).

The version is the pod's `version` label, else its canonical revision when one was set; a workload with neither
(`webapp`: no version label, Istio's default revision `latest`) is named by its app alone, never `(unknown)`.
"""

from __future__ import annotations

from typing import Protocol

UNKNOWN = "unknown"
DEFAULT_REVISION = "latest"


class PeerLike(Protocol):
    """What the ledger and the metrics know of a pod (`meshlib.local.metrics.Peer` and the like)."""

    workload: str
    app: str
    version: str
    canonical_service: str
    canonical_revision: str


def app_of(peer: PeerLike) -> str:
    for name in (peer.canonical_service, peer.app, peer.workload):
        if name and name != UNKNOWN:
            return name
    return UNKNOWN


def version_of(peer: PeerLike) -> str:
    """The version a reader knows it by; "" when the pod has none."""
    if peer.version and peer.version != UNKNOWN:
        return peer.version
    if peer.canonical_revision and peer.canonical_revision not in (UNKNOWN, DEFAULT_REVISION):
        return peer.canonical_revision
    return ""


def peer_label(peer: PeerLike) -> str:
    """`catalog v2`, `webapp`: the app, then its version when it has one."""
    version = version_of(peer)
    return f"{app_of(peer)} {version}" if version else app_of(peer)


def chain_label(peers: list[PeerLike]) -> str:
    """The pods a request went through, in order: `webapp → catalog v1`; `-` for none."""
    return " → ".join(peer_label(p) for p in peers) or "-"
