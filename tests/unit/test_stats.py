"""Behaviour of meshlib.stats: the decisions, their stated error rates, and what a person reads on failure.

The simulation tests compare observed rates with computed ones. A rate estimated from R independent runs
has standard error sqrt(q(1 - q)/R); every bound below allows three standard errors, so a correct
implementation fails one of them with probability about 0.1-0.3%, and the RNG is seeded so the outcome is
fixed anyway.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from meshlib.stats import (
    DEFAULT_ALPHA,
    MAX_SAMPLE_SIZE,
    TARGET_POWER,
    DistributionVerdict,
    SampleSizeLimitError,
    SplitVerdict,
    StatsError,
    acceptance_region,
    binomial_check,
    flake_probability,
    min_sample_size,
    misroute_power,
    multinomial_check,
    render_table,
)

RUNS = 2000
SEED = 1234


def three_sigma(rate: float, runs: int = RUNS) -> float:
    """Three standard errors of a rate estimated from `runs` independent runs."""
    rate = min(1.0, max(0.0, rate))
    return 3.0 * math.sqrt(rate * (1.0 - rate) / runs)


def simulated_counts(rng: np.random.Generator, runs: int, requests: int, p: float) -> np.ndarray:
    """Matching requests per run, drawing every request of every run as its own Bernoulli(p)."""
    return (rng.random((runs, requests)) < p).sum(axis=1)


def rejection_rate(counts: np.ndarray, trials: int, claimed: float) -> float:
    """Fraction of runs that binomial_check fails (evaluated once per distinct count)."""
    values, frequency = np.unique(counts, return_counts=True)
    failed = sum(
        int(f)
        for v, f in zip(values, frequency, strict=True)
        if not binomial_check(int(v), trials, claimed).passed
    )
    return failed / len(counts)


def exact_power(trials: int, claimed: float, truth: float) -> float:
    """P(check fails | true share `truth`), from the acceptance region and the binomial distribution."""
    low, high = acceptance_region(trials, claimed)
    kept = sp.binom.cdf(high, trials, truth) - (sp.binom.cdf(low - 1, trials, truth) if low > 0 else 0.0)
    return float(1.0 - kept)


# --------------------------------------------------------------------------------------------------------
# binomial_check: decisions
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "trials", "claimed", "passed"),
    [
        (96, 1000, 0.10, True),  # 9.6% vs 10%
        (100, 1000, 0.10, True),
        (130, 1000, 0.10, False),  # 13%: p ~ 0.002
        (70, 1000, 0.10, False),
        (200, 1000, 0.10, False),  # a 10-point misroute
        (510, 1000, 0.50, True),
        (560, 1000, 0.50, False),
        (2, 20, 0.10, True),
        (7, 20, 0.10, False),
        (24, 200, 0.10, True),
    ],
)
def test_statistical_claims_pass_or_fail(successes: int, trials: int, claimed: float, passed: bool) -> None:
    verdict = binomial_check(successes, trials, claimed)
    assert verdict.passed is passed
    assert not verdict.exact
    assert verdict.p_value == pytest.approx(sp.binomtest(successes, trials, claimed).pvalue)
    assert verdict.passed == (verdict.p_value >= DEFAULT_ALPHA)
    assert verdict.observed == successes / trials
    assert verdict.alpha == DEFAULT_ALPHA


@pytest.mark.parametrize(
    ("successes", "trials", "claimed", "passed"),
    [
        (0, 1000, 0.0, True),  # "no response is mirrored"
        (1, 1000, 0.0, False),  # one counter-example is enough
        (1000, 1000, 1.0, True),  # "every response comes from v1"
        (999, 1000, 1.0, False),
        (0, 3, 0.0, True),
        (3, 3, 1.0, True),
    ],
)
def test_exact_claims_are_exact(successes: int, trials: int, claimed: float, passed: bool) -> None:
    verdict = binomial_check(successes, trials, claimed, label="mirrored")
    assert verdict.exact
    assert verdict.passed is passed
    assert verdict.p_value == (1.0 if passed else 0.0)
    assert "exact claim" in verdict.decision_rule()
    assert "no statistics" in verdict.describe()


def test_exact_claim_ignores_alpha() -> None:
    """Even a huge alpha cannot make one counter-example acceptable, nor fail a clean run."""
    assert not binomial_check(1, 10_000, 0.0, alpha=1e-9).passed
    assert binomial_check(0, 10, 0.0, alpha=0.5).passed


@pytest.mark.parametrize(
    ("successes", "trials", "claimed"),
    [
        (0, 20, 0.1),
        (2, 20, 0.1),
        (96, 1000, 0.1),
        (130, 1000, 0.1),
        (500, 1000, 0.5),
        (1000, 1000, 1.0),
        (3, 1000, 0.0),
        (17, 17, 0.9),
    ],
)
def test_confidence_interval_contains_observed(successes: int, trials: int, claimed: float) -> None:
    verdict = binomial_check(successes, trials, claimed)
    low, high = verdict.ci
    assert 0.0 <= low <= verdict.observed <= high <= 1.0
    assert verdict.confidence == pytest.approx(0.99)
    expected = sp.binomtest(successes, trials).proportion_ci(0.99, method="exact")
    assert (low, high) == pytest.approx((expected.low, expected.high))


@pytest.mark.parametrize(
    ("trials", "claimed"),
    [(20, 0.1), (150, 0.1), (1000, 0.1), (37, 0.5), (300, 0.03), (50, 0.97), (10, 0.0), (10, 1.0)],
)
def test_acceptance_region_is_exactly_where_the_check_passes(trials: int, claimed: float) -> None:
    """The region used for power agrees with scipy's binomtest for every k, and with binomial_check."""
    low, high = acceptance_region(trials, claimed)
    if 0.0 < claimed < 1.0:
        for k in range(trials + 1):
            assert (sp.binomtest(k, trials, claimed).pvalue >= DEFAULT_ALPHA) == (low <= k <= high), k
    for k in {max(0, low - 1), low, high, min(trials, high + 1)}:
        assert binomial_check(k, trials, claimed).passed == (low <= k <= high), k


