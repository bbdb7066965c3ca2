"""Flagger canaries: wait for a phase, check phases and weights, what clients saw, and attach the run's evidence.

The analysis runs on the backend's clock (`time_scale` real seconds per analysis second on the local mesh),
so every wait here is bounded by the Canary's own schedule scaled to real time (`wait_budget`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from typing import Any

from meshlib.canary import Canary, Phase
from meshlib.dsl.world import World
from meshlib.expect import fail, table
from meshlib.report.canary import history_document, history_table, weights_svg
from meshlib.report.tables import html_table, tidy
from meshlib.traffic import Response

PHASES = [str(p) for p in Phase]
TERMINAL = ("Succeeded", "Failed")
FLAGGER = ("flagger", "istio-system")
PROMETHEUS_SLACK = 20.0  # real seconds for Prometheus to notice new pods (it applies target changes every 5 s)
POLL = 0.05
LOG_TAIL = 12


def phase_name(text: str) -> str:
    """A Flagger phase as written in a feature, any case: `succeeded` → `Succeeded`."""
    for phase in PHASES:
        if phase.lower() == text.strip().lower():
            return phase
    raise ValueError(f"{text!r} is not a Flagger phase; phases: {', '.join(PHASES)}")


def items(text: str) -> list[str]:
    """`10, 20 and 30`, `Initialized → Progressing → Succeeded`: the listed items."""
    return [p for p in re.split(r"\s*(?:,|→|->|\band\b|\bthen\b)\s*", text.strip()) if p]


def parse_weights(text: str) -> list[int]:
    try:
        return [int(p.rstrip("%").strip()) for p in items(text)]
    except ValueError:
        raise ValueError(f"weights must be whole percentages such as `10, 20, 30`, not {text!r}") from None


def _canary(world: World, name: str) -> Canary:
    res = world.backend.store.get("Canary", world.namespace, name)
    if res is None:
        raise fail(f"a Canary {name} in namespace {world.namespace}",
                   "there is none (apply it first, e.g. Given the manifest \"ch5/flagger/catalog-release.yaml\" "
                   "is applied)")
    return Canary.from_manifest(res)


def wait_budget(world: World, canary: Canary) -> float:
    """Real seconds a wait may take: twice a whole analysis on the scaled clock — initialisation, every weight
    step (or iteration), `threshold` failed checks, promotion and finalising — plus PROMETHEUS_SLACK."""
    if canary.iterations:
        steps = canary.iterations + 1
    elif canary.step_weights:
        steps = len(canary.step_weights)
    elif canary.step_weight:
        steps = math.ceil(canary.max_weight() / canary.step_weight)
    else:
        steps = 1
    ticks = steps + canary.threshold + 6
    return 2 * ticks * canary.interval * world.backend.time_scale + PROMETHEUS_SLACK


def history(world: World, name: str) -> list[dict[str, Any]]:
    return world.backend.canary_history(name, world.namespace)


def status(world: World, name: str) -> dict[str, Any]:
    return world.backend.canary_status(name, world.namespace)


def flagger_log(world: World, name: str) -> list[str]:
    """Flagger's log lines about this canary (`kubectl logs deploy/flagger -n istio-system`)."""
    ref = f"{name}.{world.namespace}"
    out = []
    for line in world.backend.logs(*FLAGGER):
        try:
            entry = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if entry.get("canary") in (ref, None):
            out.append(line)
    return out


