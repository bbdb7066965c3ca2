"""The Flagger `Canary` as the controller reads it: names, Flagger's defaults, the strategy, and the spec hash.

Defaults follow flagger `pkg/apis/flagger/v1beta1` (v1.44): analysis interval 60 s (10 s at least), threshold 1,
max weight 100 (or the last of `stepWeights`), metric interval `1m`, progress deadline 600 s. A Canary without
`analysis` skips the analysis (Flagger's `SkipAnalysis()`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.config.kinds import Resource
from meshlib.errors import MeshlibError
from meshlib.units import parse_duration

FLAGGER_API = "flagger.app/v1beta1"
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # Flagger's `-selector-labels` default
TOTAL_WEIGHT = 100
DEFAULT_INTERVAL = 60.0
MIN_INTERVAL = 10.0
DEFAULT_METRIC_INTERVAL = "1m"
DEFAULT_PROGRESS_DEADLINE = 600


class CanaryError(MeshlibError):
    """A Canary or its target cannot be handled (Flagger records these as warning events and retries)."""


def manifest(obj: Resource | Mapping[str, Any], namespace: str = "default") -> dict[str, Any]:
    """A plain, deep-copied manifest dict (apiVersion/kind/metadata/spec) with metadata.namespace filled in."""
    if isinstance(obj, Resource):
        out = {"apiVersion": obj.api_version, "kind": obj.kind, "metadata": copy.deepcopy(obj.metadata),
               "spec": copy.deepcopy(obj.spec)}
        out["metadata"]["namespace"] = obj.namespace
        return out
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    return out


# --- the trigger hash --------------------------------------------------------------------------------------------
_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString


def template_hash(template: Mapping[str, Any] | None) -> str:
    """FNV-1a (32 bit) of the pod template, encoded like Flagger's `computeHash` (SafeEncodeString of the decimal).

    Flagger hashes a `spew` dump of the Go struct; we hash canonical JSON (sorted keys, no spaces) instead, so the
    value has Flagger's shape and stability but is not byte-identical to what a real Flagger stores.
    """
    data = json.dumps(template or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    h = 0x811C9DC5
    for byte in data.encode():
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHANUMS[ord(ch) % len(_SAFE_ALPHANUMS)] for ch in str(h))


def pod_template(target: Mapping[str, Any]) -> dict[str, Any]:
    return (target.get("spec") or {}).get("template") or {}


def selector_label(target: Mapping[str, Any]) -> tuple[str, str]:
    """The first of app, name, app.kubernetes.io/name in the target's `selector.matchLabels`, and its value."""
    match_labels = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for key in SELECTOR_LABELS:
        if key in match_labels:
            return key, str(match_labels[key])
    meta = target.get("metadata") or {}
    raise CanaryError(f"deployment {meta.get('name')}.{meta.get('namespace')} spec.selector.matchLabels must "
                      f"contain one of [{' '.join(SELECTOR_LABELS)}]")


# --- the Canary ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Canary:
    """A Canary resource: metadata plus its spec, with Flagger's defaults applied by the accessors."""

    name: str
    namespace: str
    spec: Mapping[str, Any]
    uid: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, obj: Resource | Mapping[str, Any], namespace: str = "default") -> Canary:
        doc = manifest(obj, namespace)
        if doc.get("kind") != "Canary":
            raise CanaryError(f"expected a Canary, got {doc.get('kind')!r}")
        meta = doc["metadata"]
        return cls(meta["name"], meta["namespace"], doc.get("spec") or {}, meta.get("uid"), meta.get("labels") or {})

    # names
    @property
    def ref(self) -> str:
        """`<canary>.<namespace>`: how Flagger names the canary in its events."""
        return f"{self.name}.{self.namespace}"

    @property
    def target_kind(self) -> str:
        return self.spec["targetRef"].get("kind", "Deployment")

    @property
    def target_name(self) -> str:
        return self.spec["targetRef"]["name"]

    @property
    def target_ref(self) -> str:
        return f"{self.target_name}.{self.namespace}"

    @property
    def primary_name(self) -> str:
        """The primary workload: `<target>-primary`."""
        return f"{self.target_name}-primary"

    @property
    def service(self) -> Mapping[str, Any]:
        return self.spec.get("service") or {}

    @property
    def apex(self) -> str:
        """The apex Service and VirtualService name: `service.name`, else the target's name."""
        return self.service.get("name") or self.target_name

    @property
    def primary_service(self) -> str:
        return f"{self.apex}-primary"

    @property
    def canary_service(self) -> str:
        return f"{self.apex}-canary"

    # analysis
    @property
    def analysis(self) -> Mapping[str, Any]:
        return self.spec.get("analysis") or self.spec.get("canaryAnalysis") or {}

    @property
    def skip_analysis(self) -> bool:
        if not self.spec.get("analysis") and not self.spec.get("canaryAnalysis"):
            return True
        return bool(self.spec.get("skipAnalysis"))

    @property
    def suspended(self) -> bool:
        return bool(self.spec.get("suspend"))

    @property
    def interval(self) -> float:
        """Seconds between two runs of the analysis (Flagger's `GetAnalysisInterval`)."""
        text = self.analysis.get("interval")
        if not text:
            return DEFAULT_INTERVAL
        try:
            seconds = parse_duration(text)
        except ValueError:
            return DEFAULT_INTERVAL
        return max(seconds, MIN_INTERVAL)

    @property
    def threshold(self) -> int:
        return self.analysis.get("threshold") or 1

    @property
    def progress_deadline(self) -> int:
        value = self.spec.get("progressDeadlineSeconds")
        return DEFAULT_PROGRESS_DEADLINE if value is None else value

    @property
    def step_weight(self) -> int:
        return self.analysis.get("stepWeight") or 0

    @property
    def step_weights(self) -> list[int]:
        return list(self.analysis.get("stepWeights") or [])

    @property
    def step_weight_promotion(self) -> int:
        return self.analysis.get("stepWeightPromotion") or 0

    @property
    def iterations(self) -> int:
        return self.analysis.get("iterations") or 0

    @property
    def mirror(self) -> bool:
        return bool(self.analysis.get("mirror"))

    @property
    def mirror_weight(self) -> int:
        return self.analysis.get("mirrorWeight") or 0

    @property
    def match(self) -> list[dict[str, Any]]:
        return list(self.analysis.get("match") or [])

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.analysis.get("metrics") or [])

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        return list(self.analysis.get("webhooks") or [])

    @property
    def strategy(self) -> str:
        """`A/B testing` (iterations + match), `Blue/Green` (iterations), else `Canary` (progressive weights)."""
        if self.iterations > 0 and self.match:
            return "A/B testing"
        if self.iterations > 0:
            return "Blue/Green"
        return "Canary"

    def max_weight(self) -> int:
        """The canary weight at which promotion starts (Flagger's `maxWeight`)."""
        if self.step_weights:
            return min(TOTAL_WEIGHT, self.step_weights[-1])
        return self.analysis.get("maxWeight") or TOTAL_WEIGHT

    def next_step_weight(self, canary_weight: int) -> int:
        """How much the next step adds to `canary_weight` (Flagger's `nextStepWeight`)."""
        steps = self.step_weights
        if self.step_weight > 0 or not steps:
            return self.step_weight
        max_step = TOTAL_WEIGHT - canary_weight
        if max_step == 0:
            return 1  # at 100 already: any non-zero step moves the canary to promotion
        if canary_weight == 0:
            return min(max_step, steps[0])
        for current, following in zip(steps, steps[1:], strict=False):
            if current == canary_weight:
                return min(max_step, following - canary_weight)
        return max_step
