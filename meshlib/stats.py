"""Statistics for traffic-split assertions: decide with a stated confidence, not a tolerance.

Weighted routes and mirror percentages are random, so "about 10% of responses come from v2" is a claim about
a probability, checked here with an exact test at a stated false-failure rate ``alpha``:

* :func:`binomial_check` — one proportion ("about 10% of responses come from v2", "10% are mirrored"):
  exact two-sided binomial test, Clopper-Pearson interval, and the power to notice a misroute.
* :func:`multinomial_check` — a whole split ("50/30/20 between v1, v2, v3"): chi-square goodness of fit,
  or a Monte-Carlo exact multinomial test when expected counts are small.
* :func:`min_sample_size` — how many requests a check needs to tell the claim from a misroute.
* :func:`flake_probability` — how often a suite of correct checks still fails somewhere.
* :func:`render_table` / ``describe()`` — what a person reads when a check fails.

Exact claims ("no response", "every response") stay exact: one counter-example fails them, no statistics.

The module is pure: no I/O, no clocks; the only randomness (the Monte-Carlo fallback) comes from an injected
``numpy.random.Generator`` and defaults to a fixed seed, so the same counts always give the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from meshlib.errors import MeshlibError


def _sp() -> ModuleType:
    """scipy.stats, imported when a check first needs it: the import costs about a second, which every run that
    loads the step library would pay otherwise."""
    from scipy import stats

    return stats

DEFAULT_ALPHA: float = 0.01
"""Default false-failure rate: a correct mesh fails a statistical check with probability at most 1%.

It is also the significance level of every test here (reject H0 when p-value < alpha) and sets the
confidence of the reported intervals (1 - alpha = 99%). Smaller alpha means fewer flaky failures but
needs more requests to notice a real misroute; see :func:`flake_probability` for a suite of many checks.
"""

DEFAULT_MISROUTE: float = 0.10
"""The misroute a check should be able to notice: the true share is 10 percentage points off the claim."""

TARGET_POWER: float = 0.8
"""A check is *underpowered* when it notices a misroute of ``misroute`` with probability below this."""

MAX_SAMPLE_SIZE: int = 100_000
""":func:`min_sample_size` searches no further than this many requests and raises beyond it."""

MIN_EXPECTED_COUNT: float = 5.0
"""Chi-square's large-sample approximation is used only when every expected count is at least this."""

DEFAULT_SIMULATIONS: int = 20_000
"""Monte-Carlo simulations for the small-sample multinomial test (p-value resolution ~1/20000)."""

DEFAULT_SEED: int = 20_240_601
"""Seed of the Monte-Carlo generator when none is injected: verdicts are reproducible run to run."""

# scipy.stats.binomtest treats outcomes whose probability is within this relative error of the observed
# one as "equally likely"; the acceptance region below must use the same rule to agree with it.
_RELATIVE_ERROR = 1 + 1e-7


class StatsError(MeshlibError, ValueError):
    """A statistics helper was called with input that makes no sense (negative counts, alpha of 2, ...)."""


class SampleSizeLimitError(StatsError):
    """No sample size up to :data:`MAX_SAMPLE_SIZE` reaches the requested power."""


