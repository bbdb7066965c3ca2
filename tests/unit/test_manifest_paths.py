"""Manifest paths in steps stay inside the manifests folder unless the run allows others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshlib.config.store import ConfigStore
from meshlib.dsl import deploy
from meshlib.dsl.world import World
from meshlib.errors import MeshlibError
from meshlib.profile import profile_for


class RecordingBackend:
    """Only what the deploy steps call: the paths they would apply or delete."""

    def __init__(self) -> None:
        self.applied: list[Path] = []
        self.deleted: list[Path] = []
        self.store = ConfigStore(profile_for(None))  # empty: what the steps read back after applying

    def apply(self, paths: list[Path], namespace: str) -> list[str]:
        self.applied += paths
        return [f"applied {p.name}" for p in paths]

    def delete(self, paths: list[Path], namespace: str) -> list[str]:
        self.deleted += paths
        return []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    manifests = tmp_path / "project" / "manifests"
    (manifests / "ch5").mkdir(parents=True)
    (manifests / "ch5" / "vs.yaml").write_text("kind: VirtualService\n")
    (tmp_path / "secret.yaml").write_text("kind: Secret\n")
    return manifests


def world(folder: Path, **kw: Any) -> tuple[World, RecordingBackend]:
    backend = RecordingBackend()
    return World(backend, "default", folder, **kw), backend  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../../etc/x.yaml", "../secret.yaml", "ch5/../../secret.yaml", "/etc/passwd",
                                  "escape/secret.yaml"])
def test_a_path_outside_the_manifests_folder_fails_with_one_line(folder: Path, name: str) -> None:
    (folder / "escape").symlink_to(folder.parent.parent)  # a symlink inside that leads out
    w, backend = world(folder)
    for step in (deploy.apply_manifests, deploy.delete_manifests):
        with pytest.raises(MeshlibError) as err:
            step(w, [name])
        message = str(err.value)
        assert "\n" not in message
        assert f"manifest path {name!r} leads outside the manifests folder {folder.resolve()}" in message
        assert "-D allow_outside_manifests=true" in message
    assert backend.applied == [] and backend.deleted == []  # nothing reached the mesh


def test_paths_inside_the_folder_are_applied(folder: Path) -> None:
    w, backend = world(folder)
    deploy.apply_manifests(w, ["ch5/vs.yaml", "ch5/../ch5/vs.yaml", str(folder / "ch5/vs.yaml"), "ch5"])
    real = folder.resolve()
    assert [p.resolve() for p in backend.applied] == [real / "ch5/vs.yaml"] * 3 + [real / "ch5"]


def test_a_run_that_allows_other_paths_applies_them(folder: Path) -> None:
    w, backend = world(folder, allow_outside_manifests=True)
    deploy.apply_manifests(w, ["../../secret.yaml"])
    assert [p.resolve() for p in backend.applied] == [folder.parent.parent.resolve() / "secret.yaml"]
