"""The sequential split check (meshlib.stats.sequential_design / sequential_check): its error rates, exactly and by
simulation, where it stops and what it says about why; and the exact multinomial test's Bonferroni fallback.

Exact figures come from sequential_oc (dynamic programming over every path of a two-category check); simulated ones
allow four standard errors, and the RNG is seeded, so the outcome is fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from meshlib import stats
from meshlib.stats import (
    DEFAULT_ALPHA,
    REQUIRED_POWER,
    SEQUENTIAL_CAP,
    StatsError,
    Stop,
    min_sample_size,
    multinomial_check,
    render_table,
    sequential_check,
    sequential_design,
    sequential_oc,
)

SHARE_10 = {"v2": 0.10, "not v2": 0.90}
HALF = {"v1": 0.5, "v2": 0.5}


def run(design: stats.SequentialDesign, truth: list[float], seed: int) -> stats.SequentialVerdict:
    """One sequential check on simulated traffic, batch by batch, through sequential_check as the step runs it."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(design.names), dtype=np.int64)
    verdict = None
    while verdict is None or not verdict.decided:
        counts += rng.multinomial(min(design.batch, design.cap - int(counts.sum())), truth)
        verdict = sequential_check(design, dict(zip(design.names, counts.tolist(), strict=True)), verdict)
    return verdict


# --------------------------------------------------------------------------------------------------------
# The design
# --------------------------------------------------------------------------------------------------------


def test_a_design_plans_batches_and_cap_from_the_fixed_size_check() -> None:
    design = sequential_design(SHARE_10, batch_multiple=16)
    fixed = min_sample_size(0.10, 0.10, DEFAULT_ALPHA, REQUIRED_POWER)
    assert design.fixed_size == fixed == 301
    assert design.batch == 32 and design.batch % 16 == 0  # a tenth of 301, in whole rounds of 16 in flight
    assert design.cap == math.ceil(SEQUENTIAL_CAP * fixed / 32) * 32 and design.cap % design.batch == 0
    assert design.labels == ("v2 0%, not v2 100%", "v2 20%, not v2 80%")  # ten points either way, clipped at 0
    assert design.alpha == DEFAULT_ALPHA and design.power == REQUIRED_POWER
    assert design.beta == pytest.approx(0.009)


@pytest.mark.parametrize(
    ("claim", "says"),
    [
        ({"v1": 1.0}, "exact claim"),
        ({}, "lists no categories"),
        ({"v1": 0, "v2": 0}, "every claimed weight is 0"),
        ({"v1": -1, "v2": 2}, "finite and >= 0"),
    ],
)
def test_claims_a_sequential_check_cannot_take(claim: dict[str, float], says: str) -> None:
    with pytest.raises(StatsError, match=says):
        sequential_design(claim)


def test_bad_plans_say_what_to_do() -> None:
    with pytest.raises(StatsError, match="power must be between 0 and 1"):
        sequential_design(HALF, power=1.0)
    with pytest.raises(StatsError, match="smaller than one batch"):
        sequential_design(HALF, batch=100, cap=50)
    with pytest.raises(StatsError, match="nothing to decide"):
        sequential_check(sequential_design(HALF), {"v1": 0, "v2": 0})


# --------------------------------------------------------------------------------------------------------
# Error rates
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("claimed", [0.05, 0.10, 0.30, 0.50, 0.90])
def test_exact_level_and_power(claimed: float, alpha: float) -> None:
    """Over every path (no simulation error): false failures <= alpha, power >= 0.99 against both misroutes,
    and the cap is almost never what decides."""
    design = sequential_design({"v2": claimed, "not v2": 1 - claimed}, alpha, batch_multiple=8)
    null = sequential_oc(design, claimed)
    assert null.rejected <= alpha
    assert null.accepted + null.rejected + null.capped == pytest.approx(1.0, abs=1e-9)
    assert null.capped < 1e-3
    for q in design.alternatives:
        assert sequential_oc(design, q[0]).rejected >= REQUIRED_POWER, q
    assert null.mean_requests < design.fixed_size  # it saves traffic where the claim holds


