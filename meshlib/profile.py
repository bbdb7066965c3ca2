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
    missing_header_as_empty: bool = True  # withoutHeaders string matchers match an absent header (1.22+)
    query_prefix_match: bool = True  # queryParams `prefix` matches a prefix (1.18+); before, only presence
    single_weight_collapses: bool = False  # one non-zero weight among several → route.cluster (≤1.18)
    mirrors_list: bool = True  # `mirrors` (a list) is translated (1.20+; in the API from 1.19)
    retry_host_and_backoff: bool = True  # retries.retryIgnorePreviousHosts and retries.backoff (1.26+)
    hash_drops_previous_hosts: bool = True  # consistentHash routes retry without previous_hosts (1.23+)
    route_config_api: str = "v1"  # the VirtualService GVK in route metadata: v1alpha3 until 1.23

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
        # route/route.go: TreatMissingHeaderAsEmpty on inverted matchers from 1.22 (istio#49540)
        missing_header_as_empty=m >= 22,
        # route/route.go translateQueryParamMatch: prefix became a real prefix match in 1.18 (istio#43736)
        query_prefix_match=m >= 18,
        # route/route.go translateRoute: weightedClusters for several destinations from 1.19
        single_weight_collapses=m <= 18,
        # route/route.go: HTTPRoute.mirrors translated from 1.20 (istio#45944)
        mirrors_list=m >= 20,
        # retry/retry.go ConvertPolicy: retryIgnorePreviousHosts and backoff from 1.26
        retry_host_and_backoff=m >= 26,
        # retry/retry.go ConvertPolicy(policy, hashPolicy): no previous_hosts predicate with a hash policy, 1.23+
        hash_drops_previous_hosts=m >= 23,
        # route/route.go getSourceMetadata (istio config path): gvk.VirtualService is v1 from 1.24
        route_config_api="v1" if m >= 24 else "v1alpha3",
    )
