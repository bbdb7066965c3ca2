"""pytest-bdd adapters over meshlib's behave steps: the same `features/*.feature`, the same step functions.

A step has one home: its behave registration (`meshlib.steps`, and a project's `steps/` folder). This module does
not copy patterns: each step pytest-bdd sees is a behave step matcher, matched by behave itself (the same parse
types, and behave's rule that the first matching definition of the step's kind wins), and its function is called
with a `StepContext` that looks to the step like behave's context: `world`, `table` (a behave Table, from
pytest-bdd's `datatable`) and `text` (from `docstring`), and room for what a step keeps for later steps.

Use in a project, with its features in `features/` and its behave steps in `steps/`:

    # conftest.py
    from meshlib.bdd import bind_steps, use_behave_settings

    pytest_plugins = ["meshlib.bdd"]
    bind_steps("steps")              # every behave step: meshlib's and the project's, loaded as behave loads them


    def pytest_configure(config):
        use_behave_settings(config, "behave.ini")   # optional: behave's userdata as the mesh settings

    # test_features.py
    from pytest_bdd import scenarios

    scenarios("features")

The world of a scenario is the `mesh` fixture of meshlib's pytest plugin: a mesh of its own for every scenario,
started before the Background, closed after the scenario. Gherkin tags act as under behave:
`@istio.version=1.28` pins the scenario (or feature) to a profile and `@istio.version>=1.28` (`<`, `<=`, `>`, `!=`)
skips it, with the reason, on other profiles (both through the plugin's `istio_version` marker);
`@needs.prometheus` skips it where the mesh has no Prometheus. `@shared.mesh` is accepted but does not share:
under pytest every scenario gets its own mesh (slower, never less isolated). Severity and `@allure.*` tags become
Allure labels and links (with allure-pytest), and `needs.prometheus`, `shared.mesh` and the severities are
registered markers, so `-m "critical and not needs.prometheus"` selects scenarios. A failed step reads as under
behave: the feature line, the step, and the check's message (expected versus seen), not a traceback.

(PYTEST_DONT_REWRITE: a conftest imports this module before listing it in `pytest_plugins`; it has no asserts.)
"""

from __future__ import annotations

import inspect
import os
import runpy
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from meshlib.errors import MeshlibError, MissingExtra

try:
    from behave.matchers import Matcher, MatchWithError
    from behave.model import Table
    from behave.step_registry import registry
    from pytest_bdd import parsers
    from pytest_bdd import step as bdd_step
    from pytest_bdd.scenario import scenario_wrapper_template_registry  # pytest-bdd 9 or later
except ImportError as exc:  # not installed, or a pytest-bdd before 9 (the extra pins >=9)
    raise MissingExtra("meshlib.bdd", exc.name, "pytest-bdd") from None

from meshlib.expect import ExpectationFailed
from meshlib.pytest_plugin import VERSION_MARK
from meshlib.settings import SETTINGS
from meshlib.steps._matcher import StepNotRun
from meshlib.tags import _GATE, SHARED_MESH

NEEDS_PROMETHEUS = "needs.prometheus"  # meshlib.dsl.metrics.TAG, without importing the DSL at plugin load
SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")
FAILED_STEP = pytest.StashKey[tuple[str, Any, BaseException]]()
_UNSET: Any = object()
_KINDS = ("given", "when", "then")

