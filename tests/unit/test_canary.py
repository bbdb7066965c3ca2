"""Flagger's Istio canary as a pure state machine: the walkthrough's release, every phase, and the generated objects.

Time is a fake clock: each tick happens at the controller's `next_tick_at` (every `analysis.interval`, 45 s for the
walkthrough). Metrics are scripted. The "runtime" here only does what a real one must: keep the target Deployment
it observed up to date with what the controller scaled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml
from helpers import CH5, NS, SERVICES, WEBAPP_PROXY, catalog_routes, world

from meshlib.canary import (
    Canary,
    CanaryController,
    MetricQueryError,
    Observation,
    Phase,
    Routes,
    TickResult,
    generated_objects,
    observe,
    owned_by,
    template_hash,
    to_yaml,
    virtual_service,
)
from meshlib.canary.metrics import BUILTIN_QUERIES, go_duration_ms, go_float, render_query
from meshlib.canary.objects import primary_deployment, routes_of, services
from meshlib.canary.spec import CanaryError, selector_label
from meshlib.config.store import ConfigStore

SR, DUR = "request-success-rate", "request-duration"
V1 = yaml.safe_load((SERVICES / "catalog/kubernetes/catalog-deployment.yaml").read_text())
V2 = yaml.safe_load((CH5 / "flagger/catalog-deployment-v2.yaml").read_text())
RELEASE = yaml.safe_load((CH5 / "flagger/catalog-release.yaml").read_text())
PRIMARY = f"outbound|80||catalog-primary.{NS}.svc.cluster.local"
CANARY = f"outbound|80||catalog-canary.{NS}.svc.cluster.local"


def deployment(doc: Mapping[str, Any], **env: str) -> dict[str, Any]:
    out = copy.deepcopy(dict(doc))
    out["metadata"]["namespace"] = NS
    for name, value in env.items():
        out["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append({"name": name, "value": value})
    return out


V3 = deployment(V2, RELEASE="v3")


def release(analysis: Mapping[str, Any] | None = None, drop: tuple[str, ...] = (), **spec: Any) -> Canary:
    """The walkthrough's Canary, with analysis fields replaced/dropped and spec fields replaced."""
    doc = copy.deepcopy(RELEASE)
    doc["metadata"]["namespace"] = NS
    doc["spec"]["analysis"].update(analysis or {})
    for name in drop:
        doc["spec"]["analysis"].pop(name)
    doc["spec"].update(spec)
    return Canary.from_manifest(doc)


class Metrics:
    """Scripted metric values: a constant, or a callable of the call number; records every query."""

    def __init__(self, success: Any = 100.0, duration: Any = 50.0, custom: Any = 1.0) -> None:
        self.values = {SR: success, DUR: duration, "custom": custom}
        self.calls: list[tuple[str, str]] = []

    def _value(self, key: str) -> float | None:
        v = self.values[key]
        n = sum(1 for k, _ in self.calls if k == key)
        return v(n) if callable(v) else v

    def builtin(self, name: str, *, query: str, target: str, namespace: str, interval: str) -> float | None:
        self.calls.append((name, query))
        assert (target, namespace) == ("catalog", NS)
        return self._value(name)

    def query(self, query: str, *, provider: Mapping[str, Any]) -> float | None:
        self.calls.append(("custom", query))
        return self._value("custom")


