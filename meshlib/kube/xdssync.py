"""Whether the running proxies have what istiod sent them after an apply: istiod's `/debug/syncz` (its monitoring
port, 15014), the source `istioctl proxy-status` reads. Pure: parsing and deciding, no I/O.

syncz lists every connected proxy (`pod.namespace`) with, per xDS type, the nonce istiod last sent, the nonce the
proxy last acknowledged, and the error of the last rejection (a NACK: Envoy refused the config). An apply is in
effect at a proxy once istiod pushed to it after the apply and it acknowledged every push; a proxy whose
configuration the apply does not change (meshlib's own translation says which do) need only have nothing pending.

    before = parse_syncz(body_before_apply)
    ...apply...
    lines = unsynced(before, parse_syncz(body_now), must_push={"catalog-v2-7d9f-x2k4p.istioinaction"})
    rejected(parse_syncz(body_now))   # proxies whose Envoy refused istiod's last push, with its reason
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from meshlib.errors import MeshlibError

# xDS type URL tails and the names istioctl proxy-status shows
TYPE_NAMES = {"Cluster": "CDS", "Listener": "LDS", "RouteConfiguration": "RDS", "ClusterLoadAssignment": "EDS",
              "TypedExtensionConfig": "ECDS", "Secret": "SDS"}
# the flat fields of older istiod releases (before the per-type `resources` map), by xDS type name
FLAT = {"CDS": "cluster", "LDS": "listener", "RDS": "route", "EDS": "endpoint", "ECDS": "extensionconfig"}


@dataclass(frozen=True)
class TypeSync:
    sent: str  # the nonce istiod last sent ("" before any push)
    acked: str  # the nonce the proxy last acknowledged
    error: str = ""  # why the proxy refused the last push it refused (istiod keeps it until the next ACK)

    @property
    def pending(self) -> bool:
        return self.sent != self.acked


@dataclass(frozen=True)
class ProxySync:
    proxy: str  # pod.namespace, as istiod names a sidecar or gateway proxy
    types: dict[str, TypeSync]  # CDS, LDS, RDS, EDS, …


def type_name(type_url: str) -> str:
    tail = type_url.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return TYPE_NAMES.get(tail, tail)


def parse_syncz(body: bytes) -> dict[str, ProxySync]:
    """istiod's /debug/syncz answer: proxy id -> what it was sent and acknowledged, per xDS type."""
    try:
        entries = json.loads(body)
    except ValueError:
        raise MeshlibError(f"istiod answered /debug/syncz with something that is not JSON ({body[:80]!r})") from None
    if not isinstance(entries, list):
        raise MeshlibError("istiod answered /debug/syncz with JSON that is not a list of proxies")
    out: dict[str, ProxySync] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("proxy"):
            continue
        types: dict[str, TypeSync] = {}
        for url, status in (entry.get("resources") or {}).items():
            status = status or {}
            types[type_name(url)] = TypeSync(str(status.get("sent") or ""), str(status.get("acked") or ""),
                                             str(status.get("lastError") or ""))
        for name, field in FLAT.items():
            if name not in types and (entry.get(f"{field}_sent") or entry.get(f"{field}_acked")):
                types[name] = TypeSync(str(entry.get(f"{field}_sent") or ""), str(entry.get(f"{field}_acked") or ""))
        out[str(entry["proxy"])] = ProxySync(str(entry["proxy"]), types)
    return out


def rejected(now: dict[str, ProxySync], proxies: Iterable[str]) -> list[str]:
    """A line per proxy (of `proxies`) whose Envoy refused istiod's latest push of some type: it will not take it."""
    lines = []
    for proxy in sorted(proxies):
        sync = now.get(proxy)
        for name, t in sorted((sync.types if sync else {}).items()):
            if t.pending and t.error:
                lines.append(f"{proxy} rejected {name} (nonce {t.sent}): {t.error}")
    return lines


def unsynced(before: dict[str, ProxySync], now: dict[str, ProxySync], must_push: Iterable[str],
             others: Iterable[str] = ()) -> list[str]:
    """A line per proxy not yet in step: one of `must_push` that istiod has not pushed to since `before` (or that is
    not connected), or any of them or of `others` with a push it has not acknowledged. Empty: all in step."""
    lines = []
    must = set(must_push)
    for proxy in sorted(must | set(others)):
        sync = now.get(proxy)
        if sync is None:
            if proxy in must:
                lines.append(f"{proxy}: not connected to istiod")
            continue
        waiting = [f"{name} sent {t.sent or '-'}, acknowledged {t.acked or '-'}"
                   for name, t in sorted(sync.types.items()) if t.pending]
        if waiting:
            lines.append(f"{proxy}: " + "; ".join(waiting))
        elif proxy in must and not pushed_since(before.get(proxy), sync):
            lines.append(f"{proxy}: no push from istiod since the apply")
    return lines


def pushed_since(before: ProxySync | None, now: ProxySync) -> bool:
    """Whether istiod sent the proxy anything since `before` (a proxy it did not know then: it connected since)."""
    if before is None:
        return True
    return any(t.sent != (before.types.get(name) or TypeSync("", "")).sent for name, t in now.types.items())
