"""Fixtures for tests that run the embedded mesh on real loopback sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from meshclient import NS

from meshlib.local.mesh import LocalMesh

StartMesh = Callable[..., LocalMesh]


@pytest.fixture
def start_mesh() -> Iterator[StartMesh]:
    """Start a `LocalMesh` on a free gateway port with a fixed seed; every mesh is closed after the test."""
    started: list[LocalMesh] = []

    def start(paths: Sequence[str | Path] = (), *, seed: int = 7, istio_version: str | None = None) -> LocalMesh:
        mesh = LocalMesh([str(p) for p in paths], namespace=NS, port=0, seed=seed, istio_version=istio_version)
        mesh.start()
        started.append(mesh)
        return mesh

    yield start
    for mesh in started:
        mesh.close()