class StepContext:
    """What a meshlib step reads from behave's context, under pytest-bdd: `world` (the scenario's World), `table`
    and `text` of the step being run (None when it has none), and any attribute a step sets for later steps."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.table: Table | None = None
        self.text: str | None = None


# -- steps ------------------------------------------------------------------------------------------------------


def load_steps(folder: str | os.PathLike[str]) -> None:
    """Load a behave steps folder as behave does: every `*.py` in sorted order, each run with fresh globals."""
    path = Path(folder)
    if not path.is_dir():
        raise pytest.UsageError(f"meshlib.bdd: no steps folder {str(path)!r}")
    for file in sorted(path.glob("*.py")):
        runpy.run_path(str(file), run_name=f"steps.{file.stem}")


def bind_steps(folder: str | os.PathLike[str] | None = None) -> int:
    """Give pytest-bdd every step in behave's registry (meshlib's catalog, and the steps of `folder` when named,
    loaded with `load_steps`; a relative folder is the caller's), as step fixtures of the calling module: call it at
    module level in a conftest. Returns how many steps were bound."""
    import meshlib.steps.all  # noqa: F401  (registers the catalog with behave)

    if folder is not None:
        path = Path(folder)
        caller = sys._getframe(1).f_globals.get("__file__")
        load_steps(path if path.is_absolute() or not caller else Path(caller).parent / path)
    _WINNER.clear()
    bound = 0
    for kind, matchers in registry.steps.items():
        for matcher in matchers:
            run = _step_function(matcher)
            # a generic (@step) definition once per kind, so behave's choice for that kind decides; stacklevel 2:
            # pytest-bdd puts the step fixture into the module that called bind_steps
            for each in _KINDS if kind == "step" else (kind,):
                bdd_step(BehaveStep(matcher, each), each, stacklevel=2)(run)
            bound += 1
    return bound


_WINNER: dict[tuple[str, str], Matcher | None] = {}


def _behave_choice(kind: str, text: str) -> Matcher | None:
    """The definition behave would run for a `kind` step with this text (its first match; `@step` ones last)."""
    key = (kind, text)
    if key not in _WINNER:
        _WINNER[key] = registry.find_step_definition(SimpleNamespace(step_type=kind, name=text))
    return _WINNER[key]


class BehaveStep(parsers.StepParser):
    """A pytest-bdd parser that is one behave step matcher: it matches where behave would pick that matcher."""

    def __init__(self, matcher: Matcher, kind: str) -> None:
        super().__init__(matcher.pattern)
        self.matcher = matcher
        self.kind = kind
        self.positional = _positional_names(matcher.func)

    def is_matching(self, name: str) -> bool:
        return _behave_choice(self.kind, name) is self.matcher

    def parse_arguments(self, name: str) -> dict[str, Any]:
        match = self.matcher.match(name)
        if match is None:
            return {}
        if isinstance(match, MatchWithError):  # a type converter failed: the step fails as under behave
            match.run(None)
        unnamed = [a.value for a in match.arguments if a.name is None]
        args = dict(zip(self.positional, unnamed, strict=False))
        args.update({a.name: a.value for a in match.arguments if a.name is not None})
        return args

    def __repr__(self) -> str:
        return f"BehaveStep({self.kind} {self.matcher.pattern!r} at {self.matcher.location})"


def _parameters(func: Any) -> list[inspect.Parameter]:
    """A step function's parameters after `context` (through wrappers: meshlib's error wrapper, behave's async)."""
    return list(inspect.signature(func).parameters.values())[1:]


def _positional_names(func: Any) -> list[str]:
    params = _parameters(func)
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _step_function(matcher: Matcher) -> Any:
    """The function pytest-bdd calls: it fills the StepContext for this step and calls the behave step."""
    func = matcher.func
    names = [p.name for p in _parameters(func)
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("datatable", "docstring")]

    def run(step_context: StepContext, **kwargs: Any) -> None:
        __tracebackhide__ = True
        datatable = kwargs.pop("datatable", _UNSET)
        docstring = kwargs.pop("docstring", _UNSET)
        step_context.table = None if datatable is _UNSET else Table(datatable[0], rows=datatable[1:])
        step_context.text = None if docstring is _UNSET else docstring
        func(step_context, **{k: v for k, v in kwargs.items() if v is not _UNSET})

    # pytest-bdd passes the parsed arguments, datatable and docstring that the signature names, and fixtures for
    # the required rest: here only `step_context`
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("step_context", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_UNSET)
           for n in [*names, "datatable", "docstring"]])
    run.__name__ = getattr(func, "__name__", "step")
    run.__qualname__ = f"meshlib.bdd[{matcher.describe()}]"
    run.__doc__ = getattr(func, "__doc__", None)
    return run


# -- settings ---------------------------------------------------------------------------------------------------


def use_behave_settings(config: pytest.Config, ini: str | os.PathLike[str] = "behave.ini") -> dict[str, str]:
    """Take the mesh settings from behave's userdata in `ini` (namespace, seed, time_scale, manifests, ...), so the
    features run under pytest on what they run on under behave. A `--mesh-*` option on the command line wins;
    pytest ini keys give way to behave's values. Call it from `pytest_configure`; returns what it set."""
    from behave.configuration import read_configuration

    path = Path(ini)
    if not path.is_absolute():
        path = config.rootpath / path
    if not path.is_file():
        raise pytest.UsageError(f"meshlib.bdd: no behave settings file {str(path)!r}")
    userdata = read_configuration(str(path)).get("userdata", {})
    chosen = {}
    for each in SETTINGS:
        value = userdata.get(each.key)
        if value in (None, "") or getattr(config.option, f"meshlib_{each.ini}", None) is not None:
            continue
        if each.key == "manifests" and not Path(value).is_absolute():
            value = str((path.parent / value).resolve())  # behave reads it from its own folder
        setattr(config.option, f"meshlib_{each.ini}", str(value))
        chosen[each.ini] = str(value)
    return chosen


