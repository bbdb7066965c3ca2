"""A Flagger Canary's history on a cluster: its status as Flagger writes it, one point per change, from the API's
watch (`meshlib.kube.cluster.Following`), and the weights of the VirtualService Flagger manages beside it.

Flagger writes the Canary's status when something changes (phase, canaryWeight, failedChecks, iterations; each write
also moves `lastTransitionTime`), not at every analysis tick: a tick that changes nothing leaves no point. The points
have the keys of the embedded mesh's history (`meshlib.local.canary`), so the same steps, table and chart read them:
`time` / `started` / `finished` are when the write was seen (wall clock: a cluster runs at time_scale 1), and
`phase`, `canaryWeight`, `failedChecks`, `iterations` and `conditions` are Flagger's own. What the status does not
hold is not made up: a point has no `metrics` (the values Flagger's checks read stay in its log and Prometheus), no
`queries`, and route weights only when Flagger's VirtualService could be read.

    history = CanaryHistory(read_routes)
    history.observe(canary_object)          # each state the watch delivers (None once deleted)
    history.points()                         # [{time, started, phase, canaryWeight, ...}, ...]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STATUS_KEYS = ("phase", "canaryWeight", "failedChecks", "iterations", "lastTransitionTime", "conditions")
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Routes:
    """The weights Flagger set on its VirtualService's route to the primary and the canary, and whether the canary
    gets a mirrored copy."""

    primary: int
    canary: int
    mirrored: bool


def service_name(canary: dict[str, Any]) -> str:
    """The service Flagger routes for a Canary: `spec.service.name`, else the target's name (Flagger's rule); its
    VirtualService has that name."""
    spec = canary.get("spec") or {}
    return str((spec.get("service") or {}).get("name") or (spec.get("targetRef") or {}).get("name") or "")


def _host_is(destination: dict[str, Any], name: str) -> bool:
    host = str(((destination.get("destination") or {}).get("host")) or "")
    return host == name or host.startswith(name + ".")


def flagger_routes(virtual_service: dict[str, Any] | None, service: str) -> Routes | None:
    """The weights of the first HTTP route of Flagger's VirtualService that goes to both `<service>-primary` and
    `<service>-canary` (with a match list, Flagger puts the weighted route first and a primary-only default after);
    None when there is none."""
    if not virtual_service:
        return None
    for http in (virtual_service.get("spec") or {}).get("http") or []:
        route = http.get("route") or []
        primary = next((d for d in route if _host_is(d, f"{service}-primary")), None)
        canary = next((d for d in route if _host_is(d, f"{service}-canary")), None)
        if primary is not None and canary is not None:
            mirror = http.get("mirror") or {}
            return Routes(int(primary.get("weight") or 0), int(canary.get("weight") or 0),
                          bool(mirror) and str(mirror.get("host") or "").startswith(f"{service}-canary"))
    return None


def point(status: dict[str, Any], seen_at: float, routes: Routes | None) -> dict[str, Any] | None:
    """One history point from a Canary's status as Flagger wrote it; None before Flagger has given it a phase."""
    phase = status.get("phase")
    if not phase:
        return None
    out: dict[str, Any] = {
        "time": seen_at, "started": seen_at, "finished": seen_at, "phase": str(phase),
        "canaryWeight": int(status.get("canaryWeight") or 0), "failedChecks": int(status.get("failedChecks") or 0),
        "iterations": int(status.get("iterations") or 0),
        "lastTransitionTime": status.get("lastTransitionTime"),
        "conditions": [dict(c) for c in status.get("conditions") or []],
        "metrics": {},
    }
    if routes is not None:
        out.update(primaryWeight=routes.primary, routeCanaryWeight=routes.canary, mirrored=routes.mirrored)
    return out


class CanaryHistory:
    """The points of one Canary, in the order its status was seen to change. Thread-safe: the watch's thread
    observes, the steps read."""

    def __init__(self, read_routes: Callable[[dict[str, Any]], Routes | None] | None = None,
                 clock: Callable[[], float] = time.time, limit: int = MAX_POINTS) -> None:
        self._read_routes = read_routes
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._points: list[dict[str, Any]] = []
        self._last: tuple[Any, ...] | None = None
        self.exists = False

    def observe(self, canary: dict[str, Any] | None) -> None:
        """A state of the Canary (None: deleted). A status that differs from the last one seen adds a point."""
        if canary is None:
            self.exists = False
            return
        self.exists = True
        status = canary.get("status") or {}
        key = tuple(repr(status.get(k)) for k in STATUS_KEYS)
        with self._lock:
            if key == self._last:
                return
        new = None
        if status.get("phase"):
            routes = self._read_routes(canary) if self._read_routes is not None else None
            new = point(status, self._clock(), routes)
        with self._lock:
            self._last = key
            if new is not None:
                self._points = [*self._points[-(self._limit - 1):], new]

    def points(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._points]