# --------------------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitVerdict:
    """Outcome of :func:`binomial_check`: one proportion against a claimed probability.

    Attributes:
        passed: ``p_value >= alpha`` (for exact claims: no counter-example seen).
        label: what was counted ("v2", "mirrored"); used in the table and messages.
        successes: requests that matched ``label``.
        trials: requests sent.
        observed: ``successes / trials``.
        claimed: the claimed probability of a match.
        p_value: exact two-sided binomial p-value (1.0 or 0.0 for exact claims).
        alpha: false-failure rate the check was run at.
        ci: Clopper-Pearson (exact) confidence interval for the true proportion, at level ``1 - alpha``.
        misroute: size of the misroute the power refers to (0.10 = ten percentage points).
        power: probability that this check, with ``trials`` requests, fails when the true proportion is
            ``claimed ± misroute`` (clipped to [0, 1]); the smaller of the two sides that exist.
        weakest_alternative: the misrouted proportion that ``power`` refers to (the harder side to notice).
        underpowered: ``power < TARGET_POWER``.
        suggested_trials: when underpowered, :func:`min_sample_size` for this claim (``None`` otherwise or
            when it exceeds :data:`MAX_SAMPLE_SIZE`).
        warning: a sentence for people when underpowered, else ``None``.
        exact: the claim was 0 or 1 and was checked exactly, without statistics.
        method: the decision rule in a few words.
        acceptance: ``(low, high)``: the check passes exactly when ``low <= successes <= high``.
    """

    passed: bool
    label: str
    successes: int
    trials: int
    observed: float
    claimed: float
    p_value: float
    alpha: float
    ci: tuple[float, float]
    misroute: float
    power: float
    weakest_alternative: float
    underpowered: bool
    suggested_trials: int | None
    warning: str | None
    exact: bool
    method: str
    acceptance: tuple[int, int]

    @property
    def confidence(self) -> float:
        """Confidence level of :attr:`ci` (``1 - alpha``)."""
        return 1.0 - self.alpha

    def decision_rule(self) -> str:
        """The rule that decided this verdict, in words, ending with its outcome."""
        outcome = "pass" if self.passed else "fail"
        low, high = self.acceptance
        if self.exact:
            expectation = "none" if self.claimed == 0.0 else "all"
            return (
                f"exact claim, no statistics: pass only if {expectation} of the {self.trials} requests "
                f"are {self.label}; observed {self.successes} → {outcome}"
            )
        return (
            f"{self.method}, H0: p = {_prob(self.claimed)}, reject if p-value < {self.alpha:g} "
            f"(pass when {low} to {high} of {self.trials} are {self.label}); "
            f"p-value = {_pvalue(self.p_value)} → {outcome}"
        )

    def describe(self) -> str:
        """One paragraph for an assertion message: what was expected, what was seen, how sure the check is."""
        seen = (
            f"Observed {self.successes} of {self.trials} ({_pct(self.observed)}), "
            f"{_pct(self.confidence)} confidence interval {_pct(self.ci[0])} to {_pct(self.ci[1])}."
        )
        if self.exact:
            expected = (
                f"Expected {'no' if self.claimed == 0.0 else 'every'} response to be {self.label} "
                f"(an exact claim: one counter-example fails it, no statistics)."
            )
            verdict = "Passed." if self.passed else f"Failed: {self._counter_examples()}."
        else:
            expected = (
                f"Expected about {_pct(self.claimed)} of responses to be {self.label} "
                f"({self.method} at alpha = {self.alpha:g}: a correct mesh fails this check "
                f"{_pct(self.alpha)} of the time)."
            )
            unlikely = f"failed: this split is unlikely if {_pct(self.claimed)} is true."
            outcome = "passed." if self.passed else unlikely
            verdict = f"p-value {_pvalue(self.p_value)}, so the check {outcome}"
        sureness = (
            f"With {self.trials} requests it notices a {_points(self.misroute)} misroute "
            f"(a true share of {_pct(self.weakest_alternative)}) with probability {self.power:.2f}."
        )
        parts = [expected, seen, verdict, sureness]
        if self.warning:
            parts.append(f"Warning: {self.warning}.")
        return " ".join(parts)

    def _counter_examples(self) -> str:
        if self.claimed == 0.0:
            return f"{self.successes} of {self.trials} requests were {self.label}"
        return f"{self.trials - self.successes} of {self.trials} requests were not {self.label}"


