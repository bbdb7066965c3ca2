"""Istio version profiles: the behaviour switches that differ between releases (istio-semantics.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.errors import MeshlibError

DEFAULT_VERSION = "1.17"  # the walkthrough's release (istioctl proxy-status shows 1.17.8)
SUPPORTED = ("1.13", "1.14", "1.15", "1.16", "1.17", "1.18", "1.19", "1.20", "1.21", "1.22", "1.23",
             "1.24", "1.25", "1.26", "1.27", "1.28")


@dataclass(frozen=True)
class IstioProfile:
    """Knobs derived from an Istio minor version."""

    version: str
    weights_must_sum_100: bool
    emit_total_weight: bool
    port_domain_variants: bool
    absolute_fqdn_domain: bool
    default_retriable_503: bool
    inbound_passthrough_clusters: tuple[str, ...]
    shadow_host_suffix: bool
    default_lb_policy: str

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])


def profile_for(version: str | None = None) -> IstioProfile:
    """The profile for `version` (`1.17`, `1.17.8` or `istio-1.24`); a clear error for unknown versions."""
    raw = (version or DEFAULT_VERSION).strip().lower().removeprefix("istio-").removeprefix("v")
    parts = raw.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise MeshlibError(f"unknown Istio version {version!r}: write it as 1.17, 1.24.2 …")
    minor_version = f"{int(parts[0])}.{int(parts[1])}"
    if minor_version not in SUPPORTED:
        raise MeshlibError(f"Istio {minor_version} is not modelled; supported: {SUPPORTED[0]}–{SUPPORTED[-1]}")
    m = int(parts[1])
    return IstioProfile(
        version=minor_version,
        weights_must_sum_100=m <= 14,
        emit_total_weight=15 <= m <= 17,
        port_domain_variants=m <= 15,
        absolute_fqdn_domain=m >= 27,
        default_retriable_503=m <= 23,
        inbound_passthrough_clusters=("InboundPassthroughCluster",) if m >= 23
        else ("InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6"),
        shadow_host_suffix=m <= 27,
        default_lb_policy="LEAST_REQUEST" if m >= 14 else "ROUND_ROBIN",
    )