def test_a_canary_that_gets_nothing_is_refuted_within_two_batches() -> None:
    design = sequential_design(SHARE_10, batch_multiple=16)
    oc = sequential_oc(design, 0.0)
    assert oc.rejected == pytest.approx(1.0) and oc.mean_requests == 2 * design.batch


@pytest.mark.parametrize(("truth", "seed"), [(0.10, 1), (0.20, 2), (0.0, 3)])
def test_simulation_agrees_with_the_exact_figures(truth: float, seed: int) -> None:
    design = sequential_design(SHARE_10, batch_multiple=16)
    exact = sequential_oc(design, truth)
    runs = 1000
    verdicts = [run(design, [truth, 1 - truth], seed * 10_000 + i) for i in range(runs)]
    failed = sum(not v.passed for v in verdicts) / runs
    mean = sum(v.total for v in verdicts) / runs
    sigma = math.sqrt(max(exact.rejected * (1 - exact.rejected), 1e-4) / runs)
    assert abs(failed - exact.rejected) <= 4 * sigma
    sd = math.sqrt(np.var([v.total for v in verdicts]) / runs)
    assert abs(mean - exact.mean_requests) <= 4 * sd + 1


def test_a_three_way_split_keeps_its_level_and_power_by_simulation() -> None:
    """Beyond two categories there are no exact figures: 4000 vectorised runs of the decision rule instead."""
    design = sequential_design({"v1": 50, "v2": 30, "v3": 20}, batch_multiple=8)
    assert len(design.alternatives) == 6
    rng = np.random.default_rng(99)

    def failure_rate(truth: tuple[float, ...], runs: int = 4000) -> float:
        counts = np.zeros((runs, 3), dtype=np.int64)
        ruled = np.zeros((runs, 6), dtype=bool)
        final = np.zeros(runs, dtype=np.int8)
        going = np.ones(runs, dtype=bool)
        while going.any():
            index = np.flatnonzero(going)
            counts[index] += rng.multinomial(design.batch, truth, size=len(index))
            codes, ruled[index] = design.decide(counts[index], ruled[index])
            final[index], going[index] = codes, codes == int(Stop.CONTINUE)
        return float((final == int(Stop.REJECTED)).mean())

    bound = float(sp.binom.ppf(0.999, 4000, DEFAULT_ALPHA)) / 4000
    assert failure_rate(design.claimed) <= bound
    for q in design.alternatives:
        assert failure_rate(q) >= 1 - float(sp.binom.ppf(0.999, 4000, 1 - REQUIRED_POWER)) / 4000, q


# --------------------------------------------------------------------------------------------------------
# Where it stops, and what it says
# --------------------------------------------------------------------------------------------------------


def test_the_step_and_the_vectorised_rule_agree() -> None:
    """sequential_check (one run, as the step calls it) and SequentialDesign.decide (thousands at once, as the
    simulation calls it) reach the same stop after the same batches."""
    design = sequential_design(HALF, batch_multiple=8)
    rng = np.random.default_rng(5)
    for i in range(200):
        truth = [0.5, 0.5] if i % 2 else [0.6, 0.4]
        counts = np.zeros(2, dtype=np.int64)
        ruled = np.zeros(2, dtype=bool)
        verdict = None
        while verdict is None or not verdict.decided:
            counts += rng.multinomial(design.batch, truth)
            verdict = sequential_check(design, {"v1": int(counts[0]), "v2": int(counts[1])}, verdict)
            code, ruled = design.decide(counts, ruled)
            assert int(code) == int(verdict.stop) and tuple(ruled.tolist()) == verdict.ruled_out


def test_accepted_says_how_many_requests_and_why() -> None:
    design = sequential_design(HALF, batch_multiple=8)
    verdict = run(design, [0.5, 0.5], seed=11)
    assert verdict.stop == Stop.ACCEPTED and verdict.passed
    assert verdict.total == verdict.batches * design.batch <= design.cap
    text = verdict.describe()
    assert f"stopped after {verdict.total} requests ({verdict.batches} batches of up to {design.batch})" in text
    assert "the claim (v1 50%, v2 50%) is accepted, since every misroute is ruled out" in text
    assert all(at is not None and at <= verdict.total for at in verdict.ruled_out_at)
    assert "a correct mesh fails it at most 1% of the time" in text
    assert f"where the fixed-size exact check needs {design.fixed_size}" in text
    table = render_table(verdict)
    assert "largest misroute not ruled out" in table and table.count("\n") >= verdict.batches + 8
    assert "decision: stopped after" in table and table.split("decision: ", 1)[1].split("\n")[0].endswith("pass")