@dataclass(frozen=True)
class CategoryRow:
    """One category of a :class:`DistributionVerdict`: counts, claimed share and interval."""

    name: str
    count: int
    observed: float
    claimed: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class DistributionVerdict:
    """Outcome of :func:`multinomial_check`: a whole split against claimed relative weights.

    Attributes:
        passed: ``p_value >= alpha`` and no category that the claim gives no traffic was seen.
        rows: one per category, claimed categories first (in claim order), then unclaimed ones seen.
        total: requests counted.
        p_value: of the test named in ``method`` (0.0 / 1.0 for exact decisions).
        alpha: false-failure rate the check was run at.
        method: the test used, in words.
        statistic: Pearson's X² (``None`` for exact decisions).
        dof: degrees of freedom of the chi-square test (``None`` otherwise).
        simulations: Monte-Carlo simulations used (``None`` when not simulated).
        reason: why the check failed without a test (a category that should get no traffic got some).
        misroute, power, weakest_category, underpowered, suggested_trials, warning: as for
            :class:`SplitVerdict`, from the per-category binomial test of the category hardest to check (a
            guide to the sample size; the whole-split test's own power is similar but not identical).

    Each row's ``ci`` is a Clopper-Pearson interval at ``1 - alpha`` for that category alone (the intervals
    are not simultaneous).
    """

    passed: bool
    rows: tuple[CategoryRow, ...]
    total: int
    p_value: float
    alpha: float
    method: str
    statistic: float | None
    dof: int | None
    simulations: int | None
    reason: str | None
    misroute: float
    power: float
    weakest_category: str | None
    underpowered: bool
    suggested_trials: int | None
    warning: str | None

    @property
    def confidence(self) -> float:
        """Confidence level of the per-category intervals (``1 - alpha``)."""
        return 1.0 - self.alpha

    @property
    def exact(self) -> bool:
        """The verdict was decided without statistics (an exact 0 or 100% claim)."""
        return self.statistic is None

    def decision_rule(self) -> str:
        """The rule that decided this verdict, in words, ending with its outcome."""
        outcome = "pass" if self.passed else "fail"
        if self.reason is not None:
            return f"exact claim, no statistics: {self.reason} → {outcome}"
        h0 = ", ".join(f"{row.name} = {_prob(row.claimed)}" for row in self.rows if row.claimed > 0)
        if self.statistic is None:
            return f"{self.method}: {h0}; every request is in the only claimed category → {outcome}"
        return (
            f"{self.method}, H0: {h0}, reject if p-value < {self.alpha:g}; "
            f"X² = {self.statistic:.3g}, p-value = {_pvalue(self.p_value)} → {outcome}"
        )

    def describe(self) -> str:
        """One paragraph for an assertion message: what was expected, what was seen, how sure the check is."""
        expected = "Expected a split of " + ", ".join(
            f"{_pct(row.claimed)} {row.name}" for row in self.rows if row.claimed > 0
        )
        seen = (
            "observed "
            + ", ".join(f"{row.count} {row.name} ({_pct(row.observed)})" for row in self.rows)
            + f" of {self.total} requests."
        )
        if self.reason is not None:
            verdict = f"Failed: {self.reason} (an exact claim, no statistics)."
        elif self.statistic is None:
            verdict = "Passed: all traffic went to the only claimed category."
        else:
            verdict = (
                f"Tested with the {self.method} at alpha = {self.alpha:g} (a correct mesh fails it "
                f"{_pct(self.alpha)} of the time): p-value {_pvalue(self.p_value)}, so the check "
                + ("passed." if self.passed else "failed: this split is unlikely if the claim is true.")
            )
        parts = [f"{expected}; {seen}", verdict]
        if self.weakest_category is not None:
            parts.append(
                f"With {self.total} requests a {_points(self.misroute)} misroute of {self.weakest_category} "
                f"is noticed with probability about {self.power:.2f}."
            )
        if self.warning:
            parts.append(f"Warning: {self.warning}.")
        return " ".join(parts)


# --------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------


