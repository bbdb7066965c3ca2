"""behave hooks: one backend per feature (a fresh one per scenario where asked), evidence, clean teardown.

Userdata (behave.ini or -D): backend (local), istio_version, namespace, manifests, alpha, seed.
Tags: `@fresh` (feature or scenario) gives each scenario its own mesh; `@istio.version=1.28` runs the
feature or scenario on that Istio profile.
"""

from __future__ import annotations

import atexit
from pathlib import Path

from behave.model import Feature, Scenario
from behave.runner import Context

from meshlib.backend import Backend, LocalBackend
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
    seed = ud.get("seed")
    backend = LocalBackend(ud.get("namespace", "default"), version, seed=int(seed) if seed else None)
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


__all__ = ["after_all", "after_feature", "after_scenario", "before_all", "before_feature", "before_scenario"]
