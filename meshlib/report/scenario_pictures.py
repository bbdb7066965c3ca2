"""The pictures of one scenario, drawn when it ends: its traffic as a graph, the route table as a diagram, and for
each service whose routes split traffic by weight, the observed split beside the routes' weights.

    for name, svg in scenario_pictures(world):
        attach(name, svg, "svg")

Pictures need Graphviz's `dot` (Debian: graphviz) and matplotlib (the behave extra); where `dot` is missing the
graphs are left out with one line saying why (`PicturesUnavailable`), never a failed scenario.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from meshlib.errors import MeshlibError
from meshlib.report import route_diagram, traffic_graph
from meshlib.report.charts import split_chart
from meshlib.report.names import app_of, version_of

if TYPE_CHECKING:
    from meshlib.dsl.world import Batch, World

GATEWAY_LABEL = "through the ingress gateway"
Picture = tuple[str, str]  # name, SVG


class PicturesUnavailable(MeshlibError):
    """A drawing tool is missing: the message says which and how to install it."""


def _sent(batch: Batch) -> traffic_graph.Sent:
    target = batch.target
    label = target.label if target is not None else ""
    entry = traffic_graph.ENTRY_GATEWAY if label in ("", GATEWAY_LABEL) else label.removeprefix("from ").strip()
    host = (target.host or urlsplit(target.url).hostname or "") if target is not None else ""
    return traffic_graph.Sent(entry, batch.responses, host)


def _observed(batches: Iterable[Batch], app: str) -> Counter[str]:
    """Hops that reached `app`, by version (mirrored copies left out: their answers reached no client)."""
    seen: Counter[str] = Counter()
    for batch in batches:
        for r in batch.responses:
            for hop in r.served_by:
                if app_of(hop.peer) == app:
                    seen[version_of(hop.peer) or hop.peer.workload] += 1
    return seen


def _split_pictures(world: World, routes: route_diagram.RouteTable) -> list[Picture]:
    out = []
    services = {d.host.split(".")[0] for rules in routes.entries.values() for _, rule in rules
                for d in rule.destinations if not d.mirror}
    for service in sorted(services):
        weights = routes.weights(service)
        if len(weights) < 2:
            continue
        subsets = {d.subset: dict(d.labels).get("version", d.subset) for rules in routes.entries.values()
                   for _, rule in rules for d in rule.destinations if d.host.split(".")[0] == service}
        expected = {subsets.get(subset, subset): share for subset, share in weights.items()}
        observed = _observed(world.batches, service)
        if sum(observed.values()):
            out.append((f"picture: {service} split, observed vs routes",
                        split_chart(observed, expected, f"{service}: observed split vs the routes' weights")))
    return out


def scenario_pictures(world: World) -> list[Picture]:
    """Every picture of this scenario (none for a scenario that applied nothing and sent nothing)."""
    import graphviz

    pictures: list[Picture] = []
    try:
        graph = traffic_graph.traffic_of(_sent(b) for b in world.batches)
        if not graph.empty:
            requests = sum(len(b.responses) for b in world.batches)
            pictures.append(("picture: traffic graph", traffic_graph.draw(
                graph, f"traffic of this scenario: {requests} requests in {len(world.batches)} batches")))
        routes = route_diagram.route_table(world.backend.store)
        if not routes.empty:
            pictures.append(("picture: route table", route_diagram.draw(routes, "routes as applied")))
    except graphviz.ExecutableNotFound:
        raise PicturesUnavailable("the traffic graph and route diagram need Graphviz's dot: apt-get install "
                                  "graphviz (Debian, Ubuntu) or brew install graphviz") from None
    if world.backend.store.of_kind("Canary"):  # Flagger moves the weights: its own chart shows them over time
        return pictures
    return pictures + _split_pictures(world, routes)
