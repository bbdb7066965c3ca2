"""Applying a kind meshlib does not model (an HPA) from a step stores it and says once, as a note on the console,
that it changes no proxy (issue 9)."""

from __future__ import annotations

from pathlib import Path

from meshlib.config.store import ConfigStore
from meshlib.dsl import deploy
from meshlib.dsl.world import World
from meshlib.profile import profile_for

HPA = """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, minReplicas: 1, maxReplicas: 3}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
"""


class StoreBackend:
    def __init__(self) -> None:
        self.store = ConfigStore(profile_for(None))

    def apply_text(self, text: str, namespace: str) -> list[str]:
        return [r.ref() for r in self.store.apply_text(text, namespace, filename="<step>")]


def test_a_kind_not_modelled_is_stored_and_noted_once() -> None:
    w = World(backend=StoreBackend(), namespace="istioinaction", manifests=Path("."))  # type: ignore[arg-type]
    applied = deploy.apply_yaml(w, HPA)
    assert len(applied) == 2 and w.backend.store.not_modelled()
    assert w.notes == ["not modelled: HorizontalPodAutoscaler/web (stored and listed; meshlib does not translate "
                       "these kinds, so they change no proxy's config)"]
    deploy.apply_yaml(w, HPA)
    assert len(w.notes) == 1
