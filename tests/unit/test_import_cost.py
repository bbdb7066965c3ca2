"""What each entry point loads: the `meshlib` command needs only the base install (none of the extras' packages),
the pytest plugin (loaded by every pytest run where meshlib-bdd is installed) only pytest, and the step library
scipy only when a split check runs. Each probe runs in a fresh interpreter, since this one has loaded everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "manifests" / "services"

# packages only an extra installs (behave, pytest, pytest-bdd, kubernetes, the checks' statistics and JSONPath)
EXTRAS_ONLY = {"behave", "allure", "allure_commons", "allure_behave", "allure_pytest", "parse", "parse_type",
               "pytest", "_pytest", "pytest_bdd", "kubernetes", "urllib3", "websocket", "scipy", "numpy",
               "jsonpath_ng"}


def loaded_after(code: str) -> set[str]:
    """The top-level packages in sys.modules after `code` ran in a fresh interpreter."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})), file=sys.__stdout__)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_the_cli_loads_no_extra() -> None:
    loaded = loaded_after(f"""
import contextlib, io
from meshlib.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for argv in (["--version"], ["--help"], *([cmd, "--help"] for cmd in ("analyze", "proxy-config", "explain", "up",
                 "down", "proxy-status", "apply", "delete", "get", "logs"))):
        assert main(argv) == 0, argv
    assert main(["analyze", "-f", {str(SERVICES)!r}, "-n", "istioinaction"]) == 0
    assert main(["proxy-config", "routes", "deploy/webapp.istioinaction", "-f", {str(SERVICES)!r},
                 "-n", "istioinaction"]) == 0
""")
    assert "meshlib" in loaded and "yaml" in loaded
    assert not loaded & EXTRAS_ONLY, sorted(loaded & EXTRAS_ONLY)
    # nor the embedded mesh (its HTTP and xDS servers): only `up`, `down` and the commands that ask a running mesh
    assert not loaded & {"aiohttp", "grpc"}, sorted(loaded & {"aiohttp", "grpc"})


def test_the_pytest_plugin_loads_only_pytest() -> None:
    loaded = loaded_after("import meshlib.pytest_plugin")
    assert "pytest" in loaded
    heavy = (EXTRAS_ONLY - {"pytest", "_pytest"}) | {"aiohttp", "grpc", "yaml"}  # nor the mesh's own
    assert not loaded & heavy, sorted(loaded & heavy)


def test_the_step_functions_load_scipy_only_for_a_split_check() -> None:
    loaded = loaded_after("from meshlib.dsl import deploy, distribution, logs, responses, sending")
    assert {"numpy", "jsonpath_ng"} <= loaded
    assert "scipy" not in loaded
    assert "scipy" in loaded_after("from meshlib.stats import binomial_check\nbinomial_check(10, 100, 0.1)")