def binomial_check(
    successes: int,
    trials: int,
    claimed: float,
    alpha: float = DEFAULT_ALPHA,
    misroute: float = DEFAULT_MISROUTE,
    *,
    label: str = "matching",
) -> SplitVerdict:
    """Check "about ``claimed`` of ``trials`` requests match" with an exact two-sided binomial test.

    H0: the true proportion is ``claimed``. The check passes when the p-value of
    ``scipy.stats.binomtest`` is at least ``alpha``, so a correct mesh fails it with probability at most
    ``alpha``. The verdict also reports a Clopper-Pearson interval at ``1 - alpha``, the power against
    ``claimed ± misroute`` and, when that power is below :data:`TARGET_POWER`, a warning naming the number
    of requests that would be enough (:func:`min_sample_size`).

    ``claimed`` of exactly 0 or 1 is an exact claim: it passes only if no request (resp. every request)
    matched — one counter-example fails it, whatever alpha.
    """
    n = _count(trials, "trials (requests sent)")
    k = _count(successes, "successes (matching requests)")
    if n == 0:
        raise StatsError("no requests were sent, so there is nothing to check; send some requests first")
    if k > n:
        raise StatsError(f"{k} matching requests out of only {n} sent: successes cannot exceed trials")
    p0 = _probability(claimed, "claimed proportion")
    a = _alpha(alpha)
    m = _misroute(misroute)

    exact = p0 in (0.0, 1.0)
    test = _sp().binomtest(k, n, p0 if not exact else 0.5)
    ci_result = test.proportion_ci(confidence_level=1.0 - a, method="exact")
    ci = (float(ci_result.low), float(ci_result.high))
    acceptance = acceptance_region(n, p0, a)
    if exact:
        passed = k == (0 if p0 == 0.0 else n)
        p_value = 1.0 if passed else 0.0
        method = "exact claim (no statistics)"
    else:
        p_value = float(test.pvalue)
        passed = p_value >= a
        method = "exact two-sided binomial test"

    power, weakest = _misroute_power(n, p0, m, a)
    underpowered = power < TARGET_POWER
    suggested: int | None = None
    warning: str | None = None
    if underpowered:
        advice = _sample_size_advice(p0, m, a)
        suggested = advice[0]
        warning = (
            f"with {n} requests this check cannot reliably tell {_pct(p0)} from {_pct(weakest)} "
            f"(power {power:.2f}); {advice[1]}"
        )
    return SplitVerdict(
        passed=passed,
        label=label,
        successes=k,
        trials=n,
        observed=k / n,
        claimed=p0,
        p_value=p_value,
        alpha=a,
        ci=ci,
        misroute=m,
        power=power,
        weakest_alternative=weakest,
        underpowered=underpowered,
        suggested_trials=suggested,
        warning=warning,
        exact=exact,
        method=method,
        acceptance=acceptance,
    )


