"""Flagger's canary analysis for the Istio provider as a pure state machine driven by explicit ticks.

`CanaryController.tick(now, observed, metrics)` does what one run of Flagger's `advanceCanary` does
(flagger `pkg/controller/scheduler.go`, v1.44) and returns the objects Flagger would have written plus its events.
It applies nothing, reads no clock and does no I/O: the runtime passes the time, the target Deployment as it is now,
a readiness answer per workload, the MetricTemplates, a webhook runner and a metric provider, then pushes
`TickResult.apply` to its store and calls again at `next_tick_at` (every `analysis.interval`, on whatever clock).

One tick, in Flagger's order:
1. create the canary/primary Services and the primary Deployment; while Initializing wait for the primary to be
   ready, then scale the target to 0, create the apex Service, DestinationRules and VirtualService ⇒ Initialized;
2. advance only in Progressing/Waiting/WaitingPromotion/Promoting/Finalising, or when the target's pod-template hash
   differs from both `lastAppliedSpec` and `lastPromotedSpec` (so rolling back to the promoted spec never triggers);
3. primary not ready ⇒ wait; once past `progressDeadlineSeconds` roll back, except in Promoting/Finalising: then the
   primary already runs the new spec, so all traffic goes to the canary (left running) and the phase is Failed
   with canaryWeight 100 (handleFailedPromotion);
4. a new revision ⇒ confirm-rollout gates, called with the current phase, before the phase changes (closed:
   Waiting; open: "Confirm-rollout check <name> passed") ⇒ "New revision detected! Scaling up" ⇒ Progressing,
   this tick ends; a change during the analysis ⇒ routes back to 100/0 and the analysis restarts;
5. canary not ready ⇒ wait (rollback past the deadline); `skipAnalysis` ⇒ promote at once ⇒ Succeeded;
6. Promoting ⇒ all traffic to primary (or `stepWeightPromotion` steps) ⇒ Finalising ⇒ target scaled to 0 ⇒ Succeeded;
7. `failedChecks >= threshold` ⇒ rollback (checked before this tick's analysis);
8. the first step (canary weight 0, no iteration, nothing mirrored) runs only the pre-rollout webhooks; later steps
   run rollout webhooks, builtin metrics and MetricTemplate metrics; any failure adds one failed check and ends
   the tick;
9. strategy: A/B testing (match + iterations), Blue/Green (iterations) or Canary (step weights, then promotion).

So for the walkthrough's Canary the first weight step (0 → 10) happens on the tick after the one that detected
the new revision, without a metric check; the metrics are checked at 10, 20, 30, 40 and 50 %, the last check
being the one that promotes.

For the runtime:
- `TickResult.apply` holds the objects to write, in order; the target Deployment appears only in the ticks that
  scale it (Flagger leaves the user's Deployment alone otherwise);
- readiness is asked per Deployment name. At the first tick the primary does not exist yet, so a runtime that
  answers honestly stays Initializing until the next tick, as Flagger does; `progressDeadlineSeconds` counts from
  the first tick that saw a workload unready (for the target: from its scale-up);
- webhooks are answered by `Observation.webhooks`; without a runner every gate and check passes and rollback
  hooks do not signal.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from meshlib.canary import objects as gen
from meshlib.canary.metrics import MetricProvider, run_metric_checks
from meshlib.canary.objects import Routes
from meshlib.canary.spec import (
    FLAGGER_API,
    TOTAL_WEIGHT,
    Canary,
    CanaryError,
    manifest,
    pod_template,
    selector_label,
    template_hash,
)
from meshlib.config.kinds import Resource

if TYPE_CHECKING:
    from meshlib.config.store import ConfigStore


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


_ADVANCING = (Phase.PROGRESSING, Phase.WAITING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING)
_KEEPS_WEIGHT = (Phase.PROGRESSING, Phase.WAITING, Phase.PROMOTING)


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- status --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """The single `Promoted` condition Flagger keeps."""

    status: str
    reason: str
    message: str
    last_update_time: float
    last_transition_time: float
    type: str = "Promoted"

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message,
                "lastUpdateTime": rfc3339(self.last_update_time),
                "lastTransitionTime": rfc3339(self.last_transition_time)}


def _condition_for(phase: Phase, kind: str) -> tuple[str, str]:
    return {
        Phase.INITIALIZING: ("Unknown", f"New {kind} detected, starting initialization."),
        Phase.INITIALIZED: ("True", f"{kind} initialization completed."),
        Phase.WAITING: ("Unknown", "Waiting for approval."),
        Phase.WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
        Phase.PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
        Phase.PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
        Phase.FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
        Phase.SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
        Phase.FAILED: ("False", f"Canary analysis failed, {kind} scaled to zero."),
    }[phase]


@dataclass
class CanaryStatus:
    """`Canary.status` as Flagger writes it (times are seconds on the injected clock)."""

    phase: Phase = Phase.INITIALIZING
    canary_weight: int = 0
    failed_checks: int = 0
    iterations: int = 0
    last_applied_spec: str = ""
    last_promoted_spec: str = ""
    last_transition_time: float = 0.0
    conditions: list[Condition] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": str(self.phase), "canaryWeight": self.canary_weight,
                               "failedChecks": self.failed_checks, "iterations": self.iterations}
        if self.last_applied_spec:
            out["lastAppliedSpec"] = self.last_applied_spec
        if self.last_promoted_spec:
            out["lastPromotedSpec"] = self.last_promoted_spec
        out["lastTransitionTime"] = rfc3339(self.last_transition_time)
        out["conditions"] = [c.to_dict() for c in self.conditions]
        return out


# --- inputs and outputs --------------------------------------------------------------------------------------------
Readiness = Callable[[str], bool]
"""Is the Deployment with this name (in the Canary's namespace) rolled out and available?"""

WebhookRunner = Callable[[Mapping[str, Any], str], bool]
"""Call one `analysis.webhooks` entry for a phase; True when it answered 2xx."""


def _always_ready(_name: str) -> bool:
    return True


@dataclass(frozen=True)
class Observation:
    """What the controller sees of the world at one tick."""

    target: Mapping[str, Any] | Resource | None  # the target Deployment as it is now; None if it does not exist
    ready: Readiness = _always_ready
    metric_templates: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    webhooks: WebhookRunner | None = None  # None: every gate/check passes, rollback hooks do not signal


def observe(store: ConfigStore, canary: Canary, ready: Readiness = _always_ready,
            webhooks: WebhookRunner | None = None) -> Observation:
    """An Observation read from a `ConfigStore` (target Deployment and every MetricTemplate)."""
    target = store.get("Deployment", canary.namespace, canary.target_name)
    templates = {(t.namespace, t.name): t.spec for t in store.of_kind("MetricTemplate")}
    return Observation(manifest(target) if target is not None else None, ready, templates, webhooks)


@dataclass(frozen=True)
class Event:
    """One line of Flagger's log (Kubernetes events and controller log lines)."""

    time: float
    level: str  # info | warning | error
    message: str
    canary: str

    def __str__(self) -> str:
        return self.message

    def flagger_log(self) -> str:
        """The line as Flagger's JSON logger prints it."""
        return json.dumps({"level": self.level, "ts": rfc3339(self.time), "msg": self.message, "canary": self.canary})


@dataclass(frozen=True)
class HistoryPoint:
    """The state after one tick, for evidence and charts."""

    time: float
    phase: Phase
    canary_weight: int  # status.canaryWeight
    failed_checks: int
    iterations: int
    routes: Routes  # what the VirtualService says (differs from status in A/B, WaitingPromotion, Promoting)
    metrics: dict[str, float | None]  # values read this tick; None = "no values found"


@dataclass
class TickResult:
    time: float
    status: CanaryStatus
    routes: Routes
    events: list[Event]
    objects: list[dict[str, Any]]  # every object Flagger owns, as it should be now (+ the target if scaled now)
    apply: list[dict[str, Any]]  # those that are new or changed since the previous tick (+ the scaled target)

    @property
    def phase(self) -> Phase:
        return self.status.phase

    @property
    def canary_weight(self) -> int:
        return self.status.canary_weight

    @property
    def log(self) -> list[str]:
        return [e.message for e in self.events]

    def apply_yaml(self) -> str:
        return gen.to_yaml(self.apply)


# --- the controller ------------------------------------------------------------------------------------------------
class CanaryController:
    """One Canary's analysis. Construct it when the Canary is applied; call `tick` at `next_tick_at`."""

    def __init__(self, canary: Canary | Resource | Mapping[str, Any], now: float = 0.0) -> None:
        self.canary = canary if isinstance(canary, Canary) else Canary.from_manifest(canary)
        status, message = _condition_for(Phase.INITIALIZING, self.canary.target_kind)
        self.status = CanaryStatus(last_transition_time=now,
                                   conditions=[Condition(status, str(Phase.INITIALIZING), message, now, now)])
        self.next_tick_at = now  # Flagger runs a new job at once, then every interval
        self.history: list[HistoryPoint] = []
        self.events: list[Event] = []
        self._routes = Routes()
        self._primary_source: dict[str, Any] | None = None
        self._primary_replicas = 1
        self._routing = False  # apex Service, DestinationRules and VirtualService exist
        self._scale_to: int | None = None  # the replicas the target is scaled to in this tick, if it is
        self._unready_since: dict[str, float] = {}
        self._emitted: dict[tuple[str, str, str], dict[str, Any]] = {}
        # per tick
        self._now = now
        self._hash = ""
        self._target: Mapping[str, Any] = {}
        self._tick_events: list[Event] = []
        self._tick_metrics: dict[str, float | None] = {}

    # --- public ------------------------------------------------------------------------------------------------
    def update(self, canary: Canary | Resource | Mapping[str, Any], now: float | None = None) -> None:
        """The Canary was re-applied: later ticks use the new spec. With the same analysis interval its job keeps
        its cadence; a changed interval replaces the job, which runs at once (`now`) and then every new interval
        (pkg/controller/scheduler.go scheduleCanaries, job.go Start)."""
        new = canary if isinstance(canary, Canary) else Canary.from_manifest(canary)
        if new.interval != self.canary.interval:
            self.next_tick_at = now if now is not None else self.next_tick_at
        self.canary = new

    @property
    def routes(self) -> Routes:
        """The weights in the VirtualService, read back the way Flagger's `GetRoutes` does."""
        return gen.routes_of(gen.virtual_service(self.canary, self._routes), self.canary)

    def manifest(self) -> dict[str, Any]:
        """The Canary with its status, as `kubectl get canary -o yaml` would show it."""
        meta = {"name": self.canary.name, "namespace": self.canary.namespace}
        return {"apiVersion": FLAGGER_API, "kind": "Canary", "metadata": meta,
                "spec": copy.deepcopy(dict(self.canary.spec)), "status": self.status.to_dict()}

    def tick(self, now: float, observed: Observation, metrics: MetricProvider) -> TickResult:
        """One run of the analysis at `now`."""
        self._now, self._tick_events, self._tick_metrics, self._scale_to = now, [], {}, None
        if isinstance(observed.target, Resource):
            observed = replace(observed, target=manifest(observed.target))
        target = observed.target
        if target is not None:
            self._target = target
            self._hash = template_hash(pod_template(target))
        try:
            self._advance(observed, metrics)
        finally:
            self.next_tick_at = now + self.canary.interval
        desired = self._desired()
        apply = [o for o in desired if self._emitted.get(gen.object_key(o)) != o]
        self._note_created(apply)
        self._emitted.update({gen.object_key(o): o for o in desired})
        if self._scale_to is not None and self._target:
            # the target is the user's object: Flagger only scales it (at initialisation, scale-up, finalising and
            # rollback) and leaves it alone in between, so it appears only in the tick that scales it
            scaled = gen.scaled_target(self._target, self._scale_to)
            desired, apply = [*desired, scaled], [*apply, scaled]
        status = replace(self.status, conditions=list(self.status.conditions))
        routes = self.routes
        self.history.append(HistoryPoint(now, status.phase, status.canary_weight, status.failed_checks,
                                         status.iterations, routes, dict(self._tick_metrics)))
        self.events += self._tick_events
        return TickResult(now, status, routes, list(self._tick_events), desired, apply)

    # --- events and status -------------------------------------------------------------------------------------
    def _log(self, level: str, message: str) -> None:
        self._tick_events.append(Event(self._now, level, message, self.canary.ref))

    def _info(self, message: str) -> None:
        self._log("info", message)

    def _warn(self, message: str) -> None:
        self._log("warning", message)

    def _set_condition(self, phase: Phase) -> None:
        status, message = _condition_for(phase, self.canary.target_kind)
        current = self.status.conditions[0] if self.status.conditions else None
        if current is not None and current.status == status and current.reason == str(phase):
            return
        since = current.last_transition_time if current is not None and current.status == status else self._now
        self.status.conditions = [Condition(status, str(phase), message, self._now, since)]

    def _sync(self, phase: Phase, weight: int = 0, failed: int = 0, iterations: int = 0) -> None:
        """Flagger's SyncStatus: phase and counters as given, lastAppliedSpec = the target's current hash."""
        self._set_condition(phase)
        s = self.status
        s.phase, s.canary_weight, s.failed_checks, s.iterations = phase, weight, failed, iterations
        s.last_applied_spec = self._hash
        if phase == Phase.INITIALIZED:
            s.last_promoted_spec = self._hash
        s.last_transition_time = self._now

    def _set_phase(self, phase: Phase) -> None:
        """Flagger's SetStatusPhase."""
        s = self.status
        s.phase, s.last_transition_time = phase, self._now
        if phase not in _KEEPS_WEIGHT:
            s.canary_weight, s.iterations = 0, 0
            if phase == Phase.WAITING_PROMOTION:
                s.iterations = self.canary.iterations - 1
        if phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
            s.last_promoted_spec = s.last_applied_spec
        self._set_condition(phase)

    def _set_counter(self, **values: int) -> None:
        for name, value in values.items():
            setattr(self.status, name, value)
        self.status.last_transition_time = self._now

    # --- world -------------------------------------------------------------------------------------------------
    def _target_changed(self) -> bool:
        s = self.status
        if not s.last_applied_spec:
            return True
        if s.last_promoted_spec == self._hash:
            return False  # a manual rollback to the promoted spec
        return s.last_applied_spec != self._hash

    def _ready(self, name: str, observed: Observation) -> tuple[bool, bool]:
        """(ready, retriable): not ready for longer than progressDeadlineSeconds is not retriable."""
        if observed.ready(name):
            self._unready_since.pop(name, None)
            return True, True
        since = self._unready_since.setdefault(name, self._now)
        return False, not since + self.canary.progress_deadline < self._now

    def _not_ready_message(self, name: str, retriable: bool, prefix: str = "") -> str:
        why = "waiting for rollout to finish" if retriable else f'deployment "{name}" exceeded its progress deadline'
        return f"{prefix}{name}.{self.canary.namespace} not ready: {why}"

    def _call_hook(self, observed: Observation, hook: Mapping[str, Any], phase: Phase) -> bool:
        if observed.webhooks is None:
            return hook.get("type") != "rollback"
        return bool(observed.webhooks(hook, str(phase)))

    def _hooks(self, kind: str) -> list[dict[str, Any]]:
        return [h for h in self.canary.webhooks if (h.get("type") or "rollout") == kind]

    def _desired(self) -> list[dict[str, Any]]:
        c = self.canary
        if self._primary_source is None or not self._target:
            return list(self._emitted.values())
        try:
            if not self._routing:
                return [*gen.services(c, self._target)[:2],
                        gen.primary_deployment(c, self._primary_source, self._primary_replicas)]
            return gen.generated_objects(c, self._target, self._primary_source, self._primary_replicas,
                                         self._routes, target_replicas=None)
        except CanaryError:
            return list(self._emitted.values())

    def _note_created(self, apply: list[dict[str, Any]]) -> None:
        """Flagger's "<Kind> <name>.<ns> created" lines (not for the target or the apex Service, which existed).

        They go first in the tick's events: Flagger creates the objects before it reports on the analysis.
        """
        events, self._tick_events = self._tick_events, []
        for obj in apply:
            kind, namespace, name = key = gen.object_key(obj)
            if key in self._emitted or (kind, name) in (("Deployment", self.canary.target_name),
                                                        ("Service", self.canary.apex)):
                continue
            self._info(f"{kind} {name}.{namespace} created")
        self._tick_events += events

    # --- the run -----------------------------------------------------------------------------------------------
    def _advance(self, observed: Observation, metrics: MetricProvider) -> None:
        c = self.canary
        if c.suspended:
            self._info("skipping canary run as object is suspended")
            return
        if observed.target is None:
            self._warn(f'deployment {c.target_ref} get query error: deployments.apps "{c.target_name}" not found')
            return
        try:
            selector_label(observed.target)
        except CanaryError as exc:
            self._warn(str(exc))
            return
        target = observed.target
        initializing = self.status.phase == Phase.INITIALIZING

        # create the primary workload
        if self._primary_source is None:
            self._primary_source = copy.deepcopy(dict(target))
            self._primary_replicas = gen.scale_up_replicas(target)
        if initializing:
            if not c.skip_analysis:
                ready, retriable = self._ready(c.primary_name, observed)
                if not ready:
                    self._warn(self._not_ready_message(c.primary_name, retriable))
                    return  # without the VirtualService a rollback cannot route anything: Flagger retries
            self._info(f"Scaling down Deployment {c.target_ref}")
            self._scale_to = 0
            self._routing = True
            self._sync(Phase.INITIALIZED)
            self._info(f"Initialization done! {c.ref}")

        if not self._should_advance():
            return
        if not c.skip_analysis and not self._primary_ready(observed):
            return
        routes = self.routes
        if not self._check_canary_status(observed, target):
            return
        if self.status.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION) and self._target_changed():
            self._routes = Routes()
            self._sync(Phase.PROGRESSING)
            self._info(f"New revision detected! Restarting analysis for {c.target_ref}")
            return
        ready, retriable = self._ready(c.target_name, observed)
        if not ready:
            message = self._not_ready_message(c.target_name, retriable, "canary deployment ")
            self._warn(message)
            if not retriable:
                self._warn(f"Rolling back {c.ref} progress deadline exceeded {message}")
                self._rollback(observed)
            return
        if c.skip_analysis:
            self._routes = Routes()
            self._promote(target)
            self._scale_to = 0
            self._set_phase(Phase.SUCCEEDED)
            self._post_rollout(observed, Phase.SUCCEEDED)
            self._info(f"Promotion completed! Canary analysis was skipped for {c.target_ref}")
            return
        if self.status.phase in (Phase.PROGRESSING, Phase.WAITING, Phase.WAITING_PROMOTION):
            for hook in self._hooks("rollback"):
                if self._call_hook(observed, hook, self.status.phase):
                    self._warn(f"Rollback check {hook.get('name')} passed")
                    self._warn(f"Rolling back {c.ref} manual webhook invoked")
                    self._rollback(observed)
                    return
        if self.status.phase == Phase.PROMOTING:
            self._promotion_traffic_shift(routes)
            return
        if self.status.phase == Phase.FINALISING:
            self._scale_to = 0
            self._set_phase(Phase.SUCCEEDED)
            self._post_rollout(observed, Phase.SUCCEEDED)
            self._info(f"Promotion completed! Scaling down {c.target_ref}")
            return
        if (self.status.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
                and self.status.failed_checks >= c.threshold):
            self._rollback(observed)
            return

        if routes.canary == 0 and self.status.iterations == 0 and not (c.mirror and routes.mirrored):
            self._info(f"Starting canary analysis for {c.target_ref}")
            if not self._pre_rollout(observed):
                self._set_counter(failed_checks=self.status.failed_checks + 1)
                return
        elif not self._analysis(observed, metrics):
            self._set_counter(failed_checks=self.status.failed_checks + 1)
            return

        if c.match and c.iterations > 0:
            self._run_ab(observed, target)
        elif c.iterations > 0:
            self._run_blue_green(observed, target, routes)
        elif c.next_step_weight(routes.canary) > 0:
            if not routes.mirrored and self.status.phase not in (Phase.PROMOTING, Phase.WAITING_PROMOTION,
                                                                 Phase.FINALISING):
                if not self._confirm_traffic_increase(observed):
                    return
            self._run_canary(observed, target, routes)

    def _primary_ready(self, observed: Observation) -> bool:
        """Flagger's primary check: wait while it rolls out; past the deadline roll back, except while promoting,
        when the primary already runs the new spec and the canary is the only healthy copy of it."""
        c = self.canary
        ready, retriable = self._ready(c.primary_name, observed)
        if ready:
            return True
        message = self._not_ready_message(c.primary_name, retriable)
        self._warn(message)
        if retriable:
            return False
        if self.status.phase in (Phase.PROMOTING, Phase.FINALISING):
            self._fail_promotion(observed, message)
        else:
            self._rollback(observed)
        return False

    def _should_advance(self) -> bool:
        if self.status.phase in _ADVANCING:
            return True
        changed = self._target_changed()
        if self.status.phase == Phase.FAILED:
            # Flagger syncs lastAppliedSpec even when failed, after it took the decision from the old value: so
            # going back to the promoted spec and then re-applying the failed one retries it
            s = self.status
            self._sync(Phase.FAILED, s.canary_weight, s.failed_checks, s.iterations)
        return changed

    def _check_canary_status(self, observed: Observation, target: Mapping[str, Any]) -> bool:
        """Continue an analysis, or start one for a new revision (which ends this tick). The confirm-rollout gate
        comes first: until it passes the phase only changes to Waiting, and the gate leaves lastAppliedSpec alone."""
        if self.status.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING):
            return True
        if not self._confirm_rollout(observed):
            return False
        self._info(f"New revision detected! Scaling up {self.canary.target_ref}")
        self._scale_to = gen.scale_up_replicas(target)
        self._unready_since[self.canary.target_name] = self._now  # scaled up from 0: unavailable until ready
        self._sync(Phase.PROGRESSING)
        return False

    def _confirm_rollout(self, observed: Observation) -> bool:
        """The confirm-rollout webhooks, called with the phase the Canary is in (Initialized, Succeeded, Failed or
        Waiting); a closed gate sets Waiting once."""
        for hook in self._hooks("confirm-rollout"):
            if not self._call_hook(observed, hook, self.status.phase):
                if self.status.phase != Phase.WAITING:
                    self._set_phase(Phase.WAITING)
                    self._warn(f"Halt {self.canary.ref} advancement waiting for approval {hook.get('name')}")
                return False
            self._info(f"Confirm-rollout check {hook.get('name')} passed")
        return True

    def _confirm_traffic_increase(self, observed: Observation) -> bool:
        for hook in self._hooks("confirm-traffic-increase"):
            if not self._call_hook(observed, hook, Phase.PROGRESSING):
                self._warn(f"Halt {self.canary.ref} advancement waiting for traffic increase approval "
                           f"{hook.get('name')}")
                return False
            self._info(f"Confirm-traffic-increase check {hook.get('name')} passed")
        return True

    def _confirm_promotion(self, observed: Observation) -> bool:
        for hook in self._hooks("confirm-promotion"):
            if not self._call_hook(observed, hook, Phase.PROGRESSING):
                if self.status.phase != Phase.WAITING_PROMOTION:
                    self._set_phase(Phase.WAITING_PROMOTION)
                    self._warn(f"Halt {self.canary.ref} advancement waiting for promotion approval {hook.get('name')}")
                else:
                    self._set_counter(iterations=self.canary.iterations - 1)
                return False
            self._info(f"Confirm-promotion check {hook.get('name')} passed")
        return True

    def _pre_rollout(self, observed: Observation) -> bool:
        for hook in self._hooks("pre-rollout"):
            if not self._call_hook(observed, hook, Phase.PROGRESSING):
                self._warn(f"Halt {self.canary.ref} advancement pre-rollout check {hook.get('name')} failed")
                return False
            self._info(f"Pre-rollout check {hook.get('name')} passed")
        return True

    def _post_rollout(self, observed: Observation, phase: Phase) -> None:
        for hook in self._hooks("post-rollout"):
            if self._call_hook(observed, hook, phase):
                self._info(f"Post-rollout check {hook.get('name')} passed")
            else:
                self._warn(f"Post-rollout hook {hook.get('name')} failed")

    def _analysis(self, observed: Observation, metrics: MetricProvider) -> bool:
        for hook in self._hooks("rollout"):
            if not self._call_hook(observed, hook, Phase.PROGRESSING):
                self._warn(f"Halt {self.canary.ref} advancement external check {hook.get('name')} failed")
                return False
        result = run_metric_checks(self.canary, metrics, observed.metric_templates)
        self._tick_metrics.update(result.values)
        if not result.ok:
            self._log(result.level, result.message)
        return result.ok

    def _promote(self, target: Mapping[str, Any]) -> None:
        c = self.canary
        self._info(f"Copying {c.target_ref} template spec to {c.primary_name}.{c.namespace}")
        self._primary_source = copy.deepcopy(dict(target))

    def _rollback(self, observed: Observation) -> None:
        c = self.canary
        if self.status.failed_checks >= c.threshold:
            self._warn(f"Rolling back {c.ref} failed checks threshold reached {self.status.failed_checks}")
        if not self._routing:
            return  # no VirtualService to route back yet: Flagger's SetRoutes fails and the tick ends
        self._routes = Routes()
        self._warn(f"Canary failed! Scaling down {c.ref}")
        self._scale_to = 0
        self._sync(Phase.FAILED)
        self._post_rollout(observed, Phase.FAILED)

    def _fail_promotion(self, observed: Observation, reason: str) -> None:
        """The primary got stuck while promoting: all traffic to the canary (left running), phase Failed with the
        canary weight that matches the routes."""
        c = self.canary
        self._warn(f"Promotion of {c.target_ref} failed, primary not ready: {reason}")
        if not self._routing:
            return  # no VirtualService to route with: Flagger's SetRoutes fails and the tick ends
        self._routes = Routes(0, TOTAL_WEIGHT)
        self._sync(Phase.FAILED, TOTAL_WEIGHT)
        self._post_rollout(observed, Phase.FAILED)

    def _promotion_traffic_shift(self, routes: Routes) -> None:
        c = self.canary
        step = c.step_weight_promotion
        if step == 0:
            self._info("Routing all traffic to primary")
            self._routes = Routes()
            self._set_phase(Phase.FINALISING)
            return
        if routes.canary > 0:
            primary = min(TOTAL_WEIGHT, routes.primary + step)
            canary_weight = max(0, routes.canary - step)
            self._routes = Routes(primary, canary_weight)
            self._info(f"Advance {c.ref} primary weight {primary}")
            if primary == TOTAL_WEIGHT:
                self._set_phase(Phase.FINALISING)
            else:
                self._set_counter(canary_weight=canary_weight)

    def _run_canary(self, observed: Observation, target: Mapping[str, Any], routes: Routes) -> None:
        c = self.canary
        primary, canary_weight, mirrored = routes.primary, routes.canary, routes.mirrored
        if canary_weight < c.max_weight():
            step = c.next_step_weight(canary_weight)
            if c.mirror and canary_weight == 0:
                if not mirrored:
                    mirrored, primary, canary_weight = True, TOTAL_WEIGHT, 0
                else:
                    mirrored, primary, canary_weight = False, TOTAL_WEIGHT - step, step
                self._info(f"Running mirror step {primary}/{canary_weight}/{str(mirrored).lower()}")
            else:
                primary = max(0, primary - step)
                canary_weight = min(TOTAL_WEIGHT, canary_weight + step)
            self._routes = Routes(primary, canary_weight, mirrored)
            self._set_counter(canary_weight=canary_weight)
            self._info(f"Advance {c.ref} canary weight {canary_weight}")
            return
        if not self._confirm_promotion(observed):
            return
        self._promote(target)
        self._set_phase(Phase.PROMOTING)

    def _run_ab(self, observed: Observation, target: Mapping[str, Any]) -> None:
        c = self.canary
        if c.iterations > self.status.iterations:
            self._routes = Routes(0, TOTAL_WEIGHT)
            self._set_counter(iterations=self.status.iterations + 1)
            self._info(f"Advance {c.ref} canary iteration {self.status.iterations}/{c.iterations}")
            return
        if not self._confirm_promotion(observed):
            return
        if c.iterations == self.status.iterations:
            self._promote(target)
            self._set_phase(Phase.PROMOTING)

    def _run_blue_green(self, observed: Observation, target: Mapping[str, Any], routes: Routes) -> None:
        c = self.canary
        if c.iterations > self.status.iterations:
            if c.mirror and not routes.mirrored:
                self._routes = Routes(TOTAL_WEIGHT, 0, True)
                self._info("Start traffic mirroring")
            self._set_counter(iterations=self.status.iterations + 1)
            self._info(f"Advance {c.ref} canary iteration {self.status.iterations}/{c.iterations}")
            return
        if not self._confirm_promotion(observed):
            return
        if c.iterations == self.status.iterations:
            self._info("Stop traffic mirroring and route all traffic to canary" if c.mirror
                       else "Routing all traffic to canary")
            self._routes = Routes(0, TOTAL_WEIGHT)
            self._set_counter(iterations=self.status.iterations + 1)
            return
        if c.iterations < self.status.iterations:
            self._promote(target)
            self._set_phase(Phase.PROMOTING)