def _messages(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
            out.append(f"{entry.get('level', '')[:4]:4} {entry.get('msg', line)}")
        except ValueError:
            out.append(line)
    return out


def _summary(world: World, name: str) -> str:
    s = status(world, name)
    return f"it is {s['phase']} with canaryWeight {s['canaryWeight']} and failedChecks {s['failedChecks']}"


def _details(world: World, name: str) -> str:
    tail = _messages(flagger_log(world, name))[-LOG_TAIL:]
    return (history_table(history(world, name)) + "\n  Flagger log (last lines):\n    "
            + "\n    ".join(tail or ["(none)"]))


def attach_run(world: World, name: str) -> None:
    """The per-tick table, the weights chart (SVG), the metric queries and the Flagger log of this canary."""
    points = history(world, name)
    world.attach(f"canary {name}: analysis per tick",
                 history_document(points, f"{name}.{world.namespace}: one row per analysis tick"), "html")
    world.attach(f"canary {name}: weights over time",
                 weights_svg(points, f"{name}.{world.namespace}: traffic weights per analysis tick"), "svg")
    queries = [{"tick": i, "phase": p["phase"], "queries": _tidy_queries(p.get("queries") or [])}
               for i, p in enumerate(points) if p.get("queries")]
    if queries:
        world.attach(f"canary {name}: metric queries per tick", json.dumps(queries, indent=2), "json")
    world.attach(f"flagger log: {name}", "\n".join(flagger_log(world, name)))


def _tidy_queries(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric query evidence with values rounded (a success rate reads 99.5, not 99.49999999999999)."""
    return [{k: tidy(v) if isinstance(v, float) else v for k, v in q.items()} for q in queries]


def wait_for_phase(world: World, name: str, phase: str) -> None:
    """Wait until an analysis tick that began after this call leaves the canary in `phase`.

    Fails at once when such a tick ends in the other final phase (Succeeded vs Failed, or either when waiting
    for another phase), else after `wait_budget` real seconds, with the history and the Flagger log."""
    wanted = phase_name(phase)
    canary = _canary(world, name)
    budget = wait_budget(world, canary)
    started = time.time()
    deadline = time.monotonic() + budget
    while True:
        recent = [p for p in history(world, name) if p["started"] >= started]
        if any(p["phase"] == wanted for p in recent):
            attach_run(world, name)
            return
        ended = next((p["phase"] for p in recent if p["phase"] in TERMINAL), None)
        if ended is not None or time.monotonic() >= deadline:
            attach_run(world, name)
            why = f"it ended {ended}" if ended else f"after {budget:.0f}s {_summary(world, name)}"
            raise fail(f"the canary {name} to reach {wanted} (within {budget:.0f}s: twice its whole analysis "
                       f"at time_scale {world.backend.time_scale:g})", why, _details(world, name))
        time.sleep(POLL)


def is_phase(world: World, name: str, phase: str) -> None:
    wanted = phase_name(phase)
    if status(world, name)["phase"] != wanted:
        raise fail(f"the canary {name} to be {wanted}", _summary(world, name), _details(world, name))


def has_weight(world: World, name: str, weight: int) -> None:
    if status(world, name)["canaryWeight"] != weight:
        raise fail(f"the canary {name} to have canaryWeight {weight}", _summary(world, name), _details(world, name))


def weight_steps(points: list[dict[str, Any]]) -> list[int]:
    """The canary weights in the order they were set, repeats and 0 (no canary traffic) left out."""
    out: list[int] = []
    for p in points:
        w = p["canaryWeight"]
        if w and (not out or out[-1] != w):
            out.append(w)
    return out


def phase_steps(points: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for p in points:
        if not out or out[-1] != p["phase"]:
            out.append(p["phase"])
    return out


def climbed(world: World, name: str, weights: list[int]) -> None:
    points = history(world, name)
    seen = weight_steps(points)
    world.attach(f"canary {name}: weights over time",
                 weights_svg(points, f"{name}.{world.namespace}: traffic weights per analysis tick"), "svg")
    if seen != weights:
        raise fail(f"the canary weight of {name} to climb {', '.join(map(str, weights))}",
                   f"it went {', '.join(map(str, seen)) or 'nowhere (never above 0)'}", _details(world, name))


def went_through(world: World, name: str, phases: list[str]) -> None:
    """The phases appear in this order (others may come between them)."""
    wanted = [phase_name(p) for p in phases]
    seen = phase_steps(history(world, name))
    it = iter(seen)
    if not all(p in it for p in wanted):  # an ordered subsequence
        raise fail(f"the canary {name} to go through {' → '.join(wanted)} in that order",
                   f"it went {' → '.join(seen) or 'through no tick yet'}", _details(world, name))


def log_shows(world: World, name: str, text: str) -> None:
    lines = _messages(flagger_log(world, name))
    found = [line for line in lines if text in line]
    world.attach(f"flagger log lines with {text!r}", "\n".join(found) or "(none)")
    if not found:
        raise fail(f"the Flagger log of {name} to show {text!r}", "no line does",
                   "  last lines:\n    " + "\n    ".join(lines[-LOG_TAIL:] or ["(none)"]))


def failed(response: Response) -> bool:
    """What a client counts as an error: no HTTP response, or a 5xx."""
    return response.status == 0 or response.status >= 500


def background_responses(world: World) -> list[Response]:
    """The running background traffic's responses so far, else those of the traffic that stopped last."""
    running = [r for t in world.background.values() for r in list(t.responses)]
    return running or list(world.finished_background)


def at_most_failed(world: World, share: float) -> None:
    responses = background_responses(world)
    if not responses:
        raise fail("background responses to check", "no background traffic ran in this scenario "
                   "(add: Given background traffic of 50 requests per second)")
    bad = [r for r in responses if failed(r)]
    counts = Counter(r.status or f"no response ({r.error})" for r in responses)
    rows = [(status, n, f"{n / len(responses):.1%}") for status, n in counts.most_common()]
    evidence = table(("status", "requests", "share"), rows)
    world.attach(f"background traffic: {len(bad)} of {len(responses)} failed",
                 html_table(("status", "requests", "share"), rows,
                            bad=[i for i, row in enumerate(rows) if not isinstance(row[0], int) or row[0] >= 500]),
                 "html")
    if len(bad) > share * len(responses):
        raise fail(f"at most {share:.0%} of the background requests to fail",
                   f"{len(bad)} of {len(responses)} did ({len(bad) / len(responses):.1%})", evidence)
