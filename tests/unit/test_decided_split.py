"""A split check after "requests are sent until it is decided whether ..." reports that decision, for that claim
only (meshlib.dsl.distribution): testing the same requests again at a fixed size would not keep its confidence.

The World here has no backend: these paths read the decision the sequential send left, and send nothing (the
embedded-mesh path runs in features/route-to-v1.feature and tests/bench/split_bench.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.dsl import distribution
from meshlib.dsl.world import World
from meshlib.errors import InputError
from meshlib.expect import ExpectationFailed
from meshlib.stats import sequential_check, sequential_design
from meshlib.traffic import Response


def world_after(share: float, v2: int, total: int) -> tuple[World, list[tuple[str, str]]]:
    """A World whose last batch was sent until "about `share` of responses come from catalog v2" was decided."""
    attached: list[tuple[str, str]] = []
    world = World(None, "istioinaction", Path("manifests"),  # type: ignore[arg-type]
                  evidence=lambda name, body, _kind: attached.append((name, body)))
    claim = {"v2": share, distribution.other("v2"): 1.0 - share}
    design = sequential_design(claim, world.alpha, batch_multiple=world.concurrency)
    verdict = sequential_check(design, {"v2": v2, distribution.other("v2"): total - v2})
    responses = [Response(str(i), 200, {}, "", 1.0) for i in range(total)]
    world.responses = responses
    world.decided = distribution.Decided(
        "catalog", claim, distribution._share_wording(share, "catalog", "v2"), verdict, responses)
    return world, attached


def test_the_same_claim_reports_the_decision() -> None:
    world, attached = world_after(0.10, v2=0, total=128)  # a canary that got nothing: refuted
    with pytest.raises(ExpectationFailed, match="is refuted") as failure:
        distribution.about_share(world, 0.10, "catalog", "v2")
    assert "stopped after 128 requests" in str(failure.value)
    assert any(name == "decided: about 10% of responses come from catalog v2" for name, _ in attached)


def test_another_claim_over_the_decided_requests_is_refused_in_one_line() -> None:
    world, _ = world_after(0.10, v2=0, total=128)
    with pytest.raises(InputError) as refused:
        distribution.about_share(world, 0.20, "catalog", "v2")
    message = str(refused.value)
    assert "\n" not in message
    assert "until it was decided whether about 10% of responses come from catalog v2" in message
    assert "this step claims about 20% of responses come from catalog v2" in message
    assert "send a fixed number of requests first" in message
    with pytest.raises(InputError, match="which they did not decide"):
        distribution.split(world, "catalog", {"v1": 0.9, "v2": 0.1})


def test_a_later_batch_is_checked_on_its_own() -> None:
    """Once other requests were sent, the decision no longer applies to the last batch."""
    world, _ = world_after(0.10, v2=0, total=128)
    world.responses = [Response("x", 200, {}, "", 1.0)]
    assert distribution._decided(world) is None
