"""What a proxy decided for one request, in terms a person can read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class MirrorDecision:
    cluster: str
    percent: float  # 0–100
    fired: bool  # did this request's roll send a copy?
    shadow_suffix: bool  # Host gets `-shadow`


@dataclass(frozen=True)
class FaultDecision:
    delay_seconds: float = 0.0
    abort_status: int | None = None


@dataclass
class Decision:
    """The outcome of route selection: a cluster to forward to, or a local reply."""

    proxy: str
    route_config: str | None
    virtual_host: str | None = None
    route_index: int | None = None
    route: Json | None = None
    cluster: str | None = None
    weighted: list[tuple[str, int]] = field(default_factory=list)
    mirrors: list[MirrorDecision] = field(default_factory=list)
    fault: FaultDecision | None = None
    timeout_seconds: float = 0.0  # 0 = disabled
    retry_policy: Json | None = None
    host_rewrite: str | None = None
    path_rewrite: str | None = None
    request_headers_to_add: list[Json] = field(default_factory=list)
    request_headers_to_remove: list[str] = field(default_factory=list)
    response_headers_to_add: list[Json] = field(default_factory=list)
    # local replies: set when the proxy answers itself
    status: int | None = None
    body: str = ""
    flags: str = "-"
    details: str = "via_upstream"
    redirect: Json | None = None

    @property
    def route_name(self) -> str | None:
        return (self.route or {}).get("name")

    @property
    def forwards(self) -> bool:
        return self.status is None and self.cluster is not None

    @property
    def virtual_service(self) -> str | None:
        """`namespace/name` of the VirtualService behind the route, from Istio's route metadata."""
        path = ((((self.route or {}).get("metadata") or {}).get("filterMetadata") or {}).get("istio") or {}).get(
            "config")
        if not path:
            return None
        parts = path.strip("/").split("/")
        return f"{parts[4]}/{parts[6]}" if len(parts) >= 7 else path