class Harness:
    """A controller, the target Deployment it watches, readiness per workload, and the fake clock."""

    def __init__(self, canary: Canary | None = None, *, metrics: Metrics | None = None,
                 webhooks: Callable[[Mapping[str, Any], str], bool] | None = None,
                 templates: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> None:
        self.canary = canary or release()
        self.ctl = CanaryController(self.canary, now=0.0)
        self.target: dict[str, Any] = deployment(V1)
        self.ready: dict[str, bool] = {}
        self.metrics = metrics or Metrics()
        self.webhooks = webhooks
        self.templates = templates or {}
        self.results: list[TickResult] = []

    def deploy(self, doc: Mapping[str, Any]) -> None:
        """`kubectl apply` of a new target (replicas as written)."""
        self.target = copy.deepcopy(dict(doc))

    def tick(self) -> TickResult:
        observed = Observation(self.target, lambda name: self.ready.get(name, True), self.templates, self.webhooks)
        result = self.ctl.tick(self.ctl.next_tick_at, observed, self.metrics)
        for obj in result.apply:  # the runtime applies what the controller wrote, the scaled target included
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == self.canary.target_name:
                self.target = copy.deepcopy(obj)
        self.results.append(result)
        return result

    def ticks(self, n: int) -> list[TickResult]:
        return [self.tick() for _ in range(n)]

    def start(self, new: Mapping[str, Any] = V2) -> TickResult:
        """Initialise, then deploy `new`; returns the tick that detected it."""
        assert self.tick().phase == Phase.INITIALIZED
        self.deploy(deployment(new))
        return self.tick()

    def find(self, kind: str, name: str, result: TickResult | None = None) -> dict[str, Any]:
        objs = (result or self.results[-1]).objects
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    def vs_weights(self, result: TickResult | None = None) -> list[list[tuple[str, int]]]:
        vs = self.find("VirtualService", "catalog", result)
        return [[(d["destination"]["host"], d["weight"]) for d in r["route"]] for r in vs["spec"]["http"]]


def seq(results: list[TickResult]) -> list[tuple[float, str, int]]:
    return [(r.time, str(r.phase), r.canary_weight) for r in results]


def logs(results: list[TickResult]) -> list[str]:
    return [line for r in results for line in r.log]


class Gate:
    """A webhook runner whose gates open and close; records (hook name, phase) of every call."""

    def __init__(self, open_: bool = False) -> None:
        self.open = open_
        self.calls: list[tuple[str, str]] = []

    def __call__(self, hook: Mapping[str, Any], phase: str) -> bool:
        self.calls.append((hook["name"], phase))
        return self.open or not hook["type"].startswith("confirm-")


# --- the walkthrough ---------------------------------------------------------------------------------------------
def test_walkthrough_release_promotes_with_weights_10_to_50() -> None:
    h = Harness()
    h.tick()
    h.deploy(deployment(V2))
    results = [h.results[0], *h.ticks(9)]
    assert seq(results) == [
        (0, "Initialized", 0),
        (45, "Progressing", 0),    # new revision detected: target scaled up, no step yet
        (90, "Progressing", 10),   # first step: pre-rollout hooks only, no metric check
        (135, "Progressing", 20),  # metrics checked at 10 %
        (180, "Progressing", 30),
        (225, "Progressing", 40),
        (270, "Progressing", 50),
        (315, "Promoting", 50),    # metrics checked at 50 % (maxWeight): template copied to the primary
        (360, "Finalising", 0),    # all traffic back to the (new) primary
        (405, "Succeeded", 0),     # target scaled to 0
    ]
    # the VirtualService's matched rule (webapp) carries the weights; the other rule sends the rest to primary
    weights = [h.vs_weights(r)[0] for r in results]
    assert [w[1][1] for w in weights] == [0, 0, 10, 20, 30, 40, 50, 50, 0, 0]
    assert h.vs_weights(results[3]) == [[("catalog-primary", 80), ("catalog-canary", 20)], [("catalog-primary", 80)]]
    # metric checks: both metrics at 10, 20, 30, 40 and 50 %, with their own intervals
    assert [name for name, _ in h.metrics.calls] == [SR, DUR] * 5
    assert 'destination_workload=~"catalog"' in h.metrics.calls[0][1] and "[1m]" in h.metrics.calls[0][1]
    assert "[30s]" in h.metrics.calls[1][1]
    assert [p.metrics for p in h.ctl.history][3] == {SR: 100.0, DUR: 50.0}
    assert logs(results[1:]) == [
        "New revision detected! Scaling up catalog.istioinaction",
        "Starting canary analysis for catalog.istioinaction",
        "Advance catalog-release.istioinaction canary weight 10",
        "Advance catalog-release.istioinaction canary weight 20",
        "Advance catalog-release.istioinaction canary weight 30",
        "Advance catalog-release.istioinaction canary weight 40",
        "Advance catalog-release.istioinaction canary weight 50",
        "Copying catalog.istioinaction template spec to catalog-primary.istioinaction",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down catalog.istioinaction",
    ]
    assert "Initialization done! catalog-release.istioinaction" in results[0].log
    # the new primary runs v2 (SHOW_IMAGE), the target is scaled to 0, the status records the promotion
    env = h.find("Deployment", "catalog-primary")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SHOW_IMAGE", "value": "true"} in env
    assert h.target["spec"]["replicas"] == 0
    status = h.ctl.status.to_dict()
    assert status["lastPromotedSpec"] == status["lastAppliedSpec"] == template_hash(V2["spec"]["template"])
    assert status["conditions"][0] | {"lastUpdateTime": "", "lastTransitionTime": ""} == {
        "type": "Promoted", "status": "True", "reason": "Succeeded", "lastUpdateTime": "", "lastTransitionTime": "",
        "message": "Canary analysis completed successfully, promotion finished."}
    # and stays there
    assert seq([h.tick()]) == [(450, "Succeeded", 0)] and h.results[-1].apply == []
    # re-applying the promoted spec (replicas: 1) starts nothing, and Flagger does not scale it down again
    h.deploy(deployment(V2))
    assert (str(h.tick().phase), h.results[-1].apply, h.target["spec"]["replicas"]) == ("Succeeded", [], 1)


def test_each_tick_writes_only_what_changed() -> None:
    h = Harness()
    first = h.tick()
    assert [(o["kind"], o["metadata"]["name"]) for o in first.apply] == [
        ("Service", "catalog-canary"), ("Service", "catalog-primary"), ("Deployment", "catalog-primary"),
        ("Service", "catalog"), ("DestinationRule", "catalog-canary"), ("DestinationRule", "catalog-primary"),
        ("VirtualService", "catalog"), ("Deployment", "catalog")]  # the target scaled to 0 once all is in place
    assert first.log[:3] == ["Service catalog-canary.istioinaction created",
                             "Service catalog-primary.istioinaction created",
                             "Deployment catalog-primary.istioinaction created"]
    assert h.tick().apply == []  # nothing changed
    h.deploy(deployment(V2))
    scaled = h.tick()
    assert [(o["kind"], o["metadata"]["name"], o["spec"].get("replicas")) for o in scaled.apply] == [
        ("Deployment", "catalog", 1)]
    step = h.tick()
    assert [o["kind"] for o in step.apply] == ["VirtualService"]
    assert all(owned_by(o, h.canary) for o in step.objects)  # the target only appears in ticks that scale it


def test_driving_through_a_config_store() -> None:
    """A runtime's loop: observe the store, tick, apply the YAML; the hash survives the round trip."""
    store = ConfigStore.from_paths([SERVICES / "catalog/kubernetes/catalog-deployment.yaml",
                                    SERVICES / "catalog/kubernetes/catalog-svc.yaml",
                                    CH5 / "flagger/catalog-release.yaml"], NS)
    canary = Canary.from_manifest(store.get("Canary", NS, "catalog-release"))
    ctl = CanaryController(store.get("Canary", NS, "catalog-release"), now=100.0)
    phases = []
    for i in range(10):
        if i == 1:
            store.apply_text((CH5 / "flagger/catalog-deployment-v2.yaml").read_text(), NS)
        result = ctl.tick(ctl.next_tick_at, observe(store, canary), Metrics())
        if result.apply:
            store.apply_text(result.apply_yaml(), NS, filename="flagger")
        phases.append((result.time - 100, str(result.phase), result.canary_weight))
    assert phases[-1] == (405, "Succeeded", 0)
    assert [w for _, _, w in phases] == [0, 0, 10, 20, 30, 40, 50, 50, 0, 0]
    assert store.get("Service", NS, "catalog").spec["selector"] == {"app": "catalog-primary"}
    assert store.get("Deployment", NS, "catalog").spec["replicas"] == 0
    assert store.workload("catalog-primary", NS).labels == {"app": "catalog-primary", "version": "v1"}


def test_next_tick_follows_the_analysis_interval() -> None:
    ctl = CanaryController(release(), now=12.0)
    assert ctl.next_tick_at == 12.0  # Flagger runs a new job at once
    ctl.tick(12.0, Observation(deployment(V1)), Metrics())
    assert ctl.next_tick_at == 57.0
    assert release({"interval": "5s"}).interval == 10.0  # Flagger's minimum
    assert release(drop=("interval",)).interval == 60.0


def test_a_changed_interval_restarts_the_job_at_once_and_the_same_interval_keeps_the_cadence() -> None:
    """fluxcd/flagger v1.44.0 pkg/controller/scheduler.go scheduleCanaries: a job whose interval differs is stopped
    and a new one started; pkg/controller/job.go CanaryJob.Start runs the analysis at once, then on the new ticker."""
    ctl = CanaryController(release(), now=0.0)
    ctl.tick(0.0, Observation(deployment(V1)), Metrics())
    assert ctl.next_tick_at == 45.0
    ctl.update(release({"threshold": 3}), now=20.0)  # same 45 s interval: the cadence stays
    assert ctl.next_tick_at == 45.0
    ctl.update(release({"interval": "30s"}), now=20.0)  # a new job: it runs now, then every 30 s
    assert ctl.next_tick_at == 20.0
    ctl.tick(20.0, Observation(deployment(V1)), Metrics())
    assert ctl.next_tick_at == 50.0


# --- failures ------------------------------------------------------------------------------------------------------
def test_rollback_after_threshold_failed_checks() -> None:
    h = Harness(metrics=Metrics(success=57.14))
    h.start()
    results = h.ticks(7)
    assert [(str(r.phase), r.canary_weight, r.status.failed_checks) for r in results] == [
        ("Progressing", 10, 0),  # the first step checks nothing
        ("Progressing", 10, 1), ("Progressing", 10, 2), ("Progressing", 10, 3), ("Progressing", 10, 4),
        ("Progressing", 10, 5),
        ("Failed", 0, 0),  # threshold 5 reached: checked before the analysis; Flagger's SyncStatus zeroes counters
    ]
    assert "Halt catalog-release.istioinaction advancement success rate 57.14% < 99%" in results[1].log
    assert results[-1].log == ["Rolling back catalog-release.istioinaction failed checks threshold reached 5",
                               "Canary failed! Scaling down catalog-release.istioinaction"]
    assert h.vs_weights() == [[("catalog-primary", 100), ("catalog-canary", 0)], [("catalog-primary", 100)]]
    assert h.target["spec"]["replicas"] == 0
    assert h.find("Deployment", "catalog-primary")["spec"]["template"]["spec"]["containers"][0].get("env") == \
        V1["spec"]["template"]["spec"]["containers"][0]["env"]  # the primary keeps the old spec
    cond = h.ctl.status.conditions[0]
    assert (cond.status, cond.reason, cond.message) == ("False", "Failed",
                                                        "Canary analysis failed, Deployment scaled to zero.")
    # nothing restarts the same revision
    assert [str(r.phase) for r in h.ticks(2)] == ["Failed", "Failed"]
    # a new revision does
    h.deploy(V3)
    assert h.tick().log == ["New revision detected! Scaling up catalog.istioinaction"]


def test_no_values_found_is_a_failed_check() -> None:
    h = Harness(metrics=Metrics(success=None))
    h.start()
    h.ticks(2)
    r = h.results[-1]
    assert r.status.failed_checks == 1 and r.canary_weight == 10
    assert r.log == ["Halt advancement no values found for istio metric request-success-rate probably "
                     "catalog.istioinaction is not receiving traffic: running query failed: no values found"]
    assert h.ctl.history[-1].metrics == {SR: None}  # stops at the first failed metric


def test_nan_and_query_errors_fail_the_check_too() -> None:
    def boom(_n: int) -> float:
        raise MetricQueryError("connection refused")

    h = Harness(metrics=Metrics(duration=float("nan")))
    h.start()
    h.ticks(2)
    assert h.results[-1].status.failed_checks == 1
    assert "no values found for istio metric request-duration" in h.results[-1].log[0]
    h = Harness(metrics=Metrics(success=boom))
    h.start()
    h.ticks(2)
    assert h.results[-1].events[0].level == "error"
    assert h.results[-1].log == ["Prometheus query failed: connection refused"]


@pytest.mark.parametrize(("ms", "line"), [
    (612.9, "Halt catalog-release.istioinaction advancement request duration 612ms > 500ms"),
    (1500, "Halt catalog-release.istioinaction advancement request duration 1.5s > 500ms"),
])
def test_request_duration_over_the_maximum(ms: float, line: str) -> None:
    h = Harness(metrics=Metrics(duration=ms))
    h.start()
    h.ticks(2)
    assert h.results[-1].log == [line]


def test_request_duration_is_truncated_to_whole_milliseconds() -> None:
    h = Harness(metrics=Metrics(duration=500.9))  # Flagger: time.Duration(int64(value)) ms ⇒ 500ms, not > 500ms
    h.start()
    assert h.ticks(2)[-1].canary_weight == 20


def test_progress_deadline_rolls_back_a_canary_that_never_becomes_ready() -> None:
    h = Harness()
    h.start()  # t=45: scaled up, progressDeadlineSeconds 60
    h.ready["catalog"] = False
    waiting, failed = h.ticks(2)
    assert (waiting.time, str(waiting.phase)) == (90, "Progressing")
    assert waiting.log == ["canary deployment catalog.istioinaction not ready: waiting for rollout to finish"]
    assert (failed.time, str(failed.phase), failed.canary_weight) == (135, "Failed", 0)  # 90 s > 60 s
    assert failed.log == [
        'canary deployment catalog.istioinaction not ready: deployment "catalog" exceeded its progress deadline',
        'Rolling back catalog-release.istioinaction progress deadline exceeded canary deployment '
        'catalog.istioinaction not ready: deployment "catalog" exceeded its progress deadline',
        "Canary failed! Scaling down catalog-release.istioinaction"]
    assert h.metrics.calls == []


STUCK = 'catalog-primary.istioinaction not ready: deployment "catalog-primary" exceeded its progress deadline'
ROLLED_BACK = "Canary failed! Scaling down catalog-release.istioinaction"
PROMOTION_FAILED = f"Promotion of catalog.istioinaction failed, primary not ready: {STUCK}"


# fluxcd/flagger v1.44.0 pkg/controller/scheduler.go advanceCanary (IsPrimaryReady) and handleFailedPromotion; the
# deadline is pkg/canary/deployment_ready.go isDeploymentReady. A primary that is not ready delays the run; once past
# progressDeadlineSeconds, Flagger rolls back to it, except in Promoting/Finalising, where the primary already runs
# the new spec: then it routes all traffic to the canary (0/100), leaves the canary running, syncs the status Failed
# with canaryWeight 100 and runs the post-rollout hooks with phase Failed.
@pytest.mark.parametrize(("analysis", "ticks", "stuck_in", "routes", "outcome", "weight", "to", "canary_kept"), [
    pytest.param({}, 2, "Progressing", Routes(80, 20), ROLLED_BACK, 0, Routes(100, 0), False, id="progressing"),
    pytest.param({}, 6, "Promoting", Routes(50, 50), PROMOTION_FAILED, 100, Routes(0, 100), True, id="promoting"),
    pytest.param({}, 7, "Finalising", Routes(100, 0), PROMOTION_FAILED, 100, Routes(0, 100), True,
                 id="finalising"),
    pytest.param({"stepWeightPromotion": 20}, 7, "Promoting", Routes(70, 30), PROMOTION_FAILED, 100, Routes(0, 100),
                 True, id="promoting-in-steps"),
])
def test_a_primary_stuck_past_the_deadline(analysis: dict[str, Any], ticks: int, stuck_in: str, routes: Routes,
                                           outcome: str, weight: int, to: Routes, canary_kept: bool) -> None:
    gate = Gate()
    hooks = [{"name": "notify", "type": "post-rollout", "url": "http://loadtester/notify"}]
    h = Harness(release({**analysis, "webhooks": hooks}), webhooks=gate)
    h.start()
    h.ticks(ticks)
    assert (str(h.results[-1].phase), h.results[-1].routes) == (stuck_in, routes)
    h.ready["catalog-primary"] = False  # its pods stop being available; progressDeadlineSeconds is 60
    waiting, still, failed = h.ticks(3)  # unready for 0 s, 45 s, 90 s
    assert [(str(r.phase), r.routes, r.log) for r in (waiting, still)] == [
        (stuck_in, routes, ["catalog-primary.istioinaction not ready: waiting for rollout to finish"])] * 2
    assert failed.log == [STUCK, outcome, "Post-rollout check notify passed"]
    assert gate.calls[-1] == ("notify", "Failed")
    assert (str(failed.phase), failed.canary_weight, failed.routes) == ("Failed", weight, to)
    assert h.vs_weights()[0] == [("catalog-primary", to.primary), ("catalog-canary", to.canary)]
    assert (h.target["spec"]["replicas"] > 0) is canary_kept
    cond = failed.status.conditions[0]
    assert (cond.status, cond.reason) == ("False", "Failed")
    # nothing more happens to this revision: the routes and the reported weight stay
    after = h.tick()
    assert (str(after.phase), after.canary_weight, after.routes, after.apply) == ("Failed", weight, to, [])


def test_a_slow_canary_within_the_deadline_only_delays_the_analysis() -> None:
    h = Harness()
    h.start()
    h.ready["catalog"] = False
    h.tick()
    h.ready["catalog"] = True
    assert seq(h.ticks(2)) == [(135, "Progressing", 10), (180, "Progressing", 20)]


def test_initialization_waits_for_the_primary() -> None:
    h = Harness()
    h.ready["catalog-primary"] = False
    first = h.tick()
    assert str(first.phase) == "Initializing"
    assert [(o["kind"], o["metadata"]["name"]) for o in first.objects] == [
        ("Service", "catalog-canary"), ("Service", "catalog-primary"), ("Deployment", "catalog-primary")]
    assert first.log[-1] == "catalog-primary.istioinaction not ready: waiting for rollout to finish"
    h.ready["catalog-primary"] = True
    second = h.tick()
    assert str(second.phase) == "Initialized"
    assert {o["kind"] for o in second.apply} == {"Service", "Deployment", "DestinationRule", "VirtualService"}


# --- restarts and triggers -----------------------------------------------------------------------------------------
def test_change_during_analysis_restarts_it() -> None:
    h = Harness(metrics=Metrics(success=lambda n: 50.0 if n == 1 else 100.0))  # the 2nd check fails
    h.start()
    h.ticks(3)  # 10, 20, a failed check at 20
    assert (h.results[-1].canary_weight, h.results[-1].status.failed_checks) == (20, 1)
    h.deploy(V3)
    restart = h.tick()
    assert (str(restart.phase), restart.canary_weight, restart.status.failed_checks) == ("Progressing", 0, 0)
    assert restart.log == ["New revision detected! Restarting analysis for catalog.istioinaction"]
    assert h.vs_weights()[0] == [("catalog-primary", 100), ("catalog-canary", 0)]
    assert h.ctl.status.last_applied_spec == template_hash(V3["spec"]["template"])
    again = h.tick()
    assert again.log == ["Starting canary analysis for catalog.istioinaction",
                         "Advance catalog-release.istioinaction canary weight 10"]


def test_rolling_back_to_the_promoted_spec_does_not_trigger() -> None:
    h = Harness()
    h.tick()
    h.deploy(deployment(V2))
    h.deploy(deployment(V1))  # undone before the next tick: the promoted spec again
    assert str(h.tick().phase) == "Initialized"
    # after a failed analysis of v2, going back to v1 (still the promoted spec) stays Failed
    h = Harness(metrics=Metrics(success=0.0))
    h.start()
    h.ticks(7)
    assert str(h.results[-1].phase) == "Failed"
    h.deploy(deployment(V1))
    assert str(h.tick().phase) == "Failed"
    # after promoting v2, v1 is a new revision
    h = Harness()
    h.start()
    h.ticks(8)
    assert str(h.results[-1].phase) == "Succeeded"
    h.deploy(deployment(V1))
    assert str(h.tick().phase) == "Progressing"


def test_a_failed_revision_is_retried_after_going_back_to_the_promoted_spec() -> None:
    h = Harness(metrics=Metrics(success=0.0))
    h.start()
    h.ticks(7)
    h.deploy(deployment(V1))
    assert str(h.tick().phase) == "Failed"  # v1 is the promoted spec: no analysis, but lastAppliedSpec follows
    h.metrics.values[SR] = 100.0
    h.deploy(deployment(V2))
    assert h.tick().log == ["New revision detected! Scaling up catalog.istioinaction"]


def test_skip_analysis_promotes_without_checks() -> None:
    h = Harness(release(skipAnalysis=True))
    detect = h.start()
    assert str(detect.phase) == "Progressing"
    done = h.tick()
    assert (str(done.phase), done.canary_weight) == ("Succeeded", 0)
    assert done.log == ["Copying catalog.istioinaction template spec to catalog-primary.istioinaction",
                        "Promotion completed! Canary analysis was skipped for catalog.istioinaction"]
    assert h.metrics.calls == []
    env = h.find("Deployment", "catalog-primary")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SHOW_IMAGE", "value": "true"} in env


def test_suspended_canary_does_nothing() -> None:
    h = Harness(release(suspend=True))
    r = h.tick()
    assert str(r.phase) == "Initializing" and r.objects == []
    assert r.log == ["skipping canary run as object is suspended"]


# --- strategies ----------------------------------------------------------------------------------------------------
def test_step_weights() -> None:
    h = Harness(release({"stepWeights": [1, 5, 25, 50]}, drop=("stepWeight", "maxWeight")))
    h.start()
    assert [(str(r.phase), r.canary_weight) for r in h.ticks(5)] == [
        ("Progressing", 1), ("Progressing", 5), ("Progressing", 25), ("Progressing", 50), ("Promoting", 50)]


def test_step_weight_arithmetic() -> None:
    c = release({"stepWeights": [10, 20, 120]}, drop=("stepWeight", "maxWeight"))
    assert c.max_weight() == 100
    assert [c.next_step_weight(w) for w in (0, 10, 20, 100)] == [10, 10, 80, 1]
    c = release()
    assert (c.max_weight(), c.next_step_weight(40)) == (50, 10)
    assert release(drop=("maxWeight",)).max_weight() == 100


def test_step_weight_promotion_shifts_back_in_steps() -> None:
    h = Harness(release({"stepWeightPromotion": 20}))
    h.start()
    h.ticks(6)
    assert str(h.results[-1].phase) == "Promoting"
    shift = h.ticks(4)
    assert [(str(r.phase), r.routes.primary, r.routes.canary) for r in shift] == [
        ("Promoting", 70, 30), ("Promoting", 90, 10), ("Finalising", 100, 0), ("Succeeded", 100, 0)]
    assert shift[0].log == ["Advance catalog-release.istioinaction primary weight 70"]


def test_ab_testing_with_iterations() -> None:
    h = Harness(release({"iterations": 3}))
    assert h.canary.strategy == "A/B testing"
    h.start()
    results = h.ticks(6)
    assert [(str(r.phase), r.status.iterations, r.routes.canary) for r in results] == [
        ("Progressing", 1, 100), ("Progressing", 2, 100), ("Progressing", 3, 100),
        ("Promoting", 3, 100),  # Promoting keeps status weight and iterations
        ("Finalising", 0, 0), ("Succeeded", 0, 0)]
    assert results[0].log == ["Starting canary analysis for catalog.istioinaction",
                              "Advance catalog-release.istioinaction canary iteration 1/3"]
    # matched (webapp) traffic goes all to the canary; the rest stays on the primary (a lone weight-0 destination)
    assert h.vs_weights(results[0]) == [[("catalog-primary", 0), ("catalog-canary", 100)], [("catalog-primary", 0)]]
    assert all(r.canary_weight == 0 for r in results)  # A/B never writes status.canaryWeight
    assert len(h.metrics.calls) == 2 * 3  # iterations 2 and 3, and the promotion tick


def test_blue_green_with_iterations() -> None:
    h = Harness(release({"iterations": 2}, drop=("match",)))
    assert h.canary.strategy == "Blue/Green"
    h.start()
    results = h.ticks(6)
    assert [(str(r.phase), r.status.iterations, r.routes.primary, r.routes.canary) for r in results] == [
        ("Progressing", 1, 100, 0), ("Progressing", 2, 100, 0),
        ("Progressing", 3, 0, 100),  # "Routing all traffic to canary"
        ("Promoting", 3, 0, 100), ("Finalising", 0, 100, 0), ("Succeeded", 0, 100, 0)]
    assert results[2].log == ["Routing all traffic to canary"]


def test_mirror_step_before_shifting_weights() -> None:
    h = Harness(release({"mirror": True, "mirrorWeight": 50}, drop=("match",)))
    h.start()
    mirrored, first_step = h.ticks(2)
    assert (mirrored.routes, mirrored.canary_weight) == (Routes(100, 0, True), 0)
    vs = h.find("VirtualService", "catalog", mirrored)["spec"]["http"][0]
    assert vs["mirror"] == {"host": "catalog-canary"} and vs["mirrorPercentage"] == {"value": 50.0}
    assert mirrored.log == ["Starting canary analysis for catalog.istioinaction", "Running mirror step 100/0/true",
                            "Advance catalog-release.istioinaction canary weight 0"]
    assert [n for n, _ in h.metrics.calls] == [SR, DUR]  # the mirrored step is analysed
    assert first_step.routes == Routes(90, 10, False)
    assert "mirror" not in h.find("VirtualService", "catalog", first_step)["spec"]["http"][0]


def test_blue_green_mirrors_during_iterations() -> None:
    h = Harness(release({"iterations": 2, "mirror": True}, drop=("match",)))
    h.start()
    results = h.ticks(3)
    assert [r.routes for r in results] == [Routes(100, 0, True), Routes(100, 0, True), Routes(0, 100, False)]
    assert results[2].log == ["Stop traffic mirroring and route all traffic to canary"]


# --- gates ---------------------------------------------------------------------------------------------------------
def test_confirm_promotion_gate_holds_in_waiting_promotion() -> None:
    gate = {"open": False}
    hooks = [{"name": "gate", "type": "confirm-promotion", "url": "http://loadtester/gate/check"}]

    def runner(hook: Mapping[str, Any], phase: str) -> bool:
        return gate["open"]

    h = Harness(release({"webhooks": hooks}), webhooks=runner)
    h.start()
    h.ticks(6)
    held = h.results[-1]
    assert (str(held.phase), held.canary_weight, held.routes.canary) == ("WaitingPromotion", 0, 50)
    assert held.log == ["Halt catalog-release.istioinaction advancement waiting for promotion approval gate"]
    assert str(h.tick().phase) == "WaitingPromotion"
    gate["open"] = True
    assert [str(r.phase) for r in h.ticks(3)] == ["Promoting", "Finalising", "Succeeded"]


def _initialized(h: Harness, gate: Gate) -> None:
    h.tick()


def _succeeded(h: Harness, gate: Gate) -> None:
    gate.open = True
    h.start()
    h.ticks(8)
    gate.open = False


def _failed(h: Harness, gate: Gate) -> None:
    gate.open, h.metrics.values[SR] = True, 0.0
    h.start()
    h.ticks(7)
    gate.open, h.metrics.values[SR] = False, 100.0


# fluxcd/flagger v1.44.0 pkg/controller/scheduler.go checkCanaryStatus and scheduler_hooks.go runConfirmRolloutHooks:
# the confirm-rollout hooks run before anything changes for the new revision, with the phase the Canary is in; a
# closed gate sets Waiting once (SetStatusPhase: lastAppliedSpec untouched; shouldAdvance has already synced it when
# Failed); each open gate logs "Confirm-rollout check <name> passed", and only then "New revision detected! Scaling
# up" and SyncStatus(Progressing) with the new spec.
@pytest.mark.parametrize(("setup", "new", "phase_before", "spec_while_waiting"), [
    pytest.param(_initialized, V2, "Initialized", "promoted", id="initialized"),
    pytest.param(_succeeded, V3, "Succeeded", "promoted", id="succeeded"),
    pytest.param(_failed, V3, "Failed", "new", id="failed"),
])
def test_confirm_rollout_gate_runs_before_the_phase_changes(setup: Callable[[Harness, Gate], None],
                                                           new: Mapping[str, Any], phase_before: str,
                                                           spec_while_waiting: str) -> None:
    gate = Gate()
    hooks = [{"name": "approve", "type": "confirm-rollout", "url": "http://loadtester/gate/approve"}]
    h = Harness(release({"webhooks": hooks}), webhooks=gate)
    setup(h, gate)
    assert str(h.ctl.status.phase) == phase_before
    promoted = h.ctl.status.last_promoted_spec
    h.deploy(deployment(new))
    gate.calls.clear()
    waiting, still = h.ticks(2)
    assert [(str(r.phase), r.log) for r in (waiting, still)] == [
        ("Waiting", ["Halt catalog-release.istioinaction advancement waiting for approval approve"]),
        ("Waiting", [])]  # warned once
    assert gate.calls == [("approve", phase_before), ("approve", "Waiting")]
    status = waiting.status.to_dict()
    assert (status["conditions"][0]["reason"], status["conditions"][0]["message"]) == ("Waiting",
                                                                                      "Waiting for approval.")
    new_spec = template_hash(new["spec"]["template"])
    assert status["lastAppliedSpec"] == (promoted if spec_while_waiting == "promoted" else new_spec)
    assert not [o for r in (waiting, still) for o in r.apply if o["kind"] == "Deployment"]  # nothing scaled
    gate.open = True
    scaled = h.tick()
    assert scaled.log == ["Confirm-rollout check approve passed",
                          "New revision detected! Scaling up catalog.istioinaction"]
    assert gate.calls[-1] == ("approve", "Waiting")
    assert (str(scaled.phase), scaled.status.last_applied_spec) == ("Progressing", new_spec)
    assert [(o["kind"], o["metadata"]["name"], o["spec"]["replicas"]) for o in scaled.apply] == [
        ("Deployment", "catalog", 1)]


def test_an_open_confirm_rollout_gate_logs_its_pass_and_a_closed_one_after_it_holds() -> None:
    """fluxcd/flagger v1.44.0 pkg/controller/scheduler_hooks.go runConfirmRolloutHooks: hooks run in order, each
    pass is logged, the first closed one stops the run (its Halt line only when the phase becomes Waiting)."""
    gate = Gate()
    hooks = [{"name": "first", "type": "confirm-rollout", "url": "http://x"},
             {"name": "second", "type": "confirm-rollout", "url": "http://y"}]

    def runner(hook: Mapping[str, Any], phase: str) -> bool:
        gate(hook, phase)
        return hook["name"] == "first" or gate.open

    h = Harness(release({"webhooks": hooks}), webhooks=runner)
    waiting = h.start()
    assert (str(waiting.phase), waiting.log) == ("Waiting", [
        "Confirm-rollout check first passed",
        "Halt catalog-release.istioinaction advancement waiting for approval second"])
    assert h.tick().log == ["Confirm-rollout check first passed"]
    gate.open = True
    started = h.tick()
    assert (str(started.phase), started.log) == ("Progressing", [
        "Confirm-rollout check first passed", "Confirm-rollout check second passed",
        "New revision detected! Scaling up catalog.istioinaction"])
    assert [phase for _, phase in gate.calls] == ["Initialized", "Initialized", "Waiting", "Waiting", "Waiting",
                                                  "Waiting"]


def test_an_open_confirm_traffic_increase_gate_logs_its_pass() -> None:
    """fluxcd/flagger v1.44.0 pkg/controller/scheduler_hooks.go runConfirmTrafficIncreaseHooks, before each weight
    step of advanceCanary (scheduler.go)."""
    hooks = [{"name": "ramp", "type": "confirm-traffic-increase", "url": "http://x"}]
    gate = Gate(open_=True)
    h = Harness(release({"webhooks": hooks}), webhooks=gate)
    h.start()
    first = h.tick()
    assert first.log == ["Starting canary analysis for catalog.istioinaction",
                         "Confirm-traffic-increase check ramp passed",
                         "Advance catalog-release.istioinaction canary weight 10"]
    gate.open = False
    held = h.tick()
    assert (held.canary_weight, held.log) == (10, [
        "Halt catalog-release.istioinaction advancement waiting for traffic increase approval ramp"])


def test_rollout_and_pre_rollout_webhooks_count_as_checks() -> None:
    hooks = [{"name": "smoke", "type": "pre-rollout", "url": "http://x"}, {"name": "load", "url": "http://y"}]
    h = Harness(release({"webhooks": hooks}), webhooks=lambda hook, phase: hook["name"] != "load")
    h.start()
    first, second = h.ticks(2)
    assert first.log == ["Starting canary analysis for catalog.istioinaction", "Pre-rollout check smoke passed",
                         "Advance catalog-release.istioinaction canary weight 10"]
    assert second.log == ["Halt catalog-release.istioinaction advancement external check load failed"]
    assert second.status.failed_checks == 1


def test_rollback_webhook() -> None:
    hooks = [{"name": "abort", "type": "rollback", "url": "http://x"}]
    h = Harness(release({"webhooks": hooks}), webhooks=lambda hook, phase: True)
    h.start()
    r = h.tick()
    assert str(r.phase) == "Failed"
    assert r.log[:2] == ["Rollback check abort passed",
                         "Rolling back catalog-release.istioinaction manual webhook invoked"]


# --- custom metrics ------------------------------------------------------------------------------------------------
TEMPLATE = {"provider": {"type": "prometheus", "address": "http://prometheus.istio-system:9090"},
            "query": '100 - sum(rate(istio_requests_total{destination_workload_namespace="{{ namespace }}",'
                     'destination_workload="{{ target }}",response_code!="404"}[{{ interval }}])) / '
                     'sum(rate(istio_requests_total{destination_workload="{{ target }}"}[{{ interval }}])) * 100'}


def test_metric_template_query_is_rendered_and_checked() -> None:
    metric = {"name": "not-found-percentage", "templateRef": {"name": "not-found-percentage",
                                                              "namespace": "istio-system"},
              "thresholdRange": {"max": 5}, "interval": "1m"}
    h = Harness(release({"metrics": [metric]}), metrics=Metrics(custom=12.5),
                templates={("istio-system", "not-found-percentage"): TEMPLATE})
    h.start()
    h.ticks(2)
    query = h.metrics.calls[0][1]
    assert 'destination_workload_namespace="istioinaction",destination_workload="catalog"' in query
    assert "[1m]" in query and "{{" not in query
    assert h.results[-1].log == ["Halt catalog-release.istioinaction advancement not-found-percentage 12.50 > 5"]
    assert h.ctl.history[-1].metrics == {"not-found-percentage": 12.5}


def test_an_inline_query_is_rendered_like_a_template() -> None:
    """Flagger renders an inline `query` too (pkg/controller/scheduler_metrics.go, RenderQuery, v1.44.0)."""
    metric = {"name": "not-found-percentage", "query": TEMPLATE["query"], "thresholdRange": {"max": 5},
              "interval": "30s"}
    h = Harness(release({"metrics": [metric]}), metrics=Metrics(custom=1.0))
    h.start()
    h.ticks(2)
    query = h.metrics.calls[0][1]
    assert 'destination_workload_namespace="istioinaction",destination_workload="catalog"' in query
    assert "[30s]" in query and "{{" not in query


def test_an_inline_query_with_an_unknown_function_fails_the_check() -> None:
    metric = {"name": "x", "query": "sum(up{job=\"{{ bogus }}\"})", "thresholdRange": {"max": 5}}
    h = Harness(release({"metrics": [metric]}), metrics=Metrics(custom=1.0))
    h.start()
    h.ticks(2)
    assert h.results[-1].log == ['Metric query render error for x: function "bogus" not defined']
    assert h.results[-1].status.failed_checks == 1


def test_missing_metric_template_fails_the_check() -> None:
    metric = {"name": "x", "templateRef": {"name": "nope"}, "thresholdRange": {"max": 5}}
    h = Harness(release({"metrics": [metric]}))
    h.start()
    h.ticks(2)
    assert h.results[-1].log == ['Metric template nope.istioinaction error: metrictemplate.flagger.app "nope" '
                                 'not found']
    assert h.results[-1].status.failed_checks == 1


def test_render_query_and_builtin_queries() -> None:
    c = release()
    q = render_query(BUILTIN_QUERIES[SR], c, "1m")
    assert q.startswith('sum(rate(istio_requests_total{reporter="destination",'
                        'destination_workload_namespace="istioinaction",destination_workload=~"catalog",'
                        'response_code!~"5.*"}[1m]))')
    assert render_query("{{ variables.host }}/{{ service }}/{{name}}", c, "1m", {"host": "h"}) == \
        "h/catalog/catalog-release"
    with pytest.raises(Exception, match="not defined"):
        render_query("{{ bogus }}", c, "1m")


def test_go_formatting() -> None:
    assert [go_float(v) for v in (99, 99.5, 0.001, 1e6, 1234567.0, 0.00001)] == [
        "99", "99.5", "0.001", "1e+06", "1.234567e+06", "1e-05"]
    assert [go_duration_ms(v) for v in (0, 500, 1500, 60000, 61500, 3600000)] == [
        "0s", "500ms", "1.5s", "1m0s", "1m1.5s", "1h0m0s"]


# --- status and history --------------------------------------------------------------------------------------------
def test_status_document_and_history() -> None:
    h = Harness()
    h.start()
    h.ticks(2)
    status = h.ctl.manifest()["status"]
    assert {k: status[k] for k in ("phase", "canaryWeight", "failedChecks", "iterations")} == {
        "phase": "Progressing", "canaryWeight": 20, "failedChecks": 0, "iterations": 0}
    assert status["lastTransitionTime"] == "1970-01-01T00:02:15Z"
    assert status["conditions"][0]["reason"] == "Progressing"
    assert status["conditions"][0]["message"] == "New revision detected, progressing canary analysis."
    assert [(p.time, str(p.phase), p.canary_weight, p.routes.canary) for p in h.ctl.history] == [
        (0, "Initialized", 0, 0), (45, "Progressing", 0, 0), (90, "Progressing", 10, 10),
        (135, "Progressing", 20, 20)]
    assert h.ctl.events[-1].flagger_log().startswith('{"level": "info", "ts": "1970-01-01T00:02:15Z", "msg": "Adv')


def test_template_hash_is_stable_and_shaped_like_flaggers() -> None:
    tpl = V1["spec"]["template"]
    reordered = dict(reversed(list(copy.deepcopy(tpl).items())))
    assert template_hash(tpl) == template_hash(reordered)
    assert template_hash(tpl) != template_hash(V2["spec"]["template"])
    assert set(template_hash(tpl)) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(template_hash(tpl)) <= 10


# --- generated objects ---------------------------------------------------------------------------------------------
def test_primary_selector_label_and_labels() -> None:
    target = deployment(V1)
    assert selector_label(target) == ("app", "catalog")
    primary = primary_deployment(release(), target, 1)
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "catalog-primary"}}
    assert primary["spec"]["template"]["metadata"]["labels"] == {"app": "catalog-primary", "version": "v1"}
    svcs = {s["metadata"]["name"]: s["spec"]["selector"] for s in services(release(), target)}
    assert svcs == {"catalog-canary": {"app": "catalog"}, "catalog-primary": {"app": "catalog-primary"},
                    "catalog": {"app": "catalog-primary"}}
    named = copy.deepcopy(target)
    named["spec"]["selector"]["matchLabels"] = {"name": "cat", "app.kubernetes.io/name": "x"}
    assert selector_label(named) == ("name", "cat")
    named["spec"]["selector"]["matchLabels"] = {"version": "v1"}
    with pytest.raises(CanaryError, match="must contain one of"):
        selector_label(named)


