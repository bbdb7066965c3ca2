"""The pytest front end as a user meets it: the README's example runs as written, a failed check reads as its
message, the istio_version marker gates like behave's tag, and a test's notes reach the terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from meshclient import MANIFESTS, ROOT, isolated_env
from testkit.alpha import RANDOM_ALPHA

README = ROOT / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## From pytest", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's 'From pytest' section has no python example"
    return match.group(1)


def run_pytest(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           f"--mesh-manifests={MANIFESTS}", "--mesh-namespace=istioinaction", *args],
                          cwd=tmp, env=isolated_env(tmp), capture_output=True, text=True, timeout=300)


def test_the_readme_example_passes_as_written(tmp_path: Path) -> None:
    example = readme_example()
    assert "def test_" in example and "(mesh)" in example and len(example.strip().splitlines()) <= 12
    (tmp_path / "test_release.py").write_text(example)
    # its split check counts Envoy's unseeded choices: at RANDOM_ALPHA, not the default 0.01, for a steady CI
    run = run_pytest(tmp_path, f"--mesh-alpha={RANDOM_ALPHA}", "test_release.py")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout, run.stdout[-3000:]


CHECKS = '''\
import pytest

from meshlib.dsl import deploy, distribution, responses, sending


def test_a_wrong_status_reads_as_its_message(mesh):
    deploy.apply_manifests(mesh, ["services", "ch5/webapp-catalog-gw-vs.yaml"])
    sending.through_gateway(mesh, 5, "/api/catalog", "webapp.istioinaction.io")
    responses.every_status(mesh, 404)


@pytest.mark.istio_version(">=1.28")
def test_only_on_newer_profiles(mesh):
    raise AssertionError("ran on a profile the marker excludes")


@pytest.mark.istio_version("1.28")
def test_pinned_to_1_28(mesh):
    assert mesh.backend.store.profile.version == "1.28"


def test_an_underpowered_split_check_leaves_a_note(mesh):
    deploy.apply_manifests(mesh, ["services", "ch5/webapp-catalog-gw-vs.yaml"])
    sending.through_gateway(mesh, 20, "/api/catalog", "webapp.istioinaction.io")
    distribution.about_share(mesh, 0.5, "catalog", "v2")
'''


def test_failures_skips_and_notes_read_as_a_user_needs_them(tmp_path: Path) -> None:
    (tmp_path / "test_checks.py").write_text(CHECKS)
    run = run_pytest(tmp_path, "-rs", "test_checks.py")
    out = run.stdout
    assert run.returncode == 1, out[-4000:] + run.stderr[-2000:]
    assert "1 failed, 2 passed, 1 skipped" in out, out[-4000:]
    failure = out.split("test_a_wrong_status_reads_as_its_message", 2)[-1]
    assert "test_checks.py:9: failed: " in failure and "404" in failure, out[-4000:]
    assert "Traceback" not in out and "def test_a_wrong_status" not in out, out[-4000:]
    assert "needs Istio >= 1.28 (@istio.version>=1.28); this run's profile is 1.17" in out, out[-4000:]
    notes = out.split("meshlib notes", 1)[-1]
    assert "test_checks.py::test_an_underpowered_split_check_leaves_a_note: " in notes, out[-4000:]
    assert "cannot reliably tell" in notes, out[-4000:]


def test_with_allure_pytest_every_check_attaches_its_evidence(tmp_path: Path) -> None:
    (tmp_path / "test_release.py").write_text(readme_example())
    results = tmp_path / "allure-results"
    run = run_pytest(tmp_path, f"--alluredir={results}", "test_release.py")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    [result] = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    names = [a["name"] for a in result.get("attachments", [])]
    assert any(n.startswith("300 requests through the ingress gateway") for n in names), names
    assert any("catalog v2" in n for n in names), names  # the split check's table
    for attachment in result["attachments"]:
        assert (results / attachment["source"]).stat().st_size > 0
    environment = (results / "environment.properties").read_text()
    assert "backend=local\n" in environment and "istio.profile=1.17\n" in environment, environment
    assert "runner=pytest " in environment and "envoy.version=" in environment, environment
    categories = [c["name"] for c in json.loads((results / "categories.json").read_text())]
    assert len(categories) >= 3, categories


def test_notes_from_xdist_workers_reach_the_terminal_summary(tmp_path: Path) -> None:
    (tmp_path / "test_checks.py").write_text(CHECKS)
    run = run_pytest(tmp_path, "-n", "2", "test_checks.py")
    out = run.stdout
    assert "1 failed, 2 passed, 1 skipped" in out, out[-4000:] + run.stderr[-2000:]
    notes = out.split("meshlib notes", 1)[-1]
    assert "test_checks.py::test_an_underpowered_split_check_leaves_a_note: " in notes, out[-4000:]
    assert "cannot reliably tell" in notes, out[-4000:]


def test_a_bad_setting_is_one_line_naming_the_option(tmp_path: Path) -> None:
    (tmp_path / "test_release.py").write_text(readme_example())
    run = run_pytest(tmp_path, "--mesh-alpha=2", "test_release.py")
    out = run.stdout
    assert run.returncode == 1, out[-3000:]
    assert "could not run: --mesh-alpha='2': use a false-failure rate above 0 and below 1" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
