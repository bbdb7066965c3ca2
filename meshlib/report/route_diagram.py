"""The route table as a diagram: where a request enters (a Gateway, or `mesh` for the sidecars), which
VirtualService and rule takes it, and the subsets it goes to with their weights; mirrors dashed. Read from the
applied manifests (the store), drawn with Graphviz.

    routes = route_table(store)          # pure: from the VirtualServices and DestinationRules
    svg = draw(routes, "routes")         # needs Graphviz's `dot`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.report.tables import number

MESH = "mesh"


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str = ""
    weight: float | None = None  # None: the only destination of its rule
    mirror: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # the subset's labels (DestinationRule)

    @property
    def name(self) -> str:
        return f"{self.host} / {self.subset}" if self.subset else self.host


@dataclass(frozen=True)
class Rule:
    virtual_service: str
    index: int
    match: str  # "" for every request
    destinations: tuple[Destination, ...]


@dataclass
class RouteTable:
    """Entry points (gateway names) → the hosts they accept → rules → destinations."""

    entries: dict[str, list[tuple[str, Rule]]] = field(default_factory=dict)  # entry → [(hosts, rule)]

    @property
    def empty(self) -> bool:
        return not self.entries

    def weights(self, host_prefix: str) -> dict[str, float]:
        """Weighted destinations of services whose host starts with `host_prefix`: subset → share (0..1)."""
        out: dict[str, float] = {}
        for rules in self.entries.values():
            for _, rule in rules:
                dests = [d for d in rule.destinations if not d.mirror and d.host.split(".")[0] == host_prefix]
                total = sum(d.weight if d.weight is not None else 100 for d in dests)
                if len(dests) > 1 and total and not rule.match:
                    for d in dests:
                        out[d.subset or d.host] = (d.weight or 0) / total
        return out


def _match_text(match: Any) -> str:
    if not match:
        return ""
    parts = []
    for m in match if isinstance(match, list) else [match]:
        if not isinstance(m, Mapping):
            continue
        for key, value in m.items():
            if key == "headers" and isinstance(value, Mapping):
                for header, cond in value.items():
                    parts.append(f"{header} {_condition(cond)}")
            elif key in ("uri", "authority", "method", "scheme") and isinstance(value, Mapping):
                parts.append(f"{key} {_condition(value)}")
            elif key == "sourceLabels" and isinstance(value, Mapping):
                parts.append("from " + ",".join(f"{k}={v}" for k, v in value.items()))
            elif key == "queryParams" and isinstance(value, Mapping):
                parts += [f"?{q} {_condition(c)}" for q, c in value.items()]
            elif key not in ("name", "ignoreUriCase"):
                parts.append(f"{key}")
    return " and ".join(parts)


def _condition(cond: Any) -> str:
    if isinstance(cond, Mapping) and cond:
        kind, value = next(iter(cond.items()))
        return f"{kind} {value!r}" if kind != "exact" else f"= {value!r}"
    return "present"


def _subset_labels(store: Any) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    out: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    for dr in store.of_kind("DestinationRule"):
        host = str(dr.spec.get("host", "")).split(".")[0]
        for subset in dr.spec.get("subsets") or []:
            if isinstance(subset, Mapping) and subset.get("name"):
                out[(host, str(subset["name"]))] = tuple(sorted((subset.get("labels") or {}).items()))
    return out


def _destination(route: Mapping[str, Any], labels: Mapping[tuple[str, str], tuple[tuple[str, str], ...]],
                 mirror: bool = False, weight: float | None = None) -> Destination:
    dest = route.get("destination", route) if not mirror else route
    host = str(dest.get("host", "?"))
    subset = str(dest.get("subset", "") or "")
    return Destination(host, subset, weight, mirror, labels.get((host.split(".")[0], subset), ()))


def _rules(vs: Any, labels: Mapping[tuple[str, str], tuple[tuple[str, str], ...]]) -> Iterable[Rule]:
    for protocol in ("http", "tls", "tcp"):
        for i, rule in enumerate(vs.spec.get(protocol) or []):
            if not isinstance(rule, Mapping):
                continue
            routes = [r for r in rule.get("route") or [] if isinstance(r, Mapping)]
            dests = [_destination(r, labels, weight=r.get("weight")) for r in routes]
            mirrors = [m for m in [rule.get("mirror"), *[x.get("destination") for x in rule.get("mirrors") or []
                                                       if isinstance(x, Mapping)]] if isinstance(m, Mapping)]
            percent = rule.get("mirrorPercentage", {}).get("value") if isinstance(rule.get("mirrorPercentage"),
                                                                                  Mapping) else None
            dests += [_destination(m, labels, mirror=True, weight=percent if percent is not None else 100)
                      for m in mirrors]
            if rule.get("redirect") or rule.get("directResponse"):
                dests.append(Destination("redirect" if rule.get("redirect") else "direct response"))
            fault = rule.get("fault")
            match = _match_text(rule.get("match"))
            if isinstance(fault, Mapping):
                match = " and ".join(filter(None, [match, "fault " + ", ".join(fault)]))
            yield Rule(vs.name, i, match, tuple(dests))


def route_table(store: Any) -> RouteTable:
    table = RouteTable()
    labels = _subset_labels(store)
    for vs in store.of_kind("VirtualService"):
        hosts = ", ".join(str(h) for h in vs.spec.get("hosts") or [])
        for gateway in vs.spec.get("gateways") or [MESH]:
            entry = str(gateway).rsplit("/", 1)[-1]
            for rule in _rules(vs, labels):
                table.entries.setdefault(entry, []).append((hosts, rule))
    return table


def _weight_text(d: Destination) -> str:
    if d.mirror:
        return f"mirror {number(d.weight or 100)}%"
    return f"{number(d.weight)}%" if d.weight is not None else "all"


def draw(table: RouteTable, title: str) -> str:
    import graphviz

    dot = graphviz.Digraph("routes", graph_attr={
        "rankdir": "LR", "label": title, "labelloc": "t", "fontname": "DejaVu Sans", "fontsize": "14",
        "nodesep": "0.3", "ranksep": "0.8", "bgcolor": "white", "pad": "0.2"},
        node_attr={"fontname": "DejaVu Sans", "fontsize": "11"}, edge_attr={"fontname": "DejaVu Sans",
                                                                             "fontsize": "10"})
    linked: set[str] = set()
    ids: dict[str, str] = {}

    def node_id(key: str) -> str:  # plain ids: Graphviz reads `a:b` as node a, port b
        return ids.setdefault(key, f"n{len(ids)}")

    for entry, rules in table.entries.items():
        entry_id = node_id(f"entry {entry}")
        text = "sidecars (mesh)" if entry == MESH else f"gateway {entry}"
        dot.node(entry_id, text, shape="hexagon" if entry != MESH else "oval", style="filled",
                 fillcolor="#bbdefb" if entry != MESH else "#eceff1")
        for hosts, rule in rules:
            vs_id = node_id(f"vs {entry} {rule.virtual_service}")
            dot.node(vs_id, f"VirtualService {rule.virtual_service}\n{hosts}", shape="box", style="rounded,filled",
                     fillcolor="#fff8e1")
            if vs_id not in linked:
                linked.add(vs_id)
                dot.edge(entry_id, vs_id)
            rule_id = node_id(f"rule {entry} {rule.virtual_service} {rule.index}")
            dot.node(rule_id, f"rule {rule.index}\n{rule.match or 'every request'}", shape="note",
                     style="filled", fillcolor="#f5f5f5")
            dot.edge(vs_id, rule_id, arrowhead="none")
            for d in rule.destinations:
                dest_id = node_id(f"dest {d.name}")
                labels = "\n" + ", ".join(f"{k}={v}" for k, v in d.labels) if d.labels else ""
                dot.node(dest_id, f"{d.name}{labels}", shape="box", style="rounded,filled", fillcolor="#e8f5e9")
                dot.edge(rule_id, dest_id, label=_weight_text(d), style="dashed" if d.mirror else "solid",
                         color="#6a1b9a" if d.mirror else "#37474f", fontcolor="#6a1b9a" if d.mirror else "#37474f",
                         penwidth=str(1 + 2.5 * (d.weight or 100) / 100) if not d.mirror else "1.2")
    return dot.pipe(format="svg").decode()
