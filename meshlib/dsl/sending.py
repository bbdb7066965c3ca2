"""Sending traffic: batches through the ingress gateway or from inside the mesh, and background traffic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from meshlib.dsl import hidden, metrics
from meshlib.dsl.world import World
from meshlib.errors import InputError
from meshlib.expect import table
from meshlib.report.batch import batch_document
from meshlib.report.names import chain_label
from meshlib.traffic import BackgroundTraffic, Plan, Response, Target, send

SAMPLE = 20


def _run(world: World, target: Target, plan: Plan) -> list[Response]:
    metrics.traffic_starts(world)
    world.sent_at = datetime.now(UTC)
    world.last_target = target
    echoed_before = world.backend.echoed_hosts()
    responses = send(target, plan)
    title = f"{len(responses)} requests {target.label}"
    _record(world, target, responses, title)
    _note_echoes(world, title, echoed_before)
    return responses


def until_decided(world: World, path: str, host: str, batch: int, cap: int,
                  decided: Callable[[list[Response]], bool]) -> list[Response]:
    """Send batches of `batch` requests through the ingress gateway until `decided` (called after each batch with
    every response so far, each tied to the pods that served it) returns True, or `cap` requests were sent.

    The batches together become the last batch later checks look at; the evidence says how many batches it took.
    """
    if not 0 < batch <= cap:
        raise InputError(f"batches of {batch} with a cap of {cap} requests: a batch must be 1 to the cap")
    target = world.backend.gateway(host, path)
    metrics.traffic_starts(world)
    world.sent_at = datetime.now(UTC)
    world.last_target = target
    echoed_before = world.backend.echoed_hosts()
    responses: list[Response] = []
    unsettled: list[str] = []
    batches = 0
    while len(responses) < cap:
        plan = Plan(count=min(batch, cap - len(responses)), concurrency=world.concurrency,
                    headers=dict(world.headers), rotate=world.rotate)
        got = send(target, plan)
        unsettled += _tie(world, got)
        responses.extend(got)
        batches += 1
        if decided(responses):
            break
    title = (f"{len(responses)} requests {target.label}, in {batches} batch{'es' if batches != 1 else ''} "
             "until the claim was decided")
    _keep(world, target, responses, title, tuple(dict.fromkeys(unsettled)))
    _note_echoes(world, title, echoed_before)
    return responses


def _note_echoes(world: World, title: str, echoed_before: dict[str, int]) -> None:
    for host, count in sorted(world.backend.echoed_hosts().items()):
        if count > echoed_before.get(host, 0):
            world.note(f"{title}: {count - echoed_before.get(host, 0)} reached the external host {host}, which "
                       "meshlib's echo stand-in answered, not a copy of that host: declare one under "
                       "externalHosts in the mesh config (-D mesh_config=FILE) to check what it answers")


def _record(world: World, target: Target | None, responses: list[Response], title: str) -> list[Response]:
    """Tie each response to the pods that served it (ledger by x-request-id), keep them, attach a sample."""
    unsettled = _tie(world, responses)
    return _keep(world, target, responses, title, tuple(unsettled))


def _tie(world: World, responses: list[Response]) -> list[str]:
    """Which pods served each response (and which got a mirrored copy), once the backend's records settled; what
    the backend could not read in time, a line per proxy."""
    unsettled = world.backend.settle()
    for r in responses:
        served = world.backend.served(r.request_id)
        r.served_by = [s for s in served if not s.mirrored]
        r.mirror_copies = [s for s in served if s.mirrored]
    return unsettled


def _keep(world: World, target: Target | None, responses: list[Response], title: str,
          unsettled: tuple[str, ...] = ()) -> list[Response]:
    """The responses become the last batch; who served them, statuses, latency and a sample are attached, what
    clients did not see (retries, failures a retry hid, failed mirror copies) is noted, and so are records that
    had not arrived."""
    world.record(target, responses, unsettled)
    for line in unsettled:
        world.note(f"{title}: not every record of who served them had arrived ({line}); checks of who served "
                   "this batch will fail")
    what = hidden.of(responses)
    world.attach(title, batch_document(title, responses, notes=what.lines()), "html")
    for line in what.lines():
        world.note(f"{title}: {line}")
    return responses


def sample_table(responses: list[Response], limit: int = SAMPLE) -> str:
    rows = [(r.request_id[:8], r.status or f"no response ({r.error})", served_text(r), f"{r.elapsed_ms:.1f}")
            for r in responses[:limit]]
    more = f"\n  … and {len(responses) - limit} more" if len(responses) > limit else ""
    return table(("x-request-id", "status", "served by", "ms"), rows) + more


def served_text(r: Response) -> str:
    return chain_label([s.peer for s in r.served_by]) or "-"


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
    traffics = list(world.background.values())
    responses = [r for t in traffics for r in t.stop()]
    world.background.clear()
    world.finished_background = responses
    target = traffics[0].target if len(traffics) == 1 else None  # several: the graph reads each request's own path
    return _record(world, target, responses, f"background traffic: {len(responses)} requests")
