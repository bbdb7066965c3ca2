"""Deploying: manifests by path, inline YAML, deletions and mesh-wide settings."""

from __future__ import annotations

from meshlib.config import listing
from meshlib.dsl.world import World
from meshlib.report.applied import applied_document

OUTBOUND_POLICY = """apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: meshlib-outbound-policy
  namespace: istio-system
spec:
  meshConfig:
    outboundTrafficPolicy:
      mode: {mode}
"""
ACCESS_LOG = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: access-log-{app}
spec:
  selector:
    matchLabels:
      app: {app}
  accessLogging:
  - providers:
    - name: envoy
"""


def apply_manifests(world: World, names: list[str]) -> list[str]:
    applied = world.backend.apply([world.manifest(n) for n in names], world.namespace)
    world.attach(f"applied {', '.join(names)}", applied_document(applied), "html")
    _note_not_modelled(world, applied)
    return applied


def apply_yaml(world: World, text: str) -> list[str]:
    applied = world.backend.apply_text(text, world.namespace)
    world.attach("applied YAML", applied_document(applied, text), "html")
    _note_not_modelled(world, applied)
    return applied


def _note_not_modelled(world: World, applied: list[str]) -> None:
    """Kinds meshlib stores but does not translate (an HPA, a Role, a CRD) change no proxy: say so once."""
    refs = set(applied)
    line = listing.not_modelled_line([r for r in world.backend.store.not_modelled() if r.ref() in refs])
    if line:
        world.note(line)


def delete_manifests(world: World, names: list[str]) -> list[str]:
    return world.backend.delete([world.manifest(n) for n in names], world.namespace)


def delete_all(world: World, kind: str) -> int:
    return world.backend.delete_kind(kind, world.namespace)


def set_outbound_policy(world: World, mode: str) -> None:
    mode = mode.upper()
    if mode not in ("REGISTRY_ONLY", "ALLOW_ANY"):
        raise ValueError(f"outbound traffic policy must be REGISTRY_ONLY or ALLOW_ANY, not {mode!r}")
    apply_yaml(world, OUTBOUND_POLICY.format(mode=mode))


def enable_access_log(world: World, app: str) -> None:
    apply_yaml(world, ACCESS_LOG.format(app=app))
