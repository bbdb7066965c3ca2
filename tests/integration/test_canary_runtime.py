"""Flagger's analysis on the embedded mesh (issue 5): the walkthrough's catalog-release Canary on a scaled clock.

Real pods, real traffic through the ingress gateway, metrics from the proxies (or the mesh's Prometheus). The
clock runs fast (`time_scale` 0.025–0.03: a 45 s interval takes ~1.2 s), so these tests check what a user
sees — phases, weights, the Flagger log, the routes — and not exact timings.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
from meshclient import CATALOG_V1, CH5, NS, WEBAPP, WEBAPP_HOST, send_many, wait_until

from meshlib.dsl.canary import phase_steps, weight_steps
from meshlib.errors import MeshlibError
from meshlib.local.mesh import LocalMesh
from meshlib.local.serve import Handlers
from meshlib.traffic import BackgroundTraffic, Target

FLAGGER = CH5 / "flagger"
WORLD = [CATALOG_V1, WEBAPP, CH5 / "webapp-catalog-gw-vs.yaml"]
RELEASE = "catalog-release"
RATE = 60  # requests per second through the gateway: a 10% canary gets ~6 per second


def start(time_scale: float, prometheus: bool = False) -> LocalMesh:
    return LocalMesh(WORLD, namespace=NS, port=0, seed=5, prometheus=prometheus, time_scale=time_scale).start()


def wait_for(mesh: LocalMesh, phase: str, since: float, timeout: float = 30.0) -> list[dict]:
    """The history once a tick that began after `since` left the canary in `phase` (bounded)."""
    history = wait_until(lambda: mesh.canary_history(RELEASE),
                         lambda h: any(p["phase"] == phase and p["started"] >= since for p in h), timeout)
    assert any(p["phase"] == phase for p in history), [(p["phase"], p["canaryWeight"]) for p in history]
    return history


@pytest.fixture
def traffic() -> Iterator[list[BackgroundTraffic]]:
    running: list[BackgroundTraffic] = []
    yield running
    for t in running:
        t.stop()


def background(mesh: LocalMesh, running: list[BackgroundTraffic]) -> BackgroundTraffic:
    t = BackgroundTraffic(Target(mesh.gateway_url + "/api/catalog", host=WEBAPP_HOST), RATE).start()
    running.append(t)
    return t


def initialized(mesh: LocalMesh) -> None:
    since = time.time()
    mesh.apply([FLAGGER / "catalog-release.yaml"])
    wait_for(mesh, "Initialized", since)


def test_a_healthy_release_is_promoted_with_flaggers_phases_and_weights(traffic) -> None:
    with start(time_scale=0.025) as mesh:
        background(mesh, traffic)
        initialized(mesh)
        # Flagger's objects are in the store and route webapp's calls to the primary
        assert mesh.store.get("Deployment", NS, "catalog").spec["replicas"] == 0
        assert mesh.store.get("Service", NS, "catalog").spec["selector"] == {"app": "catalog-primary"}
        assert {p.workload.name for p in mesh.pods(NS)} >= {"catalog-primary", "webapp"}
        assert mesh.canary_status(RELEASE, NS)["phase"] == "Initialized"

        since = time.time()
        mesh.apply([FLAGGER / "catalog-deployment-v2.yaml"])
        history = wait_for(mesh, "Succeeded", since)

        assert phase_steps(history) == ["Initializing", "Initialized", "Progressing", "Promoting", "Finalising",
                                        "Succeeded"]
        assert weight_steps(history) == [10, 20, 30, 40, 50]
        assert max(p["failedChecks"] for p in history) < 5
        # the first step to 10% runs no metric check; every later one reads both builtin metrics, windows scaled
        first_check = next(p for p in history if p["queries"])
        assert first_check["phase"] == "Progressing" and first_check["canaryWeight"] in (10, 20)
        queries = [q["query"] for q in first_check["queries"]]
        assert any("[1500ms]" in q and "response_code!~" in q for q in queries), queries  # 1m × 0.025
        times = [p["time"] for p in history]
        assert {round(b - a, 6) for a, b in zip(times, times[1:], strict=False)} == {45.0}  # Flagger's cadence

        # Flagger zeroes the weight and iterations when it promotes, not failedChecks: a check that failed on the
        # way (a scaled 1.5 s window on a busy machine can hold too few requests) stays counted in the status
        status = mesh.canary_status(RELEASE, NS)
        assert (status["phase"], status["canaryWeight"], status["iterations"]) == ("Succeeded", 0, 0)
        assert status["failedChecks"] == history[-1]["failedChecks"] < 5
        assert status["conditions"][0]["type"] == "Promoted" and status["conditions"][0]["status"] == "True"

        # the primary now runs the new template: clients see imageUrl
        replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
        assert [r.status for r in replies] == [200] * 20
        assert all(r.has_image for r in replies)
        assert mesh.store.get("Deployment", NS, "catalog").spec["replicas"] == 0

        messages = [json.loads(line)["msg"] for line in mesh.logs("flagger", "istio-system")]
        for expected in ("Initialization done! catalog-release.istioinaction",
                         "New revision detected! Scaling up catalog.istioinaction",
                         "Starting canary analysis for catalog.istioinaction",
                         "Advance catalog-release.istioinaction canary weight 50",
                         "Copying catalog.istioinaction template spec to catalog-primary.istioinaction",
                         "Routing all traffic to primary",
                         "Promotion completed! Scaling down catalog.istioinaction"):
            assert expected in messages, messages
        weights = [int(m.rsplit(" ", 1)[1]) for m in messages if m.startswith("Advance catalog-release")]
        assert weights == [10, 20, 30, 40, 50]
        responses = traffic[0].stop()
        assert responses and all(r.status == 200 for r in responses), {r.status for r in responses}


def test_a_failing_release_rolls_back_after_five_failed_checks(traffic) -> None:
    """On the mesh's Prometheus when the binary is there (PromQL with scaled windows), else the builtin metrics."""
    prometheus = shutil.which("prometheus") is not None
    with start(time_scale=0.03, prometheus=prometheus) as mesh:
        background(mesh, traffic)
        initialized(mesh)
        since = time.time()
        mesh.apply([FLAGGER / "catalog-deployment-v2-blowup.yaml"])
        history = wait_for(mesh, "Failed", since, timeout=40)

        assert phase_steps(history) == ["Initializing", "Initialized", "Progressing", "Failed"]
        # the blow-up shows in the first window, or (on a loaded machine, whose first short window can hold
        # too few of the canary's requests) in the next one: the weight never gets past the second step
        weights = weight_steps(history)
        assert weights in ([10], [10, 20]), weights
        assert [p["failedChecks"] for p in history if p["phase"] == "Progressing" and p["canaryWeight"]][-6:] == \
            [0, 1, 2, 3, 4, 5]
        status = mesh.canary_status(RELEASE, NS)
        assert (status["phase"], status["canaryWeight"]) == ("Failed", 0)
        assert status["conditions"][0]["status"] == "False"
        checked = [q for p in history for q in p["queries"]]
        assert checked and all(q["source"] == ("promql" if prometheus else "builtin") for q in checked)
        assert all("[1800ms]" in q["query"] for q in checked if "response_code" in q["query"])  # 1m × 0.03

        lines = [json.loads(line) for line in mesh.logs("flagger", "istio-system")]
        messages = [entry["msg"] for entry in lines]
        assert "Rolling back catalog-release.istioinaction failed checks threshold reached 5" in messages
        assert "Canary failed! Scaling down catalog-release.istioinaction" in messages
        halts = [m for m in messages if m.startswith("Halt ")]
        # Each halt is a failed success-rate check. The first window can close before the new canary pod's
        # counters have two scrapes (Flagger then halts with "no values found", also a failed check: the
        # scaled clock makes that window short); every later one measured the blow-up below 99%.
        assert len(halts) == 5, halts
        measured = [m for m in halts if "success rate" in m and "< 99%" in m]
        unmeasured = [m for m in halts if m not in measured]
        assert halts[1:] == measured[-4:] and len(measured) >= 4, halts
        assert all("no values found for istio metric request-success-rate" in m for m in unmeasured), unmeasured
        assert {entry["canary"] for entry in lines} == {"catalog-release.istioinaction"}

        # rolled back: the primary (v1) serves everything again; clients saw errors only from the 10% step
        replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
        assert [r.status for r in replies] == [200] * 20 and not any(r.has_image for r in replies)
        responses = traffic[0].stop()
        errors = sum(r.status != 200 for r in responses)
        assert 0 < errors <= max(weights) / 100 * len(responses), (errors, len(responses))


