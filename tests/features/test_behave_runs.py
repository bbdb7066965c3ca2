"""The features as a user runs them: behave in a subprocess, on the real manifests and on broken copies.

A broken manifest must make the matching scenario fail with a message that says what was expected,
what was seen and how sure the check is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BEHAVE = [sys.executable, "-m", "behave", "--no-capture", "-f", "plain", "--no-timings"]


def behave(*args: str, manifests: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-D", f"manifests={manifests}"] if manifests else []
    return subprocess.run([*BEHAVE, *extra, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def broken(tmp_path: Path):
    """A copy of manifests/ whose files the test may edit."""
    copy = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", copy)
    return copy


def test_canary_feature_alone_passes() -> None:
    run = behave("features/canary.feature")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 scenarios passed, 0 failed" in run.stdout


def test_mirror_that_routes_to_v2_fails_with_what_was_seen(broken: Path) -> None:
    vs = broken / "ch5/catalog-vs-v2-mirror.yaml"
    vs.write_text(vs.read_text().replace("subset: version-v1", "subset: version-v2"))
    run = behave("features/mirroring.feature", "-n", "mirrored traffic never reaches clients", manifests=broken)
    assert run.returncode == 1
    out = run.stdout
    assert "expected no response to contain $..imageUrl" in out
    assert "but 100 of 100 did" in out


def test_a_misrouted_canary_fails_with_the_test_and_its_confidence(broken: Path) -> None:
    vs = broken / "ch5/catalog-vs-v2-10-90-mesh.yaml"
    vs.write_text(vs.read_text().replace("weight: 90", "weight: 70").replace("weight: 10", "weight: 30"))
    run = behave("features/canary.feature", "-n", "10% of traffic goes to the canary", manifests=broken)
    assert run.returncode == 1
    out = run.stdout
    assert "binomial" in out and "p-value" in out and "0.01" in out, out[-3000:]


def test_dry_run_fails_on_an_undefined_step(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features/undefined.feature").write_text(
        "Feature: x\n  Scenario: y\n    Given the moon is made of cheese\n")
    run = subprocess.run([sys.executable, "-m", "behave", "--dry-run", "-f", "plain", "features"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "undefined" in (run.stdout + run.stderr).lower()