def multinomial_check(
    counts: Mapping[str, int],
    claimed: Mapping[str, float],
    alpha: float = DEFAULT_ALPHA,
    *,
    misroute: float = DEFAULT_MISROUTE,
    rng: np.random.Generator | None = None,
    simulations: int = DEFAULT_SIMULATIONS,
) -> DistributionVerdict:
    """Check a whole split, e.g. ``{"v1": 50, "v2": 50}``, against observed ``counts`` per category.

    ``claimed`` weights are relative (50/30/20 and 0.5/0.3/0.2 are the same claim); they are normalised.
    A category with weight 0, or observed but not listed in ``claimed``, is an exact claim of no traffic:
    any request there fails the check with a reason, whatever alpha.

    Otherwise H0 is "the true shares are the claimed ones", tested with Pearson's X² statistic:

    * every expected count >= :data:`MIN_EXPECTED_COUNT` → ``scipy.stats.chisquare`` (k - 1 degrees of
      freedom);
    * some expected count below it → the chi-square approximation is unreliable, so the p-value is the
      Monte-Carlo *exact multinomial* one: ``simulations`` splits are drawn under H0 from ``rng`` (a
      fixed-seed generator by default) and p = (1 + #{simulated X² >= observed X²}) / (simulations + 1).
      This was chosen over per-category binomial tests with a Bonferroni correction because it keeps one
      test of the whole split at exactly level alpha (up to simulation error, resolution 1/simulations),
      whereas Bonferroni is conservative and loses power exactly where samples are already small.

    The check passes when p-value >= alpha. Power and the sample-size warning use the per-category binomial
    test of the category hardest to check (see :class:`DistributionVerdict`).
    """
    a = _alpha(alpha)
    m = _misroute(misroute)
    if not claimed:
        raise StatsError("the claimed split lists no categories; name at least one, e.g. {'v1': 100}")
    weights: dict[str, float] = {}
    for name, weight in claimed.items():
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise StatsError(f"claimed weight of {name!r} is {weight!r}; weights must be finite and >= 0")
        weights[name] = value
    weight_sum = sum(weights.values())
    if weight_sum <= 0:
        raise StatsError("every claimed weight is 0; at least one category must get traffic")
    observed: dict[str, int] = {name: _count(c, f"count of {name!r}") for name, c in counts.items()}
    total = sum(observed.values())
    if total == 0:
        raise StatsError("no requests were counted, so there is nothing to check; send some requests first")

    names = list(weights) + [name for name in observed if name not in weights]
    shares = {name: weights.get(name, 0.0) / weight_sum for name in names}
    rows = tuple(
        CategoryRow(
            name=name,
            count=observed.get(name, 0),
            observed=observed.get(name, 0) / total,
            claimed=shares[name],
            ci=_clopper_pearson(observed.get(name, 0), total, a),
        )
        for name in names
    )

    positive = [row for row in rows if row.claimed > 0]
    power, weakest, underpowered, suggested, warning = _distribution_power(positive, total, m, a)
    common = {
        "rows": rows,
        "total": total,
        "alpha": a,
        "misroute": m,
        "power": power,
        "weakest_category": weakest,
        "underpowered": underpowered,
        "suggested_trials": suggested,
        "warning": warning,
    }

    violations = [row for row in rows if row.claimed == 0 and row.count > 0]
    if violations:
        listed = "; ".join(
            f"{row.count} request{'s' if row.count != 1 else ''} went to {row.name!r}, which the claim "
            + ("gives weight 0" if row.name in weights else "does not list")
            for row in violations
        )
        return DistributionVerdict(
            passed=False,
            p_value=0.0,
            method="exact claim (no statistics)",
            statistic=None,
            dof=None,
            simulations=None,
            reason=listed,
            **common,
        )
    if len(positive) == 1:
        return DistributionVerdict(
            passed=True,
            p_value=1.0,
            method="exact claim (no statistics)",
            statistic=None,
            dof=None,
            simulations=None,
            reason=None,
            **common,
        )

    f_obs = np.array([row.count for row in positive], dtype=float)
    probs = np.array([row.claimed for row in positive], dtype=float)
    f_exp = probs * total
    statistic = float(np.sum((f_obs - f_exp) ** 2 / f_exp))
    dof = len(positive) - 1
    if float(f_exp.min()) >= MIN_EXPECTED_COUNT:
        result = _sp().chisquare(f_obs, f_exp)
        statistic = float(result.statistic)
        p_value = float(result.pvalue)
        method = f"chi-square goodness-of-fit test ({dof} degree{'s' if dof != 1 else ''} of freedom)"
        sims: int | None = None
    else:
        sims = _count(simulations, "simulations")
        if sims < 1:
            raise StatsError("simulations must be at least 1 (the default is 20000)")
        generator = rng if rng is not None else np.random.default_rng(DEFAULT_SEED)
        simulated = generator.multinomial(total, probs / probs.sum(), size=sims)
        simulated_stats = np.sum((simulated - f_exp) ** 2 / f_exp, axis=1)
        tolerance = 1e-9 * max(1.0, statistic)
        exceed = int(np.count_nonzero(simulated_stats >= statistic - tolerance))
        p_value = (1 + exceed) / (sims + 1)
        method = (
            f"exact multinomial test by Monte Carlo ({sims} simulations, Pearson X² statistic; "
            f"some expected counts < {MIN_EXPECTED_COUNT:g})"
        )
    return DistributionVerdict(
        passed=p_value >= a,
        p_value=p_value,
        method=method,
        statistic=statistic,
        dof=dof,
        simulations=sims,
        reason=None,
        **common,
    )


# --------------------------------------------------------------------------------------------------------
# Planning: power, sample size, flakiness
# --------------------------------------------------------------------------------------------------------


def acceptance_region(trials: int, claimed: float, alpha: float = DEFAULT_ALPHA) -> tuple[int, int]:
    """``(low, high)`` such that :func:`binomial_check` passes exactly when ``low <= successes <= high``.

    The two-sided exact test (scipy's "minlike" p-value: the probability of outcomes no more likely than
    the one observed) rejects the least likely outcomes first; the binomial distribution is unimodal, so
    the outcomes it keeps form one interval. Outcomes more than 15 standard deviations (+50) from the mean
    have negligible probability (< 1e-40) and are treated as rejected.
    """
    n = _count(trials, "trials (requests sent)")
    p0 = _probability(claimed, "claimed proportion")
    return _acceptance(n, p0, _alpha(alpha))


def misroute_power(
    trials: int, claimed: float, misroute: float = DEFAULT_MISROUTE, alpha: float = DEFAULT_ALPHA
) -> float:
    """Probability that :func:`binomial_check` fails when the true share is ``claimed ± misroute``.

    Alternatives are clipped to [0, 1]; a side that clips onto ``claimed`` itself does not exist (a claim
    of 0 can only be misrouted upwards). The result is the smaller power of the sides that exist.
    """
    n = _count(trials, "trials (requests sent)")
    p0 = _probability(claimed, "claimed proportion")
    return _misroute_power(n, p0, _misroute(misroute), _alpha(alpha))[0]