# -- the scenario's world, tags ---------------------------------------------------------------------------------


@pytest.fixture
def step_context(request: pytest.FixtureRequest, mesh: Any) -> StepContext:
    """The behave-like context of a scenario, on the `mesh` fixture's World (its version gate included)."""
    if NEEDS_PROMETHEUS in scenario_tags(request.node):
        from meshlib.dsl import metrics

        if not metrics.has_prometheus(mesh):
            pytest.skip(metrics.skip_reason(mesh))
    return StepContext(mesh)


def _template(item: pytest.Item) -> Any:
    func = getattr(item, "obj", None)
    try:
        return scenario_wrapper_template_registry.get(func) if func is not None else None
    except TypeError:  # not weak-referenceable: not a pytest-bdd scenario
        return None


def scenario_tags(item: pytest.Item) -> list[str]:
    """A pytest-bdd scenario's tags in behave's order: feature, rule, scenario, then its Examples' tags."""
    template = _template(item)
    if template is None:
        return []
    rule = sorted(template.rule.tags) if template.rule is not None else []
    examples = [m.name for m in item.iter_markers() if _GATE.fullmatch(m.name)]
    return [*sorted(template.feature.tags), *rule, *sorted(template.tags), *examples]


def pytest_configure(config: pytest.Config) -> None:
    for name, text in [(NEEDS_PROMETHEUS, "Gherkin tag: skip the scenario where the mesh has no Prometheus"),
                       (SHARED_MESH, "Gherkin tag: accepted; under pytest every scenario has a mesh of its own"),
                       *[(s, "Gherkin severity tag (also an Allure severity)") for s in SEVERITIES]]:
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_bdd_apply_tag(tag: str, function: Any) -> Any:
    if _GATE.fullmatch(tag):
        return function  # ordered onto the item at collection (pytest_collection_modifyitems)
    if tag.startswith("allure.") or tag in SEVERITIES:
        import allure
        from allure_commons.mapping import parse_tag
        from allure_commons.model2 import Link

        found = parse_tag(tag)
        if isinstance(found, Link):
            function = allure.link(found.url, link_type=found.type, name=found.name)(function)
        else:
            function = allure.label(found.name, found.value)(function)
        return getattr(pytest.mark, tag)(function) if tag in SEVERITIES else function
    return None  # pytest-bdd's own: a marker named as the tag


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Version tags become `istio_version` markers in behave's order, so the innermost pin wins."""
    for item in items:
        specs = [m.group(1) + m.group(2) for t in scenario_tags(item) if (m := _GATE.fullmatch(t))]
        for spec in reversed(specs):  # meshlib.pytest_plugin.version_tags reads an item's own markers reversed
            item.add_marker(getattr(pytest.mark, VERSION_MARK)(spec.removeprefix("=")))


def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    request.getfixturevalue("step_context")  # the mesh starts (or the scenario is skipped) before the Background


def pytest_bdd_step_error(request: pytest.FixtureRequest, feature: Any, scenario: Any, step: Any, step_func: Any,
                          step_func_args: Mapping[str, Any], exception: BaseException) -> None:
    request.node.stash[FAILED_STEP] = (feature.filename, step, exception)


def _clean(exc: BaseException) -> bool:
    """Failures behave shows as their message: a failed check, a step that could not run, a meshlib error."""
    return isinstance(exc, ExpectationFailed | StepNotRun | MeshlibError)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed step reads as `feature:line: failed at: Then ...` and the check's message, as behave prints it; a
    skipped scenario points at its feature line."""
    report = yield
    template = _template(item)
    if template is None or call.excinfo is None:
        return report
    where = os.path.relpath(template.feature.filename, item.config.rootpath)
    exc = call.excinfo.value
    if report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (where, template.line_number, report.longrepr[2])
    elif report.failed and _clean(exc):
        failed = item.stash.get(FAILED_STEP, None)
        if failed is not None and failed[2] is exc:
            step = failed[1]
            report.longrepr = f"{where}:{step.line_number}: failed at: {step.keyword} {step.name}\n{exc}"
        else:  # before the first step: the mesh could not start, a bad setting
            report.longrepr = f"{where}:{template.line_number}: could not run the scenario: {exc}"
    return report


__all__ = ["BehaveStep", "StepContext", "bind_steps", "load_steps", "scenario_tags", "step_context",
           "use_behave_settings"]