@pytest.mark.parametrize(("trials", "claimed"), [(20, 0.1), (150, 0.1), (1000, 0.1), (300, 0.5), (80, 0.3)])
def test_false_failure_rate_never_exceeds_alpha(trials: int, claimed: float) -> None:
    """Exact size of the test: P(fail | claim true) <= alpha (the exact test is conservative)."""
    assert exact_power(trials, claimed, claimed) <= DEFAULT_ALPHA


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: binomial_check(1, 0, 0.1), "no requests were sent"),
        (lambda: binomial_check(11, 10, 0.1), "cannot exceed"),
        (lambda: binomial_check(-1, 10, 0.1), "whole number"),
        (lambda: binomial_check(1, 10, 10), "write 10% as 0.10"),
        (lambda: binomial_check(1, 10, 0.1, alpha=0), "alpha"),
        (lambda: binomial_check(1, 10, 0.1, misroute=0), "misroute"),
        (lambda: flake_probability(0.01, -1), "checks"),
        (lambda: min_sample_size(0.1, power=1.0), "power"),
        (lambda: multinomial_check({}, {"v1": 1}), "no requests were counted"),
        (lambda: multinomial_check({"v1": 1}, {}), "lists no categories"),
        (lambda: multinomial_check({"v1": 1}, {"v1": -1}), "must be finite and >= 0"),
        (lambda: multinomial_check({"v1": 1}, {"v1": 0}), "every claimed weight is 0"),
    ],
)
def test_bad_input_is_reported_in_words(call, message: str) -> None:
    with pytest.raises(StatsError, match=message):
        call()


# --------------------------------------------------------------------------------------------------------
# binomial_check: error rates by simulation
# --------------------------------------------------------------------------------------------------------


def test_false_failure_rate_by_simulation() -> None:
    """2000 correct runs of 1000 requests at p = 0.10, claimed 10%, alpha = 0.01.

    Bound: observed false-failure rate <= alpha + 3 * sqrt(alpha * (1 - alpha) / 2000) = 0.01 + 0.0067.
    """
    rng = np.random.default_rng(SEED)
    rate = rejection_rate(simulated_counts(rng, RUNS, 1000, 0.10), 1000, 0.10)
    assert rate <= DEFAULT_ALPHA + three_sigma(DEFAULT_ALPHA)


