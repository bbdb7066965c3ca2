"""The pytest front end: a `mesh` fixture over the same backends and step functions as the behave steps.

Installed with meshlib (entry point `pytest11`), so any pytest run can write:

    from meshlib.dsl import deploy, distribution, responses, sending

    def test_a_tenth_of_the_catalog_traffic_reaches_v2(mesh):
        deploy.apply_manifests(mesh, ["services", "ch5/webapp-catalog-gw-vs.yaml", "ch5/catalog-dest-rule.yaml",
                                      "ch5/catalog-vs-v2-10-90-mesh.yaml"])
        sending.through_gateway(mesh, 400, "/api/catalog", "webapp.istioinaction.io")
        responses.every_status(mesh, 200)
        distribution.about_share(mesh, 0.10, "catalog", "v2")

`mesh` is a `meshlib.dsl.world.World` on a backend of its own for each test, closed after it, also when it fails.
Settings, each an option or an ini key (`[pytest]` / `[tool.pytest.ini_options]`): `--mesh-backend` (local or
kubernetes), `--istio-version`, `--mesh-namespace`, `--mesh-manifests`, `--mesh-alpha`, `--mesh-seed`,
`--mesh-time-scale` (Flagger's clock, as behave's -D time_scale), `--mesh-config` (a meshlib.yaml), `--kube-context`,
`--allowed-contexts`, `--kubeconfig`, `--gateway-url`, `--mesh-allow-outside-manifests` (meshlib.settings: the same
settings as behave's userdata). Write a path value with `=` (`--mesh-manifests=../manifests`): pytest reads the
command line for its rootdir before plugins add their options, so a separate path would be taken for a test path.
Markers, as behave's tags: `@pytest.mark.istio_version("1.28")` pins a test to that profile,
`@pytest.mark.istio_version(">=1.28")` (also `>`, `<`, `<=`, `!=`) skips it, with the reason, on other profiles.
A failed check is reported as its message (what was expected, what was seen), not as a traceback; the notes of a
test (retries, underpowered checks, echoed external hosts) are printed in the terminal summary. With allure-pytest
installed, every check attaches its evidence to the Allure report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from meshlib.settings import RunSettings

NOTES = pytest.StashKey["_Notes"]()
NOTE = "meshlib note"
VERSION_MARK = "istio_version"


def pytest_addoption(parser: pytest.Parser) -> None:
    from meshlib.settings import SETTINGS

    group = parser.getgroup("meshlib", "meshlib: release checks on a service mesh")
    for each in SETTINGS:
        group.addoption(each.flag, dest=f"meshlib_{each.ini}", default=None, help=f"{each.help} (ini: {each.ini})")
        parser.addini(each.ini, each.help, default=each.default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{VERSION_MARK}(spec): pin the test to an Istio profile ('1.28') or run it "
                                       "only on matching profiles ('>=1.28', '<1.28', '!=1.22'), like behave's "
                                       "@istio.version tags")
    config.stash[NOTES] = _Notes()
    config.pluginmanager.register(config.stash[NOTES], "meshlib-notes")


def setting(config: pytest.Config, name: str) -> str | None:
    """An option given on the command line, else the ini key, else its default (`name`: the ini key)."""
    value = config.getoption(f"meshlib_{name}")
    return value if value is not None else (config.getini(name) or None)


def run_settings(config: pytest.Config) -> RunSettings:
    """The run's settings (meshlib.settings), from options and ini keys."""
    from meshlib.settings import BY_KEY, RunSettings

    return RunSettings(lambda key: setting(config, BY_KEY[key].ini), lambda key: BY_KEY[key].flag)


def version_tags(item: pytest.Item) -> list[str]:
    """The test's istio_version markers as behave tags (`istio.version>=1.28`, `istio.version=1.28`)."""
    out = []
    for mark in item.iter_markers(VERSION_MARK):
        spec = str(mark.args[0]).strip() if mark.args else ""
        out.append(f"istio.version{spec}" if spec[:1] in "<>!=" else f"istio.version={spec}")
    return list(reversed(out))  # the innermost marker last, as behave reads scenario tags after feature tags


@pytest.fixture
def mesh(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A `World` on its own backend (the embedded mesh by default), closed after the test."""
    from meshlib.dsl.world import World
    from meshlib.local.meshconfig import read_mesh_config
    from meshlib.report.evidence import attach
    from meshlib.tags import pinned_version, version_gate

    config = request.config
    settings = run_settings(config)
    tags = version_tags(request.node)
    version = pinned_version(tags, settings.text("istio_version"))
    gate = version_gate(tags, version)
    if gate:
        pytest.skip(gate)
    alpha, outside = settings.alpha(), settings.flag("allow_outside_manifests")  # a bad value: before any mesh
    backend = settings.open_backend(version, read_mesh_config(settings.text("mesh_config")))
    world = World(backend, settings.text("namespace") or "default", settings.manifests(config.rootpath),
                  alpha=alpha, evidence=attach, allow_outside_manifests=outside)
    try:
        yield world
    finally:
        try:
            world.stop_background()
        finally:
            backend.close()
            # in the teardown report's user properties, so notes from xdist workers reach the summary too
            request.node.user_properties.extend((NOTE, note) for note in world.notes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed check or a step that could not run reads as its message: what was expected and what was seen."""
    report = yield
    if call.excinfo is not None and "mesh" in getattr(item, "fixturenames", ()):
        from meshlib.errors import MeshlibError
        from meshlib.expect import ExpectationFailed

        if isinstance(call.excinfo.value, ExpectationFailed | MeshlibError):
            where = call.excinfo.traceback[-1] if call.excinfo.traceback else None
            test_line = next((e for e in reversed(call.excinfo.traceback)
                              if str(e.path) == str(item.path)), where)
            at = f"{item.path.name}:{test_line.lineno + 1}: " if test_line is not None else ""
            kind = "could not run" if not isinstance(call.excinfo.value, ExpectationFailed) else "failed"
            report.longrepr = f"{at}{kind}: {call.excinfo.value}"
    return report


class _Notes:
    """The notes tests' teardowns reported (here, or from an xdist worker), for the terminal summary."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.notes += [(report.nodeid, str(value)) for name, value in report.user_properties if name == NOTE]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With allure-pytest writing results (`--alluredir`), the run's environment (backend, Istio profile, Envoy,
    seed, alpha, versions) and meshlib's categories go beside them; once, on the controller under xdist."""
    config = session.config
    results = getattr(config.option, "allure_report_dir", None)
    if not results or hasattr(config, "workerinput"):
        return
    from meshlib.report.allure_run import run_facts, write_categories, write_environment

    write_environment(Path(results), run_facts(run_settings(config), (), f"pytest {pytest.__version__}"))
    write_categories(Path(results))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    notes = config.stash[NOTES].notes if NOTES in config.stash else []
    if notes:
        terminalreporter.section("meshlib notes")
        for nodeid, note in notes:
            terminalreporter.write_line(f"{nodeid}: {note}")
