"""A scenario's traffic as Kiali draws it: workloads and versions as nodes, edges with request counts and error rates,
mirrored copies dashed. Built from what the scenario itself sent and the ledger's answer for each request (which
pods served it, which got a mirrored copy), drawn with Graphviz.

    graph = traffic_of([Sent("ingress gateway", responses)])
    svg = draw(graph, "traffic of this scenario")       # needs Graphviz's `dot` (Debian: graphviz)

A hop's caller is the nearest earlier pod of the request that belongs to another app (a retry to a second pod of
the same app keeps the caller); the first hop's caller is where the batch entered. A mirrored copy comes from the
caller of the app it copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshlib.report.names import app_of, peer_label

if TYPE_CHECKING:
    from meshlib.traffic import Response

CLIENTS = "clients"
GATEWAY = "istio-ingressgateway"
ENTRY_GATEWAY = "ingress gateway"
HEALTHY, DEGRADED, FAILING = "#2e7d32", "#ef6c00", "#c62828"
APP_COLOURS = ("#e3f2fd", "#f3e5f5", "#e8f5e9", "#fff8e1", "#fce4ec", "#e0f7fa", "#ede7f6", "#f1f8e9")


@dataclass(frozen=True)
class Sent:
    """One batch: where it entered the mesh (`ingress gateway` or the workload it left from), what came back, and
    the host it was addressed to (the node for requests no pod of the mesh answered, e.g. an external host)."""

    entry: str
    responses: Sequence[Response]
    host: str = ""


@dataclass
class Edge:
    source: str
    target: str
    mirrored: bool = False
    requests: int = 0
    errors: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class TrafficGraph:
    """Nodes by label with their app (None: not a workload of the mesh), and edges in first-seen order."""

    nodes: dict[str, str | None] = field(default_factory=dict)
    edges: dict[tuple[str, str, bool], Edge] = field(default_factory=dict)

    def node(self, label: str, app: str | None = None) -> str:
        self.nodes.setdefault(label, app)
        return label

    def count(self, source: str, target: str, failed: bool, mirrored: bool = False) -> None:
        self.nodes.setdefault(source, None)
        self.nodes.setdefault(target, None)
        edge = self.edges.setdefault((source, target, mirrored), Edge(source, target, mirrored))
        edge.requests += 1
        edge.errors += failed

    @property
    def empty(self) -> bool:
        return not self.edges


def _failed(status: int) -> bool:
    return status == 0 or status >= 500


def _caller(chain: Sequence[Any], i: int, entry: str) -> str:
    app = app_of(chain[i].peer)
    for j in range(i - 1, -1, -1):
        if app_of(chain[j].peer) != app:
            return peer_label(chain[j].peer)
    return entry


def _add_response(graph: TrafficGraph, entry: str, response: Response, host: str) -> None:
    chain = list(response.served_by)
    for i, hop in enumerate(chain):
        target = graph.node(peer_label(hop.peer), app_of(hop.peer))
        graph.count(_caller(chain, i, entry), target, _failed(hop.status))
    if not chain and entry != GATEWAY:  # answered by no pod of the mesh: an external host, a local reply
        graph.count(entry, graph.node(host or "no upstream"), _failed(response.status))
    for copy in response.mirror_copies:
        app = app_of(copy.peer)
        copied = next((i for i, hop in enumerate(chain) if app_of(hop.peer) == app), None)
        if copied is not None:
            source = _caller(chain, copied, entry)
        else:
            before = [hop for hop in chain if hop.started <= copy.started]
            source = peer_label(before[-1].peer) if before else entry
        graph.count(source, graph.node(peer_label(copy.peer), app), _failed(copy.status), mirrored=True)


def traffic_of(batches: Iterable[Sent]) -> TrafficGraph:
    graph = TrafficGraph()
    for batch in batches:
        if batch.entry == ENTRY_GATEWAY:
            graph.node(CLIENTS)
            entry = graph.node(GATEWAY)
            for r in batch.responses:
                graph.count(CLIENTS, GATEWAY, _failed(r.status))
        else:
            entry = graph.node(batch.entry, batch.entry)
        for r in batch.responses:
            _add_response(graph, entry, r, batch.host)
    return graph


def _colour(edge: Edge) -> str:
    if edge.errors == 0:
        return HEALTHY
    return FAILING if edge.error_rate >= 0.05 else DEGRADED


def edge_label(edge: Edge) -> str:
    what = "mirrored" if edge.mirrored else "req"
    rate = f"{100 * edge.error_rate:.1f}% errors" if edge.errors else "no errors"
    return f"{edge.requests} {what}\n{rate}"


def draw(graph: TrafficGraph, title: str) -> str:
    """The graph as SVG: one box per app holding its versions, the gateway and clients on the left."""
    import graphviz

    dot = graphviz.Digraph("traffic", graph_attr={
        "rankdir": "LR", "label": title, "labelloc": "t", "fontname": "DejaVu Sans", "fontsize": "14",
        "nodesep": "0.35", "ranksep": "0.9", "bgcolor": "white", "pad": "0.2"},
        node_attr={"fontname": "DejaVu Sans", "fontsize": "11"}, edge_attr={"fontname": "DejaVu Sans",
                                                                             "fontsize": "10"})
    ids = {label: f"n{i}" for i, label in enumerate(graph.nodes)}  # plain ids: Graphviz reads `a:b` as a port
    apps: dict[str, list[str]] = {}
    for label, app in graph.nodes.items():
        if label == CLIENTS:
            dot.node(ids[label], "clients", shape="oval", style="filled", fillcolor="#eceff1")
        elif label == GATEWAY:
            dot.node(ids[label], "ingress gateway", shape="hexagon", style="filled", fillcolor="#bbdefb")
        elif app is None:
            dot.node(ids[label], label, shape="box", style="dashed,rounded")
        else:
            apps.setdefault(app, []).append(label)
    for n, (app, labels) in enumerate(apps.items()):
        with dot.subgraph(name=f"cluster_{n}") as box:
            box.attr(label=app, style="rounded,filled", fillcolor=APP_COLOURS[n % len(APP_COLOURS)],
                     color="#90a4ae", fontsize="12")
            for label in labels:
                version = label[len(app):].strip() if label.startswith(app) else label
                box.node(ids[label], version or app, shape="box", style="rounded,filled", fillcolor="white")
    for edge in graph.edges.values():
        colour = _colour(edge)
        dot.edge(ids[edge.source], ids[edge.target], label=edge_label(edge), color=colour, fontcolor=colour,
                 style="dashed" if edge.mirrored else "solid", penwidth="1.6")
    return dot.pipe(format="svg").decode()