def test_power_against_ten_point_misroute_by_simulation() -> None:
    """True share 20% while 10% is claimed, 1000 requests: reject at least as often as the reported power.

    Bound: rejection rate >= power - 3 * sqrt(power * (1 - power) / 2000).
    """
    verdict = binomial_check(100, 1000, 0.10)
    assert not verdict.underpowered
    rng = np.random.default_rng(SEED + 1)
    rate = rejection_rate(simulated_counts(rng, RUNS, 1000, 0.20), 1000, 0.10)
    assert rate >= verdict.power - three_sigma(verdict.power)


@pytest.mark.parametrize(
    ("trials", "claimed", "truth"),
    [(150, 0.10, 0.20), (100, 0.10, 0.20), (300, 0.50, 0.40), (60, 0.30, 0.45)],
)
def test_reported_power_matches_simulation(trials: int, claimed: float, truth: float) -> None:
    """Where power is far from 0 and 1, the simulated rejection rate is within 3 standard errors of it."""
    power = exact_power(trials, claimed, truth)
    assert 0.2 < power < 0.95
    if abs(truth - claimed) == pytest.approx(0.10):
        assert misroute_power(trials, claimed) == pytest.approx(power)  # the harder side here
    rng = np.random.default_rng(SEED + trials)
    rate = rejection_rate(simulated_counts(rng, RUNS, trials, truth), trials, claimed)
    assert abs(rate - power) <= three_sigma(power)


# --------------------------------------------------------------------------------------------------------
# Power, warnings and sample size
# --------------------------------------------------------------------------------------------------------


def test_underpowered_warning_names_the_suggested_sample_size() -> None:
    verdict = binomial_check(2, 20, 0.10, label="v2")
    needed = min_sample_size(0.10)
    assert verdict.passed and verdict.underpowered
    assert verdict.power < TARGET_POWER
    assert verdict.suggested_trials == needed
    assert verdict.warning is not None
    assert "with 20 requests this check cannot reliably tell 10% from" in verdict.warning
    assert f"(power {verdict.power:.2f})" in verdict.warning
    assert f"send at least {needed} requests" in verdict.warning
    assert verdict.warning in verdict.describe()
    assert verdict.warning in render_table(verdict)


def test_enough_requests_gives_no_warning() -> None:
    verdict = binomial_check(100, 1000, 0.10)
    assert not verdict.underpowered
    assert verdict.warning is None and verdict.suggested_trials is None
    assert verdict.power > 0.99


def test_power_is_the_weaker_side() -> None:
    """Claimed 10% with 20 requests: a drop to 0% is never noticed (0 of 20 passes), so power is 0."""
    verdict = binomial_check(2, 20, 0.10)
    assert verdict.weakest_alternative == 0.0
    assert verdict.power == 0.0


@pytest.mark.parametrize(
    ("claimed", "misroute"),
    [(0.10, 0.10), (0.50, 0.10), (0.30, 0.10), (0.05, 0.10), (0.95, 0.10), (0.10, 0.20), (0.50, 0.05)],
)
def test_min_sample_size_is_where_power_starts_to_stay_above_target(claimed: float, misroute: float) -> None:
    """Our definition: the first n of a run of consecutive n that all reach 0.8 (see the docstring).

    So power(n) >= 0.8 and power(n - 1) < 0.8; and, checked here up to 2n, power never falls back below 0.8.
    """
    n = min_sample_size(claimed, misroute)
    assert misroute_power(n - 1, claimed, misroute) < TARGET_POWER
    for m in range(n, 2 * n + 1):
        assert misroute_power(m, claimed, misroute) >= TARGET_POWER, m


def test_min_sample_size_skips_the_sawtooth() -> None:
    """The exact test's power is sawtoothed: 132 requests reach 0.8 but 133-142 fall back; 143 is safe."""
    assert misroute_power(132, 0.10) >= TARGET_POWER
    assert any(misroute_power(m, 0.10) < TARGET_POWER for m in range(133, 143))
    assert min_sample_size(0.10) == 143


