"""behave hooks: one backend per feature (a fresh one per scenario where asked), evidence, clean teardown.

Userdata (behave.ini or -D): backend (local), istio_version, namespace, manifests, alpha, seed, time_scale
(real seconds per second of Flagger's analysis clock: 0.05 runs a 45 s interval in 2.25 s; default 1).
Tags: `@fresh` (feature or scenario) gives each scenario its own mesh; `@istio.version=1.28` runs the
feature or scenario on that Istio profile; `@needs.prometheus` skips the scenario, with the reason, where the
mesh runs without Prometheus (PromQL steps in an untagged scenario fail there instead).
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

from behave.model import Feature, Scenario
from behave.runner import Context

from meshlib.backend import Backend, LocalBackend
from meshlib.dsl import metrics
from meshlib.dsl.world import World
from meshlib.errors import MeshlibError
from meshlib.report.evidence import attach

_OPEN: list[Backend] = []


def _close_all() -> None:
    while _OPEN:
        _OPEN.pop().close()


atexit.register(_close_all)


def _version(tags: list[str], default: str | None) -> str | None:
    for tag in tags:
        if tag.startswith("istio.version="):
            return tag.split("=", 1)[1]
    return default


def _start(context: Context, version: str | None) -> Backend:
    ud = context.config.userdata
    kind = ud.get("backend", "local")
    if kind != "local":
        raise MeshlibError(f"backend {kind!r} is not available yet; use -D backend=local")
    seed = ud.get("seed", "random")
    if seed != "random" and not seed.isdigit():
        raise MeshlibError(f"-D seed={seed!r}: use a whole number, or 'random' for a fresh seed per run")
    backend = LocalBackend(ud.get("namespace", "default"), version, seed=None if seed == "random" else int(seed),
                           time_scale=float(ud.get("time_scale", 1.0)))
    _OPEN.append(backend)
    return backend


def _stop(backend: Backend | None) -> None:
    if backend is not None:
        if backend in _OPEN:
            _OPEN.remove(backend)
        backend.close()


def before_all(context: Context) -> None:
    ud = context.config.userdata
    context.meshlib_version = ud.get("istio_version") or None
    context.meshlib_alpha = float(ud.get("alpha", 0.01))
    context.meshlib_manifests = Path(ud.get("manifests", "manifests")).resolve()
    context.meshlib_skipped = []


def before_feature(context: Context, feature: Feature) -> None:
    context.feature_backend = None
    if "fresh" not in feature.tags:
        context.feature_backend = _start(context, _version(feature.tags, context.meshlib_version))


def before_scenario(context: Context, scenario: Scenario) -> None:
    tags = list(scenario.effective_tags)
    version = _version(tags, context.meshlib_version)
    fresh = "fresh" in tags or context.feature_backend is None or _version(scenario.tags, None) is not None
    context.scenario_backend = _start(context, version) if fresh else None
    backend = context.scenario_backend or context.feature_backend
    context.world = World(backend, context.config.userdata.get("namespace", "default"),
                          context.meshlib_manifests, alpha=context.meshlib_alpha, evidence=attach)
    if metrics.TAG in tags and not metrics.has_prometheus(context.world):
        scenario.skip(reason=metrics.SKIP_REASON)
        context.meshlib_skipped.append(f"{scenario.location}  {scenario.name}")


def after_scenario(context: Context, scenario: Scenario) -> None:
    world = getattr(context, "world", None)
    if world is not None:
        world.stop_background()
    _stop(getattr(context, "scenario_backend", None))
    context.scenario_backend = None


def after_feature(context: Context, feature: Feature) -> None:
    _stop(getattr(context, "feature_backend", None))
    context.feature_backend = None


def after_all(context: Context) -> None:
    _close_all()
    skipped = getattr(context, "meshlib_skipped", [])
    if skipped:  # past behave's output capture: a skip must say why even when the run passes
        lines = "\n".join(f"  {s}" for s in skipped)
        print(f"{len(skipped)} scenario(s) skipped, {metrics.SKIP_REASON}:\n{lines}", file=sys.__stderr__)


__all__ = ["after_all", "after_feature", "after_scenario", "before_all", "before_feature", "before_scenario"]
