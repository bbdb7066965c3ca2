"""features/ under pytest-bdd, through meshlib.bdd: the behave steps (meshlib's catalog and this project's steps/)
bound as pytest-bdd steps, each scenario on a mesh of its own from the `mesh` fixture, and behave.ini's userdata
(namespace, seed, time_scale, manifests) as the mesh settings, so a scenario runs on what it runs on under behave.

behave.ini's settings become the session's `--mesh-*` defaults (pytest options are per session, not per folder);
no other test in this repository uses the `mesh` fixture in-process, and a `--mesh-*` option still wins.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.bdd import bind_steps, use_behave_settings

ROOT = Path(__file__).resolve().parents[2]

bind_steps(ROOT / "steps")


def pytest_configure(config: pytest.Config) -> None:
    # meshlib.bdd's hooks and step_context fixture; `pytest_plugins` would do in a rootdir conftest only
    if not config.pluginmanager.has_plugin("meshlib.bdd"):
        config.pluginmanager.import_plugin("meshlib.bdd")
    use_behave_settings(config, ROOT / "behave.ini")