def test_virtual_service_hosts_gateways_and_rules() -> None:
    plain = release(drop=("match",), service={"port": 80, "targetPort": 3000})
    vs = virtual_service(plain, Routes(90, 10))["spec"]
    assert vs == {"hosts": ["catalog"], "gateways": ["mesh"], "http": [{"route": [
        {"destination": {"host": "catalog-primary"}, "weight": 90},
        {"destination": {"host": "catalog-canary"}, "weight": 10}]}]}
    gw = release(service={"port": 80, "hosts": ["*"], "gateways": ["public-gateway"],
                          "match": [{"uri": {"prefix": "/api"}}], "timeout": "5s"})
    spec = virtual_service(gw)["spec"]
    assert spec["hosts"] == ["*"] and spec["gateways"] == ["public-gateway"]  # no mesh added, no apex added to *
    assert spec["http"][0]["match"] == [{"uri": {"prefix": "/api"}, "sourceLabels": {"app": "webapp"}}]
    assert spec["http"][1]["match"] == [{"uri": {"prefix": "/api"}}] and spec["http"][1]["timeout"] == "5s"
    assert routes_of(virtual_service(release(), Routes(70, 30)), release()) == Routes(70, 30)


def _world_with(objs: list[dict[str, Any]]) -> ConfigStore:
    store = world(dr=False)
    store.delete("Deployment", NS, "catalog-v2")
    store.apply_text(to_yaml(objs), NS, filename="flagger.yaml")
    return store


