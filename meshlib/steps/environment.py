"""behave hooks: a mesh per scenario (shared per feature where asked), version gates, evidence, clean teardown.

Userdata (behave.ini or -D): the run settings of meshlib.settings, shared with the pytest plugin: backend (local,
or kubernetes with context, allowed_contexts, kubeconfig, gateway_url and prometheus_url: see meshlib.kube),
istio_version, namespace, manifests, alpha, seed, time_scale (real seconds per second of Flagger's analysis clock:
0.05 runs a 45 s interval in 2.25 s; default 1), mesh_config (a meshlib.yaml mapping user images to local commands,
as `meshlib up --mesh-config`; read only when named, each mapping printed once on stderr at the start),
allow_outside_manifests (true lets step manifest paths leave the `manifests` folder, e.g. "../shared/x.yaml";
default false: such a path fails the step); and, for behave alone,
scenario_order (as-written, reverse, shuffle or shuffle:SEED: each feature's scenarios in that order).
Tags (meshlib.tags): every scenario gets a mesh of its own and starts from its Background, unless its feature
is tagged `@shared.mesh`; `@istio.version=1.28` pins a feature or scenario to that Istio profile, and
`@istio.version>=1.28` / `<1.28` (also `>`, `<=`, `!=`) skip it, with the reason, on other profiles;
`@needs.prometheus` skips the scenario, with the reason, where the mesh runs without Prometheus (PromQL steps
in an untagged scenario fail there instead).
After each scenario the console (stderr, past behave's capture) gets, for a failure, the failing step and its
message, and for any scenario its notes: retries, failures a retry hid, underpowered statistics.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

from behave.model import Feature, Scenario
from behave.runner import Context

from meshlib.backend import Backend
from meshlib.dsl import metrics
from meshlib.dsl.world import World
from meshlib.local.meshconfig import read_mesh_config
from meshlib.report import behave_report
from meshlib.report.evidence import attach
from meshlib.settings import from_mapping
from meshlib.tags import SHARED_MESH, order, pinned_version, version_gate, with_seed

_OPEN: list[Backend] = []


def _close_all() -> None:
    while _OPEN:
        _OPEN.pop().close()


atexit.register(_close_all)


def _start(context: Context, version: str | None) -> Backend:
    backend = context.meshlib_settings.open_backend(version, context.meshlib_mesh_config)
    _OPEN.append(backend)
    return backend


def _stop(backend: Backend | None) -> None:
    if backend is not None:
        if backend in _OPEN:
            _OPEN.remove(backend)
        backend.close()


def before_all(context: Context) -> None:
    ud = context.config.userdata
    settings = context.meshlib_settings = from_mapping(ud)  # every value checked here: a bad one stops the run
    context.meshlib_version = settings.text("istio_version")
    context.meshlib_alpha = settings.alpha()
    context.meshlib_manifests = settings.manifests(Path.cwd())
    context.meshlib_outside_manifests = settings.flag("allow_outside_manifests")
    settings.time_scale()
    # the same reading as `meshlib up --mesh-config`; announced past behave's output capture
    context.meshlib_mesh_config = read_mesh_config(settings.text("mesh_config"), announce=_console)
    context.meshlib_order = with_seed(ud.get("scenario_order") or None)
    order([], context.meshlib_order)  # a bad value stops the run here, in one line
    if context.meshlib_order and context.meshlib_order.startswith("shuffle:"):
        _console(f"scenarios of each feature in shuffled order: -D scenario_order={context.meshlib_order}")
    context.meshlib_skipped = []
    context.meshlib_report = behave_report.start(context.config)  # None unless an Allure formatter runs


def _console(text: str) -> None:
    print(text, file=sys.__stderr__, flush=True)


def before_feature(context: Context, feature: Feature) -> None:
    feature.run_items[:] = order(feature.run_items, context.meshlib_order)
    context.feature_backend = None
    context.feature_version = pinned_version(feature.tags, context.meshlib_version)


def _skip(context: Context, scenario: Scenario, reason: str) -> None:
    scenario.skip(reason=reason)
    context.meshlib_skipped.append(f"{scenario.location}  {scenario.name}: {reason}")


def _ordered_tags(scenario: Scenario) -> list[str]:
    """The scenario's tags outermost first (feature, rule, scenario, then any others behave adds, e.g. an Examples
    block's), so the innermost `@istio.version=` pin wins; behave's `effective_tags` is an unordered set."""
    rule = getattr(scenario, "rule", None)
    ordered = [*scenario.feature.tags, *(rule.tags if rule is not None else []), *scenario.tags]
    return ordered + sorted(set(scenario.effective_tags) - set(ordered))


def before_scenario(context: Context, scenario: Scenario) -> None:
    tags = _ordered_tags(scenario)
    version = pinned_version(tags, context.meshlib_version)
    context.world = None
    context.scenario_backend = None
    behave_report.describe(getattr(context, "meshlib_report", None), scenario, version)
    gate = version_gate(tags, version)
    if gate:
        _skip(context, scenario, gate)
        return
    shared = SHARED_MESH in scenario.feature.tags and version == context.feature_version
    if shared:
        if context.feature_backend is None:
            context.feature_backend = _start(context, version)
        backend = context.feature_backend
    else:
        backend = context.scenario_backend = _start(context, version)
    context.world = World(backend, context.meshlib_settings.text("namespace") or "default",
                          context.meshlib_manifests, alpha=context.meshlib_alpha, evidence=attach,
                          allow_outside_manifests=context.meshlib_outside_manifests)
    if metrics.TAG in tags and not metrics.has_prometheus(context.world):
        _skip(context, scenario, metrics.skip_reason(context.world))


def after_scenario(context: Context, scenario: Scenario) -> None:
    world = getattr(context, "world", None)
    behave_report.pictures(getattr(context, "meshlib_report", None), world)  # while its mesh still runs
    if world is not None:
        world.stop_background()
    _stop(getattr(context, "scenario_backend", None))
    context.scenario_backend = None
    _report(scenario, world.notes if world is not None else [])


def _report(scenario: Scenario, notes: list[str]) -> None:
    """The failing step with its message, and the scenario's notes, on the console (past behave's capture)."""
    lines = []
    if scenario.status.has_failed():
        step = next((s for s in scenario.all_steps if s.status.has_failed()), None)
        if step is not None:
            lines.append(f"  failed at: {step.keyword} {step.name}  ({step.location})")
            lines += [f"    {line}" for line in (step.error_message or "").rstrip().splitlines()[:14]]
        else:
            lines.append("  failed in a hook (see above)")
    lines += [f"  note: {n}" for n in notes]
    if lines:
        _console("\n".join([f"\n{scenario.location}  {scenario.name}", *lines]))


def after_feature(context: Context, feature: Feature) -> None:
    _stop(getattr(context, "feature_backend", None))
    context.feature_backend = None


def after_all(context: Context) -> None:
    _close_all()
    behave_report.finish(getattr(context, "meshlib_report", None), context.config.userdata,
                         getattr(context, "meshlib_version", None))
    skipped = getattr(context, "meshlib_skipped", [])
    if skipped:  # past behave's output capture: a skip must say why even when the run passes
        lines = "\n".join(f"  {s}" for s in skipped)
        _console(f"{len(skipped)} scenario(s) skipped:\n{lines}")


__all__ = ["after_all", "after_feature", "after_scenario", "before_all", "before_feature", "before_scenario"]
