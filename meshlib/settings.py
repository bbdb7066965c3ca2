"""The settings of a run, in one table: behave reads them as userdata (`-D key=value`, `[behave.userdata]`), pytest
as options and ini keys (`--mesh-backend`, `mesh_backend = ...`), and both open the mesh from them the same way.

Each setting is read as text; `RunSettings` checks and converts it once, so a bad value is the same one-line error
under both runners, naming the setting as the user wrote it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshlib.errors import InputError

if TYPE_CHECKING:  # the backends import the embedded mesh: only when a run opens one
    from meshlib.backend import Backend
    from meshlib.local.meshconfig import MeshConfig


@dataclass(frozen=True)
class Setting:
    key: str  # behave userdata key
    ini: str  # pytest ini key; the option is the ini key with dashes, unless `option` names another
    help: str
    default: str | None = None
    option: str | None = None

    @property
    def flag(self) -> str:
        return self.option or "--" + self.ini.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("backend", "mesh_backend", "where the mesh runs: local (the embedded mesh) or kubernetes", "local"),
    Setting("istio_version", "istio_version",
            "the Istio behaviour profile (default: the book's 1.17, or istiod's on a cluster)"),
    Setting("namespace", "mesh_namespace", "the namespace manifests go into", "default"),
    Setting("manifests", "mesh_manifests", "the folder manifest names are relative to", "manifests"),
    Setting("allow_outside_manifests", "mesh_allow_outside_manifests",
            "true lets manifest paths leave the manifests folder (e.g. ../shared/x.yaml)", "false"),
    Setting("alpha", "mesh_alpha", "false-failure rate of statistical checks", "0.01"),
    Setting("seed", "mesh_seed", "the embedded mesh's random seed (a number, or 'random')", "random"),
    Setting("time_scale", "mesh_time_scale", "real seconds per second of Flagger's analysis clock on the embedded "
            "mesh (0.05: a 45 s interval takes 2.25 s)", "1"),
    Setting("mesh_config", "mesh_config",
            "a mesh config (meshlib.yaml: user images, external stand-ins); read only when named"),
    Setting("context", "kube_context", "the kubeconfig context (kubernetes backend)"),
    Setting("allowed_contexts", "allowed_contexts", "contexts the run may touch, comma-separated (kubernetes backend)"),
    Setting("kubeconfig", "kubeconfig",
            "the kubeconfig file (kubernetes backend; default KUBECONFIG or ~/.kube/config)"),
    Setting("gateway_url", "gateway_url",
            "where the ingress gateway answers, when it is not port-forwarded (kubernetes backend)"),
    Setting("prometheus_url", "prometheus_url", "where Prometheus answers (kubernetes backend; default: a "
            "port-forward to the prometheus service in istio-system)"),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class RunSettings:
    """The settings of one run, checked. `source(key)` gives a setting's text as written (None: not set);
    `spell(key)` how the user writes it in this runner (`-D alpha`, `--mesh-alpha`), for error messages."""

    source: Callable[[str], str | None]
    spell: Callable[[str], str]

    def text(self, key: str) -> str | None:
        value = self.source(key)
        if value is None or str(value).strip() == "":
            return BY_KEY[key].default
        return str(value).strip()

    def alpha(self) -> float:
        return self._number("alpha", lambda v: 0 < v < 1, "a false-failure rate above 0 and below 1 (e.g. 0.01)")

    def time_scale(self) -> float:
        """Checked as `meshlib up --time-scale` checks it."""
        from argparse import ArgumentTypeError

        from meshlib.cliargs import time_scale

        try:
            return time_scale(self.text("time_scale") or "1")
        except ArgumentTypeError as exc:
            raise InputError(f"{self.spell('time_scale')}: {exc}") from None

    def flag(self, key: str) -> bool:
        value = (self.text(key) or "false").lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0"):
            return False
        raise InputError(f"{self.spell(key)}={value!r}: use true or false")

    def manifests(self, base: Path) -> Path:
        """The manifests folder, relative to `base` when written relative."""
        path = Path(self.text("manifests") or "manifests")
        return (path if path.is_absolute() else base / path).resolve()

    def open_backend(self, version: str | None, mesh_config: MeshConfig | None) -> Backend:
        """The backend these settings name, for a scenario or test on the Istio profile `version`."""
        from meshlib.backend import open_backend

        return open_backend(self.text("backend") or "local", self.text("namespace") or "default", version,
                            seed=self.text("seed"), time_scale=self.time_scale(), config=mesh_config,
                            context=self.text("context"), allowed_contexts=self.text("allowed_contexts"),
                            kubeconfig=self.text("kubeconfig"), gateway_url=self.text("gateway_url"),
                            prometheus_url=self.text("prometheus_url"))

    def _number(self, key: str, ok: Callable[[float], bool], use: str) -> float:
        text = self.text(key) or ""
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not ok(value):
            raise InputError(f"{self.spell(key)}={text!r}: use {use}")
        return value


def from_mapping(values: Mapping[str, object], spell: Callable[[str], str] = lambda key: f"-D {key}") -> RunSettings:
    """Settings from a mapping by behave key (behave's userdata)."""
    return RunSettings(lambda key: None if values.get(key) is None else str(values.get(key)), spell)


__all__ = ["BY_KEY", "SETTINGS", "RunSettings", "Setting", "from_mapping"]
