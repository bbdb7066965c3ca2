"""Sending traffic: batches through the ingress gateway or from inside the mesh, and background traffic."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from meshlib.dsl import hidden, metrics
from meshlib.dsl.world import World
from meshlib.expect import table
from meshlib.traffic import BackgroundTraffic, Plan, Response, Target, send

SAMPLE = 20


def _run(world: World, target: Target, plan: Plan) -> list[Response]:
    metrics.traffic_starts(world)
    world.sent_at = datetime.now(UTC)
    world.last_target = target
    echoed_before = world.backend.echoed_hosts()
    responses = send(target, plan)
    title = f"{len(responses)} requests {target.label}"
    _record(world, responses, title)
    for host, count in sorted(world.backend.echoed_hosts().items()):
        if count > echoed_before.get(host, 0):
            world.note(f"{title}: {count - echoed_before.get(host, 0)} reached the external host {host}, which "
                       "meshlib's echo stand-in answered, not a copy of that host: declare one under "
                       "externalHosts in the mesh config (-D mesh_config=FILE) to check what it answers")
    return responses


def _record(world: World, responses: list[Response], title: str) -> list[Response]:
    """Tie each response to the pods that served it (ledger by x-request-id), keep them, attach a sample."""
    world.backend.settle()
    for r in responses:
        served = world.backend.served(r.request_id)
        r.served_by = [s for s in served if not s.mirrored]
        r.mirror_copies = [s for s in served if s.mirrored]
    world.responses = responses
    what = hidden.of(responses)
    world.attach(title, "\n".join([batch_summary(responses), *what.lines(), "", sample_table(responses)]), "text")
    for line in what.lines():
        world.note(f"{title}: {line}")
    return responses


def batch_summary(responses: list[Response]) -> str:
    """Counts by status and by the versions that served, with latency percentiles."""
    if not responses:
        return ""
    by = Counter((r.status or "no response", served_text(r)) for r in responses)
    elapsed = sorted(r.elapsed_ms for r in responses)

    def pct(q: float) -> float:
        return elapsed[min(len(elapsed) - 1, int(q * len(elapsed)))]

    rows = [(status, served, n) for (status, served), n in by.most_common()]
    return (table(("status", "served by", "requests"), rows)
            + f"\n  latency p50 {pct(0.5):.1f} ms, p90 {pct(0.9):.1f} ms, max {elapsed[-1]:.1f} ms")


def sample_table(responses: list[Response], limit: int = SAMPLE) -> str:
    rows = [(r.request_id[:8], r.status or f"no response ({r.error})", served_text(r), f"{r.elapsed_ms:.1f}")
            for r in responses[:limit]]
    more = f"\n  … and {len(responses) - limit} more" if len(responses) > limit else ""
    return table(("x-request-id", "status", "served by", "ms"), rows) + more


def served_text(r: Response) -> str:
    return " → ".join(f"{s.peer.workload} ({s.peer.canonical_revision})" for s in r.served_by) or "-"


def set_concurrency(world: World, count: int) -> None:
    """How many requests later batches keep in flight; refused at once when it cannot send anything."""
    Plan(count=1, concurrency=count)  # the plan's own bounds, checked where the user wrote them
    world.concurrency = count


def through_gateway(world: World, count: int, path: str, host: str, method: str = "GET",
                    body: str | None = None) -> list[Response]:
    plan = Plan(count=count, concurrency=world.concurrency, method=method, headers=dict(world.headers), body=body,
                rotate=world.rotate)
    return _run(world, world.backend.gateway(host, path), plan)


def for_duration(world: World, seconds: float, path: str, host: str, rate: float) -> list[Response]:
    plan = Plan(seconds=seconds, rate=rate, concurrency=world.concurrency, headers=dict(world.headers),
                rotate=world.rotate)
    return _run(world, world.backend.gateway(host, path), plan)


def from_workload(world: World, count: int, workload: str, url: str) -> list[Response]:
    plan = Plan(count=count, concurrency=world.concurrency, headers=dict(world.headers), rotate=world.rotate)
    return _run(world, world.backend.from_workload(workload, world.namespace, url), plan)


def start_background(world: World, rate: float, path: str, host: str) -> BackgroundTraffic:
    key = f"{host}{path}"
    if key in world.background:
        world.background[key].stop()
    metrics.traffic_starts(world)
    traffic = BackgroundTraffic(world.backend.gateway(host, path), rate, world.headers).start()
    world.background[key] = traffic
    return traffic


def stop_background(world: World) -> list[Response]:
    responses = [r for t in world.background.values() for r in t.stop()]
    world.background.clear()
    world.finished_background = responses
    return _record(world, responses, f"background traffic: {len(responses)} requests")
