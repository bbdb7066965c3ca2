"""Container and proxy logs: counting the lines a release check cares about."""

from __future__ import annotations

import time

from meshlib.config.canonical import is_app, revision_of
from meshlib.config.store import Workload
from meshlib.dsl.world import World
from meshlib.expect import fail

PROXY = "istio-proxy"
SETTLE_SECONDS = 5.0  # mirrored copies are fire-and-forget: give them a bounded time to land


def workloads_of(world: World, app: str, version: str | None = None) -> list[Workload]:
    found = [w for w in world.backend.store.workloads() if w.namespace == world.namespace
             and is_app(w.labels, w.name, app) and (version is None or revision_of(w.labels) == version)]
    if not found:
        raise fail(f"a workload {app}" + (f" {version}" if version else ""),
                   f"namespace {world.namespace} has none (apply its Deployment first)")
    return found


def lines(world: World, app: str, version: str | None, container: str | None) -> list[str]:
    out: list[str] = []
    for w in workloads_of(world, app, version):
        out += world.backend.logs(w.name, w.namespace, container, since=world.sent_at)
    return out


def count_lines(world: World, app: str, version: str | None, text: str, container: str | None = None,
                expected: int | None = None) -> int:
    """Lines containing `text` since the last batch was sent; waits (bounded) until `expected` is reached. Records
    the backend could not read in time are noted."""
    return _count(world, app, version, text, container, expected)[0]


def _count(world: World, app: str, version: str | None, text: str, container: str | None = None,
           expected: int | None = None) -> tuple[int, list[str]]:
    """`count_lines`, and what the backend could not read in time (a line per proxy)."""
    unsettled = world.backend.settle()
    for line in unsettled:
        world.note(f"{app} logs: not every proxy record had arrived ({line})")
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = [line for line in lines(world, app, version, container) if text in line]
        if expected is None or len(found) >= expected or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    who = f"{app} {version}" if version else app
    world.attach(f"{who} {'access ' if container == PROXY else ''}log lines with {text!r}",
                 ("\n".join(found[:50]) or "(no line)") + (f"\n… {len(found) - 50} more" if len(found) > 50 else ""))
    return len(found), unsettled


def logs_show(world: World, app: str, version: str | None, count: int, text: str) -> None:
    n = count_lines(world, app, version, text, None, count)
    if n != count:
        who = f"{app} {version}" if version else app
        sample = lines(world, app, version, None)[-5:]
        raise fail(f"the {who} logs to show {count} requests for {text!r} since the traffic started",
                   f"they show {n}", "  last lines:\n    " + "\n    ".join(sample or ["(none)"]))


def logs_show_some(world: World, app: str, version: str | None, text: str) -> None:
    if count_lines(world, app, version, text, None, 1) == 0:
        raise fail(f"the {app} {version or ''} logs to show {text!r}".replace("  ", " "), "no line does")


def logs_show_none(world: World, app: str, version: str | None, text: str) -> None:
    time.sleep(0.2)  # let in-flight copies land before claiming absence
    who = f"{app} {version or ''}".strip()
    n, unsettled = _count(world, app, version, text)
    if unsettled:
        raise fail(f"no {who} log line with {text!r}", "that cannot be told: not every proxy record had arrived",
                   "  " + "\n  ".join(unsettled))
    if n:
        raise fail(f"no {who} log line with {text!r}", f"{n} lines have it")


def access_log_shows(world: World, app: str, text: str, count: int | None = None) -> None:
    n = count_lines(world, app, None, text, PROXY, count or 1)
    if (count is None and n == 0) or (count is not None and n != count):
        want = f"{count} lines" if count is not None else "a line"
        raise fail(f"{want} with {text!r} in the {app} sidecar's access log", f"found {n}",
                   "  (is access logging on? use: Given access logging is on for " + app + ")")