@pytest.mark.parametrize("claimed", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_min_sample_size_decreases_with_misroute(claimed: float) -> None:
    sizes = [min_sample_size(claimed, misroute) for misroute in (0.05, 0.10, 0.15, 0.20, 0.30)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > sizes[-1]


@pytest.mark.parametrize("claimed", [0.0, 1.0])
def test_min_sample_size_for_exact_claims(claimed: float) -> None:
    """One counter-example fails an exact claim: n must make 1 - 0.9**n >= 0.8, i.e. n >= 16."""
    assert min_sample_size(claimed, 0.10) == math.ceil(math.log(0.2) / math.log(0.9)) == 16


def test_min_sample_size_search_is_capped() -> None:
    with pytest.raises(SampleSizeLimitError, match=str(MAX_SAMPLE_SIZE)):
        min_sample_size(0.5, 0.001)


def test_warning_when_no_sample_size_within_the_cap_suffices() -> None:
    verdict = binomial_check(500, 1000, 0.5, misroute=0.001)
    assert verdict.underpowered and verdict.suggested_trials is None
    assert verdict.warning is not None and f"more than {MAX_SAMPLE_SIZE}" in verdict.warning


@pytest.mark.parametrize(
    ("alpha", "checks", "expected"),
    [(0.01, 0, 0.0), (0.01, 1, 0.01), (0.01, 50, 1 - 0.99**50), (0.05, 10, 1 - 0.95**10), (1e-6, 3, 3e-6)],
)
def test_flake_probability(alpha: float, checks: int, expected: float) -> None:
    assert flake_probability(alpha, checks) == pytest.approx(expected, rel=1e-5, abs=1e-15)


# --------------------------------------------------------------------------------------------------------
# multinomial_check
# --------------------------------------------------------------------------------------------------------

THREE_WAY = {"v1": 50, "v2": 30, "v3": 20}


@pytest.mark.parametrize(
    ("counts", "passed"),
    [
        ({"v1": 500, "v2": 300, "v3": 200}, True),
        ({"v1": 480, "v2": 320, "v3": 200}, True),
        ({"v1": 600, "v2": 250, "v3": 150}, False),
        ({"v1": 500, "v2": 200, "v3": 300}, False),  # v2 and v3 swapped
    ],
)
def test_exact_multinomial_three_way_split(counts: dict[str, int], passed: bool) -> None:
    verdict = multinomial_check(counts, THREE_WAY)
    assert isinstance(verdict, DistributionVerdict)
    assert verdict.passed is passed
    assert verdict.method == "exact multinomial test (3 versions)" and verdict.tested
    reference = exact_multinomial_p_value(list(counts.values()), [0.5, 0.3, 0.2])
    assert verdict.p_value == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_claimed_weights_are_relative() -> None:
    counts = {"v1": 480, "v2": 320, "v3": 200}
    a = multinomial_check(counts, THREE_WAY)
    b = multinomial_check(counts, {"v1": 0.5, "v2": 0.3, "v3": 0.2})
    assert a.p_value == pytest.approx(b.p_value)
    assert [row.claimed for row in a.rows] == pytest.approx([0.5, 0.3, 0.2])


def all_splits(n: int, k: int) -> np.ndarray:
    """Every split of n requests into k categories (rows of counts)."""
    heads = np.array([h for h in itertools.product(range(n + 1), repeat=k - 1) if sum(h) <= n], dtype=np.int64)
    return np.column_stack([heads, n - heads.sum(axis=1)])


def exact_multinomial_p_value(counts: list[int], probs: list[float]) -> float:
    """P(a split no more likely than the observed one) under H0, by enumerating every split of n requests."""
    n = sum(counts)
    splits = all_splits(n, len(counts))
    pmf = sp.multinomial.pmf(splits, n, probs)
    observed = sp.multinomial.pmf(counts, n, probs)
    return float(pmf[pmf <= observed * (1 + 1e-7)].sum())


@pytest.mark.parametrize(
    "counts",
    [
        {"v1": 5, "v2": 3, "v3": 2},
        {"v1": 9, "v2": 1, "v3": 0},
        {"v1": 2, "v2": 2, "v3": 6},
        {"v1": 3, "v2": 9, "v3": 0},
    ],
)
def test_small_samples_are_tested_exactly(counts: dict[str, int]) -> None:
    """Expected counts below 5 need no approximation either: the p-value is the exact one."""
    verdict = multinomial_check(counts, THREE_WAY)
    exact = exact_multinomial_p_value(list(counts.values()), [0.5, 0.3, 0.2])
    assert verdict.p_value == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert verdict.passed == (verdict.p_value >= DEFAULT_ALPHA)


@pytest.mark.parametrize("n", [10, 25, 40])
def test_the_exact_level_of_a_three_way_split_is_at_most_alpha(n: int) -> None:
    """Summed over every split: the probability that a correct 50/30/20 split fails is at most alpha."""
    splits = all_splits(n, 3)
    pmf = sp.multinomial.pmf(splits, n, [0.5, 0.3, 0.2])
    failed = np.array([not multinomial_check(dict(zip(THREE_WAY, map(int, row), strict=True)), THREE_WAY).passed
                       for row in splits])
    assert float(pmf[failed].sum()) <= DEFAULT_ALPHA


def test_small_sample_misroute_fails() -> None:
    verdict = multinomial_check({"v1": 0, "v2": 0, "v3": 12}, THREE_WAY)
    assert not verdict.passed
    assert verdict.underpowered and verdict.warning is not None and "send at least" in verdict.warning


@pytest.mark.parametrize(
    ("counts", "claimed", "says"),
    [
        ({"v1": 98, "v2": 2}, {"v1": 100}, "2 requests went to 'v2', which the claim does not list"),
        ({"v1": 98, "v2": 1}, {"v1": 100, "v2": 0}, "1 request went to 'v2', which the claim gives weight 0"),
    ],
)
def test_traffic_to_a_category_claimed_to_get_none_fails(counts, claimed, says: str) -> None:
    verdict = multinomial_check(counts, claimed)
    assert not verdict.passed and verdict.exact
    assert verdict.reason is not None and says in verdict.reason
    assert says in render_table(verdict) and says in verdict.describe()


def test_all_traffic_to_the_only_claimed_category_passes_exactly() -> None:
    verdict = multinomial_check({"v1": 40, "v2": 0}, {"v1": 1, "v2": 0})
    assert verdict.passed and verdict.exact and verdict.p_value == 1.0


# --------------------------------------------------------------------------------------------------------
# What a person reads
# --------------------------------------------------------------------------------------------------------


def test_render_table_for_a_proportion() -> None:
    verdict = binomial_check(96, 1000, 0.10, label="v2")
    table = render_table(verdict)
    lines = table.splitlines()
    assert lines[0].split(" | ") == ["category", "observed count", "observed %", "claimed %", "99% CI"]
    v2_row = next(line for line in lines if line.startswith("v2 "))
    assert "96" in v2_row and "9.6%" in v2_row and "10.0%" in v2_row and "[7.3%, 12.2%]" in v2_row
    assert any(line.startswith("not v2 ") and "904" in line for line in lines)
    assert (
        "exact two-sided binomial test, H0: p = 0.10, reject if p-value < 0.01 "
        "(pass when 76 to 124 of 1000 are v2); p-value = 0.71 → pass"
    ) in table


def test_render_table_for_a_failed_split() -> None:
    verdict = multinomial_check({"v1": 600, "v2": 250, "v3": 150}, THREE_WAY)
    table = render_table(verdict)
    assert "v3" in table and "150" in table and "15.0%" in table and "20.0%" in table
    rule = "exact multinomial test (3 versions), H0: v1 = 0.50, v2 = 0.30, v3 = 0.20"
    assert rule in table
    assert "reject if p-value < 0.01" in table and table.rstrip().endswith("→ fail")


def test_describe_says_what_was_expected_seen_and_how_sure() -> None:
    verdict = binomial_check(130, 1000, 0.10, label="v2")
    text = verdict.describe()
    assert isinstance(verdict, SplitVerdict) and not verdict.passed
    assert "Expected about 10% of responses to be v2" in text
    assert "Observed 130 of 1000 (13%)" in text
    assert "99% confidence interval" in text
    assert "fails this check 1% of the time" in text
    assert "10-point misroute" in text
    assert "\n" not in text