def min_sample_size(
    claimed: float,
    misroute: float = DEFAULT_MISROUTE,
    alpha: float = DEFAULT_ALPHA,
    power: float = TARGET_POWER,
) -> int:
    """Requests needed before the exact binomial test at ``alpha`` notices ``claimed ± misroute``.

    The power of an exact (discrete) test is *sawtoothed* in n: it jumps up when the acceptance region
    loses an outcome and then drifts down until the next jump. So "the smallest n with power >= target" is
    often followed by larger n that fall back below it (claimed 10%, misroute 10 points, alpha 0.01:
    power first reaches 0.8 at n = 132, but n = 133..142 dip below it again). Telling a user "send at least
    132" would be wrong, so this returns

        the smallest n such that every n' in [n, n + window) reaches ``power`` on both misroute sides,

    where ``window`` spans at least three sawtooth periods (about ``3 / min(p, 1 - p)`` requests, between 20
    and 1000; 1 for claims of 0 or 1, whose power only grows). Consequences: power(n) >= target and
    power(n - 1) < target; the result is non-increasing in ``misroute``.

    The search starts where the best possible test (the randomised one-sided Neyman-Pearson test at
    ``alpha``, whose power never decreases with n) first reaches the target — no smaller n can — and stops
    at :data:`MAX_SAMPLE_SIZE`: beyond it :class:`SampleSizeLimitError` is raised.
    """
    p0 = _probability(claimed, "claimed proportion")
    m = _misroute(misroute)
    a = _alpha(alpha)
    target = float(power)
    if not 0.0 < target < 1.0:
        raise StatsError(f"power must be between 0 and 1 (exclusive), got {power!r}; 0.8 is usual")
    return _min_sample_size(p0, m, a, target)


def flake_probability(alpha: float, checks: int) -> float:
    """Chance that at least one of ``checks`` independent checks fails although the mesh is correct.

    ``1 - (1 - alpha) ** checks``: 50 checks at alpha = 0.01 fail somewhere about 39% of the time.
    """
    a = _alpha(alpha)
    k = _count(checks, "checks")
    return float(-math.expm1(k * math.log1p(-a)))


# --------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------


