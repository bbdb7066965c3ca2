"""Egress: what a workload gets when it calls a host outside the mesh."""

from __future__ import annotations

from meshlib.dsl.world import World
from meshlib.expect import fail
from meshlib.report.tables import folded, html_document, table_fragment
from meshlib.traffic import Plan, Response, send


def call_from(world: World, workload: str, url: str) -> Response:
    target = world.backend.from_workload(workload, world.namespace, url)
    response = send(target, Plan(count=1, concurrency=1, headers=dict(world.headers)))[0]
    status = str(response.status or "no response")
    world.attach(f"{workload} → {url}: {status}", html_document(
        table_fragment(("from", "url", "status", "ms", "error"),
                       [(workload, url, status, round(response.elapsed_ms, 1), response.error or "-")],
                       bad=[0] if response.status == 0 or response.status >= 500 else [])
        + folded(f"the body ({len(response.body)} characters, the first 500)", response.body[:500])), "html")
    world.record(target, [response])
    return response


def blocked(world: World, workload: str, host: str, status: int) -> None:
    r = call_from(world, workload, f"http://{host}/")
    if r.status != status:
        raise fail(f"calls from {workload} to {host} to be blocked with {status}", f"got {r.status or r.error}")


def allowed(world: World, workload: str, host: str) -> None:
    r = call_from(world, workload, f"http://{host}/")
    if not 200 <= r.status < 500 or r.status == 502:
        raise fail(f"calls from {workload} to {host} to get through", f"got {r.status or r.error} {r.body[:100]!r}")
