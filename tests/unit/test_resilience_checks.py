"""The resilience checks over a batch's ledger: each fails when what it claims does not hold, or would be vacuous."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.dsl import resilience
from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed
from meshlib.local.envoy.records import Served
from meshlib.local.metrics import Peer
from meshlib.traffic import Response

BACKEND = Peer("simple-backend-1", "istioinaction", "simple-backend")


def world(pods: list[str], users: list[str] | None = None, status: int = 200) -> World:
    w = World(backend=None, namespace="istioinaction", manifests=Path("."))  # type: ignore[arg-type]
    for i, pod in enumerate(pods):
        r = Response(f"id-{i}", status, {}, "", 1.0, sent_headers={"x-user": users[i]} if users else {})
        r.served_by = [Served(r.request_id, pod, BACKEND, "simple-backend:80", "/", status, False, float(i))]
        w.responses.append(r)
    return w


def test_round_robin_spread_passes_only_when_every_pod_is_within_one_of_the_others() -> None:
    assert resilience.spread_evenly(world(["a", "b", "c"] * 3), "simple-backend", 3) == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ExpectationFailed, match="spread evenly"):
        resilience.spread_evenly(world(["a"] * 5 + ["b", "c", "c", "b"]), "simple-backend", 3)
    with pytest.raises(ExpectationFailed):  # a pod that served nothing is not "spread over 3 pods"
        resilience.spread_evenly(world(["a", "b"] * 3), "simple-backend", 3)
    with pytest.raises(ExpectationFailed, match="none of the"):
        resilience.spread_evenly(world(["a", "b"]), "webapp", 2)


def test_sticky_users_fail_when_a_user_moves_or_has_a_single_request() -> None:
    resilience.sticky(world(["a", "b", "a", "b"], ["alice", "bob", "alice", "bob"]), "x-user", "simple-backend")
    with pytest.raises(ExpectationFailed, match="moved"):
        resilience.sticky(world(["a", "b", "b", "b"], ["alice", "bob", "alice", "bob"]), "x-user", "simple-backend")
    with pytest.raises(ExpectationFailed, match="single request"):
        resilience.sticky(world(["a", "b", "a"], ["alice", "bob", "alice"]), "x-user", "simple-backend")


def test_at_least_status_needs_that_many_and_refuses_a_vacuous_zero() -> None:
    assert resilience.at_least_status(world(["a", "b"], status=500), 2, 500) == 2
    with pytest.raises(ExpectationFailed, match="at least 3"):
        resilience.at_least_status(world(["a", "b"], status=500), 3, 500)
    with pytest.raises(ExpectationFailed, match="at least 1"):
        resilience.at_least_status(world(["a"]), 0, 500)