def test_deleting_the_canary_stops_it_and_collects_what_it_owned() -> None:
    with start(time_scale=0.02) as mesh:
        initialized(mesh)
        assert mesh.canaries_in(NS) == [(NS, RELEASE)]
        listing = Handlers(mesh, threading.Event()).get({"what": "canaries", "namespace": NS})  # meshlib get canary
        assert listing.splitlines()[0].split() == ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
        assert listing.splitlines()[1].split()[:3] == [RELEASE, "Initialized", "0"]
        mesh.delete([FLAGGER / "catalog-release.yaml"])
        assert mesh.canaries_in(NS) == []
        with pytest.raises(MeshlibError, match='canaries.flagger.app "catalog-release" not found'):
            mesh.canary_status(RELEASE, NS)
        for kind, name in (("Deployment", "catalog-primary"), ("Service", "catalog-canary"),
                           ("DestinationRule", "catalog-primary"), ("VirtualService", "catalog")):
            assert mesh.store.get(kind, NS, name) is None, (kind, name)
        assert mesh.store.get("Deployment", NS, "catalog") is not None  # the target stays (scaled to 0)
        # the apex Service existed before the Canary: Flagger changed its selector and leaves it so
        assert mesh.store.get("Service", NS, "catalog").spec["selector"] == {"app": "catalog-primary"}
        assert "catalog-primary" not in {p.workload.name for p in mesh.pods(NS)}

        async def flagger_tasks() -> list[str]:
            import asyncio
            return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("flagger ")]

        assert wait_until(lambda: mesh.call(flagger_tasks()), lambda names: not names, 2.0) == []


def test_close_during_an_analysis_leaves_no_task_or_thread(traffic) -> None:
    mesh = start(time_scale=0.02, prometheus=shutil.which("prometheus") is not None)
    try:
        background(mesh, traffic)
        initialized(mesh)
        mesh.apply([FLAGGER / "catalog-deployment-v2.yaml"])
        wait_until(lambda: mesh.canary_status(RELEASE, NS)["canaryWeight"], lambda w: w >= 10, 10.0)
        loop = mesh._loop
    finally:
        started = time.monotonic()
        mesh.close()
    assert time.monotonic() - started < 10
    import asyncio
    assert loop is not None and loop.is_closed() and not asyncio.all_tasks(loop)
    assert not [t for t in threading.enumerate() if t.name in ("meshlib-flagger-tick", "meshlib-local-mesh")]
    mesh.close()  # idempotent