def test_refuted_when_the_canary_gets_twice_its_share() -> None:
    design = sequential_design(SHARE_10, batch_multiple=16)
    verdict = sequential_check(design, {"v2": 40, "not v2": 88})  # 31% of 128
    assert verdict.stop == Stop.REJECTED and not verdict.passed
    assert "is refuted, since the misroutes together are" in verdict.describe()
    assert "1/alpha = 100 refutes it" in verdict.reason


def test_traffic_where_the_claim_sends_none_refutes_at_once() -> None:
    design = sequential_design({"v1": 90, "v2": 10, "v3": 0}, batch_multiple=8)
    verdict = sequential_check(design, {"v1": 60, "v2": 3, "v3": 1})
    assert verdict.stop == Stop.REJECTED
    assert "1 request went to 'v3', which the claim gives weight 0 (an exact claim" in verdict.reason
    unlisted = sequential_check(design, {"v1": 60, "v2": 3, "none": 2})
    assert unlisted.stop == Stop.REJECTED and "2 requests went to 'none', which the claim does not list" in \
        unlisted.reason
    assert ("none", 2) in unlisted.counts


def test_the_cap_stops_a_split_between_claim_and_misroute_and_says_so() -> None:
    """15% when 10% is claimed is neither the claim nor the misroute: with a small cap the check stops there,
    not refuted (so it passes), and says the cap stopped it."""
    design = sequential_design(SHARE_10, batch=50, cap=100)
    first = sequential_check(design, {"v2": 7, "not v2": 43})
    assert first.stop == Stop.CONTINUE and not first.decided and "no boundary is crossed yet" in first.reason
    verdict = sequential_check(design, {"v2": 15, "not v2": 85}, first)
    assert verdict.stop == Stop.CAPPED and verdict.passed
    assert "since the cap of 100 requests was reached" in verdict.reason
    assert "not refuted by the cap" in verdict.stopped()
    assert [h[0] for h in verdict.history] == [50, 100]
    assert verdict.power is not None and verdict.power < 0.99  # a cap this small costs power, and it says so
    assert f"the cap of 100 requests leaves the power at {verdict.power:.2f}" in verdict.describe()


# --------------------------------------------------------------------------------------------------------
# The exact multinomial test's fallback
# --------------------------------------------------------------------------------------------------------


def test_too_many_splits_fall_back_to_bonferroni(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the enumeration budget at 10 splits, a 3-way split is decided by per-version exact binomial tests at
    alpha / 3; its exact level, summed over every split of 30 requests, is still at most alpha."""
    monkeypatch.setattr(stats, "EXACT_OUTCOME_BUDGET", 10)
    stats._exact_split.cache_clear()
    claim = {"v1": 50, "v2": 30, "v3": 20}
    verdict = multinomial_check({"v1": 15, "v2": 9, "v3": 6}, claim)
    assert "Bonferroni" in verdict.method and verdict.passed
    n = 30
    level = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            counts = {"v1": a, "v2": b, "v3": n - a - b}
            if not multinomial_check(counts, claim).passed:
                level += float(sp.multinomial.pmf([a, b, n - a - b], n, [0.5, 0.3, 0.2]))
    assert level <= DEFAULT_ALPHA
    stats._exact_split.cache_clear()


def test_two_versions_are_decided_exactly_as_the_binomial_test() -> None:
    """For two versions the exact multinomial test is scipy's two-sided binomial test, outcome by outcome."""
    for n, p in ((22, 0.1), (100, 0.5), (620, 0.5), (320, 0.1), (57, 0.3)):
        for k in range(n + 1):
            verdict = multinomial_check({"v2": k, "v1": n - k}, {"v2": p, "v1": 1 - p})
            assert verdict.p_value == pytest.approx(sp.binomtest(k, n, p).pvalue, rel=1e-9, abs=1e-12), (n, p, k)
