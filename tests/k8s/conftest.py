"""Tests against a real Kubernetes control plane (tests/k8s/controlplane.py), built by tools/k8s/build-control-plane.

They carry the `k8s` mark, so a run can leave them out (`pytest -m "not k8s"`) or run only them (`-m k8s`), and they
skip, saying what to run, on a machine where the control plane is not built.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from controlplane import ControlPlane


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the control plane built by tools/k8s/build-control-plane")


@pytest.fixture(scope="session")
def cp() -> Iterator[ControlPlane]:
    """One control plane for the whole run (about 10 s to start); each test works in namespaces of its own."""
    with ControlPlane() as plane:
        yield plane
