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
`--allowed-contexts`, `--kubeconfig`, `--gateway-url`. Write a path value with `=` (`--mesh-manifests=../manifests`):
pytest reads the command line for its rootdir before plugins add their options, so a separate path would be taken
for a test path.
Markers, as behave's tags: `@pytest.mark.istio_version("1.28")` pins a test to that profile,
`@pytest.mark.istio_version(">=1.28")` (also `>`, `<`, `<=`, `!=`) skips it, with the reason, on other profiles.
A failed check is reported as its message (what was expected, what was seen), not as a traceback; the notes of a
test (retries, underpowered checks, echoed external hosts) are printed in the terminal summary. With allure-pytest
installed, every check attaches its evidence to the Allure report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SETTINGS: dict[str, tuple[str, str | None]] = {
    # ini key: (help, default)
    "mesh_backend": ("where the mesh runs: local (the embedded mesh) or kubernetes", "local"),
    "istio_version": ("the Istio behaviour profile (default: the book's 1.17, or istiod's on a cluster)", None),
    "mesh_namespace": ("the namespace manifests go into", "default"),
    "mesh_manifests": ("the folder manifest names are relative to", "manifests"),
    "mesh_alpha": ("false-failure rate of statistical checks", "0.01"),
    "mesh_seed": ("the embedded mesh's random seed (a number, or 'random')", "random"),
    "mesh_time_scale": ("real seconds per second of Flagger's analysis clock on the embedded mesh (0.05: a 45 s "
                        "interval takes 2.25 s), as behave's -D time_scale", "1"),
    "mesh_config": ("a mesh config (meshlib.yaml: user images, external stand-ins); read only when named", None),
    "kube_context": ("the kubeconfig context (kubernetes backend)", None),
    "allowed_contexts": ("contexts the run may touch, comma-separated (kubernetes backend)", None),
    "kubeconfig": ("the kubeconfig file (kubernetes backend; default KUBECONFIG or ~/.kube/config)", None),
    "gateway_url": ("where the ingress gateway answers, when it is not port-forwarded (kubernetes backend)", None),
}
NOTES = pytest.StashKey[list[tuple[str, str]]]()
VERSION_MARK = "istio_version"


def _option(name: str) -> str:
    return "--" + {"istio_version": "istio-version", "kube_context": "kube-context",
                   "allowed_contexts": "allowed-contexts", "kubeconfig": "kubeconfig",
                   "gateway_url": "gateway-url"}.get(name, name.replace("_", "-"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlib", "meshlib: release checks on a service mesh")
    for name, (text, default) in SETTINGS.items():
        group.addoption(_option(name), dest=f"meshlib_{name}", default=None, help=f"{text} (ini: {name})")
        parser.addini(name, text, default=default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{VERSION_MARK}(spec): pin the test to an Istio profile ('1.28') or run it "
                                       "only on matching profiles ('>=1.28', '<1.28', '!=1.22'), like behave's "
                                       "@istio.version tags")
    config.stash[NOTES] = []


def setting(config: pytest.Config, name: str) -> str | None:
    """An option given on the command line, else the ini key, else its default."""
    value = config.getoption(f"meshlib_{name}")
    return value if value is not None else (config.getini(name) or None)


def version_tags(item: pytest.Item) -> list[str]:
    """The test's istio_version markers as behave tags (`istio.version>=1.28`, `istio.version=1.28`)."""
    out = []
    for mark in item.iter_markers(VERSION_MARK):
        spec = str(mark.args[0]).strip() if mark.args else ""
        out.append(f"istio.version{spec}" if spec[:1] in "<>!=" else f"istio.version={spec}")
    return list(reversed(out))  # the innermost marker last, as behave reads scenario tags after feature tags


def _time_scale(text: str | None) -> float:
    """`mesh_time_scale` checked as `meshlib up --time-scale` checks it; a bad value is a one-line error."""
    from argparse import ArgumentTypeError

    from meshlib.cliargs import time_scale
    from meshlib.errors import InputError

    try:
        return time_scale(text or "1")
    except ArgumentTypeError as exc:
        raise InputError(f"mesh_time_scale: {exc}") from None


@pytest.fixture
def mesh(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A `World` on its own backend (the embedded mesh by default), closed after the test."""
    from meshlib.backend import open_backend
    from meshlib.dsl.world import World
    from meshlib.local.meshconfig import read_mesh_config
    from meshlib.report.evidence import attach
    from meshlib.tags import pinned_version, version_gate

    config = request.config
    tags = version_tags(request.node)
    version = pinned_version(tags, setting(config, "istio_version"))
    gate = version_gate(tags, version)
    if gate:
        pytest.skip(gate)
    namespace = setting(config, "mesh_namespace") or "default"
    manifests = Path(setting(config, "mesh_manifests") or "manifests")
    if not manifests.is_absolute():
        manifests = config.rootpath / manifests
    backend = open_backend(setting(config, "mesh_backend") or "local", namespace, version,
                           seed=setting(config, "mesh_seed"),
                           time_scale=_time_scale(setting(config, "mesh_time_scale")),
                           config=read_mesh_config(setting(config, "mesh_config")),
                           context=setting(config, "kube_context"),
                           allowed_contexts=setting(config, "allowed_contexts"),
                           kubeconfig=setting(config, "kubeconfig"), gateway_url=setting(config, "gateway_url"))
    world = World(backend, namespace, manifests.resolve(), alpha=float(setting(config, "mesh_alpha") or 0.01),
                  evidence=attach)
    try:
        yield world
    finally:
        try:
            world.stop_background()
        finally:
            backend.close()
            config.stash[NOTES].extend((request.node.nodeid, note) for note in world.notes)


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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    notes = config.stash.get(NOTES, [])
    if notes:
        terminalreporter.section("meshlib notes")
        for nodeid, note in notes:
            terminalreporter.write_line(f"{nodeid}: {note}")
