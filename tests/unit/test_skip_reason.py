"""A @needs.prometheus skip says what the user can do where the run is: install Prometheus for the embedded mesh,
or point at the cluster's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from meshlib.dsl import metrics
from meshlib.dsl.world import World


def test_the_embedded_mesh_says_what_to_install_and_a_cluster_where_it_looked() -> None:
    local = World(SimpleNamespace(mesh=object()), "default", Path("manifests"))  # type: ignore[arg-type]
    cluster = World(SimpleNamespace(name="kubernetes"), "default", Path("manifests"))  # type: ignore[arg-type]
    assert "install Debian's prometheus package" in metrics.skip_reason(local)
    reason = metrics.skip_reason(cluster)
    assert "prometheus_url" in reason and "istio-system" in reason and "install" not in reason