def render_table(verdict: SplitVerdict | DistributionVerdict) -> str:
    """A plain-text table of the observation against the claim, followed by the decision rule in words.

    Columns: category | observed count | observed % | claimed % | CI at ``1 - alpha`` (Clopper-Pearson).
    """
    ci_header = f"{_pct(verdict.confidence)} CI"
    header = ("category", "observed count", "observed %", "claimed %", ci_header)
    body: list[tuple[str, str, str, str, str]] = []
    if isinstance(verdict, SplitVerdict):
        low, high = verdict.ci
        body.append(
            (
                verdict.label,
                str(verdict.successes),
                _pct1(verdict.observed),
                _pct1(verdict.claimed),
                _interval(low, high),
            )
        )
        body.append(
            (
                f"not {verdict.label}",
                str(verdict.trials - verdict.successes),
                _pct1(1 - verdict.observed),
                _pct1(1 - verdict.claimed),
                _interval(1 - high, 1 - low),
            )
        )
        total = verdict.trials
    else:
        for row in verdict.rows:
            body.append(
                (row.name, str(row.count), _pct1(row.observed), _pct1(row.claimed), _interval(*row.ci))
            )
        total = verdict.total
    body.append(("total", str(total), _pct1(1.0), _pct1(1.0), ""))

    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = (False, True, True, True, False)

    def fmt(cells: tuple[str, ...]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return " | ".join(padded).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    lines = [fmt(header), rule, *(fmt(line) for line in body[:-1]), rule, fmt(body[-1])]
    lines.append(f"decision: {verdict.decision_rule()}")
    if verdict.warning:
        lines.append(f"warning: {verdict.warning}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------------


def _acceptance(n: int, p0: float, alpha: float) -> tuple[int, int]:
    """Outcomes k in which the exact two-sided binomial test of H0 p = p0 does not reject (see above)."""
    if p0 == 0.0:
        return (0, 0)
    if p0 == 1.0:
        return (n, n)
    sd = math.sqrt(n * p0 * (1.0 - p0))
    start = max(0, math.floor(n * p0 - 15.0 * sd - 50.0))
    stop = min(n, math.ceil(n * p0 + 15.0 * sd + 50.0))
    ks = np.arange(start, stop + 1)
    pmf = _sp().binom.pmf(ks, n, p0)
    ordered = np.sort(pmf)
    cumulative = np.cumsum(ordered)
    index = np.searchsorted(ordered, pmf * _RELATIVE_ERROR, side="right")
    p_values = cumulative[index - 1]
    kept = ks[p_values >= alpha]
    if kept.size == 0:  # pragma: no cover - the mode always has p-value ~1
        mode = int(np.argmax(pmf))
        return (int(ks[mode]), int(ks[mode]))
    return (int(kept[0]), int(kept[-1]))


def _alternatives(p0: float, misroute: float) -> list[float]:
    """The misroute alternatives that exist: claimed ± misroute, clipped to [0, 1], not equal to claimed."""
    candidates = (max(0.0, p0 - misroute), min(1.0, p0 + misroute))
    return [p1 for p1 in candidates if p1 != p0]


def _misroute_power(n: int, p0: float, misroute: float, alpha: float) -> tuple[float, float]:
    """(smallest power over the existing alternatives, the alternative where it is smallest)."""
    low, high = _acceptance(n, p0, alpha)
    best: tuple[float, float] | None = None
    for p1 in _alternatives(p0, misroute):
        kept = float(_sp().binom.cdf(high, n, p1) - (_sp().binom.cdf(low - 1, n, p1) if low > 0 else 0.0))
        power = min(1.0, max(0.0, 1.0 - kept))
        if best is None or power < best[0]:
            best = (power, p1)
    assert best is not None  # misroute > 0 always leaves at least one side
    return best


def _neyman_pearson_bound(n: int, p0: float, misroute: float, alpha: float) -> float:
    """Upper bound on the exact test's power: the randomised one-sided UMP test at ``alpha``, per side.

    Any level-alpha test (including the two-sided exact one) has at most this power against each side, and
    it never decreases with n (a test may ignore extra observations), so it can be binary-searched.
    """
    bound = 1.0
    for p1 in _alternatives(p0, misroute):
        if p1 > p0:
            q0, q1 = p0, p1
        else:  # mirror: count the non-matching requests instead
            q0, q1 = 1.0 - p0, 1.0 - p1
        c = int(_sp().binom.isf(alpha, n, q0))
        while c > -1 and _sp().binom.sf(c - 1, n, q0) <= alpha:
            c -= 1
        while _sp().binom.sf(c, n, q0) > alpha:
            c += 1
        at_c = float(_sp().binom.pmf(c, n, q0))
        gamma = 0.0 if at_c == 0.0 else min(1.0, max(0.0, (alpha - float(_sp().binom.sf(c, n, q0))) / at_c))
        side = float(_sp().binom.sf(c, n, q1)) + gamma * float(_sp().binom.pmf(c, n, q1))
        bound = min(bound, side)
    return bound


def _stability_window(p0: float) -> int:
    """Consecutive n that must all reach the target power (about three sawtooth periods)."""
    if p0 in (0.0, 1.0):
        return 1
    return int(min(1000, max(20, math.ceil(3.0 / min(p0, 1.0 - p0)))))


@lru_cache(maxsize=256)
def _min_sample_size(p0: float, misroute: float, alpha: float, target: float) -> int:
    if _neyman_pearson_bound(MAX_SAMPLE_SIZE, p0, misroute, alpha) < target:
        raise SampleSizeLimitError(
            f"no sample size up to {MAX_SAMPLE_SIZE} requests gives power {target:g} against a "
            f"{_points(misroute)} misroute of a {_pct(p0)} claim at alpha = {alpha:g} (the search stops at "
            f"{MAX_SAMPLE_SIZE}); claim a larger misroute or accept a larger alpha"
        )
    low, high = 1, MAX_SAMPLE_SIZE  # smallest n whose upper bound reaches the target
    while low < high:
        mid = (low + high) // 2
        if _neyman_pearson_bound(mid, p0, misroute, alpha) >= target:
            high = mid
        else:
            low = mid + 1
    window = _stability_window(p0)
    run_start: int | None = None
    n = low
    while True:
        if _misroute_power(n, p0, misroute, alpha)[0] >= target:
            if run_start is None:
                run_start = n
            if n - run_start + 1 >= window:
                return run_start
        else:
            run_start = None
            if n >= MAX_SAMPLE_SIZE:
                raise SampleSizeLimitError(
                    f"no sample size up to {MAX_SAMPLE_SIZE} requests keeps power {target:g} against a "
                    f"{_points(misroute)} misroute of a {_pct(p0)} claim at alpha = {alpha:g} (the search "
                    f"stops at {MAX_SAMPLE_SIZE}); claim a larger misroute or accept a larger alpha"
                )
        n += 1


def _sample_size_advice(p0: float, misroute: float, alpha: float) -> tuple[int | None, str]:
    try:
        needed = _min_sample_size(p0, misroute, alpha, TARGET_POWER)
    except SampleSizeLimitError:
        return None, f"send more than {MAX_SAMPLE_SIZE} requests (the sample-size search stops there)"
    return needed, f"send at least {needed} requests"


def _distribution_power(
    positive: list[CategoryRow], total: int, misroute: float, alpha: float
) -> tuple[float, str | None, bool, int | None, str | None]:
    """Power guide for a split: the per-category binomial check of the hardest category."""
    if len(positive) < 2:
        return 1.0, None, False, None, None
    weakest: tuple[float, float, CategoryRow] | None = None
    for row in positive:
        power, alternative = _misroute_power(total, row.claimed, misroute, alpha)
        if weakest is None or power < weakest[0]:
            weakest = (power, alternative, row)
    assert weakest is not None
    power, alternative, row = weakest
    if power >= TARGET_POWER:
        return power, row.name, False, None, None
    needed, advice = _sample_size_advice(row.claimed, misroute, alpha)
    warning = (
        f"with {total} requests this check cannot reliably tell {row.name} at {_pct(row.claimed)} from "
        f"{_pct(alternative)} (power {power:.2f}); {advice}"
    )
    return power, row.name, True, needed, warning


def _clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    ci = _sp().binomtest(k, n).proportion_ci(confidence_level=1.0 - alpha, method="exact")
    return (float(ci.low), float(ci.high))


def _count(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise StatsError(f"{what} must be a whole number, got {value!r}")
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise StatsError(f"{what} must be a whole number, got {value!r}") from None
    if number != value or number < 0:
        raise StatsError(f"{what} must be a whole number >= 0, got {value!r}")
    return number


def _probability(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StatsError(f"{what} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        hint = " (write 10% as 0.10)" if 1.0 < number <= 100.0 else ""
        raise StatsError(f"{what} must be between 0 and 1, got {value!r}{hint}")
    return number


def _alpha(value: object) -> float:
    number = _probability(value, "alpha (false-failure rate)")
    if not 0.0 < number < 1.0:
        raise StatsError(
            f"alpha (false-failure rate) must be strictly between 0 and 1, got {value!r}; "
            f"the default is {DEFAULT_ALPHA}"
        )
    return number


def _misroute(value: object) -> float:
    number = _probability(value, "misroute")
    if not 0.0 < number < 1.0:
        raise StatsError(f"misroute must be strictly between 0 and 1, got {value!r}; 0.10 means ten points")
    return number


def _pct(x: float) -> str:
    """Compact percentage for prose: 0.1 -> '10%', 0.125 -> '12.5%', 0.99 -> '99%'."""
    text = f"{100.0 * x:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _pct1(x: float) -> str:
    """Fixed one-decimal percentage for table columns."""
    return f"{100.0 * x:.1f}%"


def _interval(low: float, high: float) -> str:
    return f"[{_pct1(low)}, {_pct1(high)}]"


def _points(misroute: float) -> str:
    text = f"{100.0 * misroute:.1f}".rstrip("0").rstrip(".")
    return f"{text}-point"


def _prob(x: float) -> str:
    """A claimed probability as in 'H0: p = 0.10'."""
    return f"{x:.2f}" if round(x, 2) == x else f"{x:.4g}"


def _pvalue(p: float) -> str:
    if p >= 0.001:
        return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"
    return f"{p:.1e}"