@pytest.mark.parametrize("routes", [Routes(), Routes(90, 10), Routes(0, 100), Routes(100, 0, True)])
@pytest.mark.parametrize("analysis", [{}, {"mirror": True, "mirrorWeight": 20}])
def test_generated_objects_validate_through_the_store(routes: Routes, analysis: dict[str, Any]) -> None:
    for canary in (release(analysis), release(analysis, drop=("match",))):
        objs = generated_objects(canary, deployment(V2), deployment(V1), 1, routes, 0)
        store = _world_with(objs)
        assert store.get("VirtualService", NS, "catalog") is not None
        assert store.get("DestinationRule", NS, "catalog-canary").spec == {"host": "catalog-canary"}
        assert store.get("Service", NS, "catalog-primary").spec["selector"] == {"app": "catalog-primary"}


def test_generated_virtual_service_with_match_routes_webapp_by_weight_and_others_to_primary() -> None:
    objs = generated_objects(release(), deployment(V2), deployment(V1), 1, Routes(90, 10), 1)
    store = _world_with(objs)
    routes = catalog_routes(store, WEBAPP_PROXY)
    # on webapp's sidecar the sourceLabels rule is a catch-all, so Istio stops there
    assert len(routes) == 1
    assert [(c["name"], c["weight"]) for c in routes[0]["route"]["weightedClusters"]["clusters"]] == [
        (PRIMARY, 90), (CANARY, 10)]
    # the rule for webapp is dropped on other sidecars (sourceLabels is decided at config time)
    primary_view = catalog_routes(store, f"deploy/catalog-primary.{NS}")
    assert [r["route"].get("cluster") for r in primary_view] == [PRIMARY]  # a lone destination: weight 90 ⇒ all
