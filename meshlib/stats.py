"""Statistics for traffic-split assertions: decide with a stated confidence, not a tolerance.

Weighted routes and mirror percentages are random, so "about 10% of responses come from v2" is a claim about
a probability, checked here with an exact test at a stated false-failure rate ``alpha``:

* :func:`binomial_check` — one proportion ("about 10% of responses come from v2", "10% are mirrored"):
  exact two-sided binomial test, Clopper-Pearson interval, and the power to notice a misroute.
* :func:`multinomial_check` — a whole split ("50/30/20 between v1, v2, v3"): the exact multinomial test
  (per-version exact binomial tests with a Bonferroni correction where there are too many splits to
  enumerate); both keep their level exactly, no large-sample approximation.
* :func:`sequential_design` / :func:`sequential_check` — a claim decided with as few requests as it takes:
  a mixture sequential probability ratio test looked at after each batch, with a cap; :func:`sequential_oc`
  gives its exact error rates and expected requests for two categories.
* :func:`min_sample_size` — how many requests a check needs to tell the claim from a misroute.
* :func:`flake_probability` — how often a suite of correct checks still fails somewhere.
* :func:`render_table` / ``describe()`` — what a person reads when a check fails.

Exact claims ("no response", "every response") stay exact: one counter-example fails them, no statistics.

The module is pure: no I/O, no clocks, no randomness; the same counts always give the same verdict.
docs/statistics.md gives each check's level and power at the shipped features' sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from types import ModuleType

import numpy as np

from meshlib.errors import MeshlibError


def _sp() -> ModuleType:
    """scipy.stats, imported when a check first needs it: the import costs about a second, which every run that
    loads the step library would pay otherwise."""
    from scipy import stats

    return stats


def _special() -> ModuleType:
    """scipy.special, imported when first needed (see :func:`_sp`)."""
    from scipy import special

    return special


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

REQUIRED_POWER: float = 0.99
"""The power every split check of the shipped features has against a 10-point misroute (tested by simulation
in tests/unit/test_split_levels.py), and the power a sequential check aims for by default."""

EXACT_OUTCOME_BUDGET: int = 1_000_000
"""The exact multinomial test enumerates at most this many splits; beyond it (many versions and many requests)
each version gets its own exact binomial test at alpha / k (Bonferroni), whose level is also proven."""

SEQUENTIAL_BATCHES: int = 10
"""A sequential check's batch is about 1/SEQUENTIAL_BATCHES of the requests the fixed-size check needs."""

SEQUENTIAL_CAP: float = 3.0
"""A sequential check sends at most this many times the fixed-size check's requests."""

_SUPPORT_SDS = 8.0  # the exact multinomial test enumerates splits within this many standard deviations (+2)

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
        alpha: false-failure rate the check was run at: a correct mesh fails it with probability at most this.
        method: the test used, in words.
        tested: a statistical test decided; ``False`` when the claim was decided exactly, without statistics.
        reason: why the check failed without a test (a category that should get no traffic got some).
        misroute: size of the misroute the power refers to (0.10: ten points of traffic moved from one claimed
            version to another).
        power: probability that this check, with ``total`` requests, fails when ``misroute`` of the traffic
            goes to the wrong version; the smallest over every such move between claimed versions. Exact for
            the exact multinomial test; a lower bound for the Bonferroni fallback.
        weakest_alternative: that hardest misroute in words ("v1 60%, v2 40%"); ``None`` for exact decisions.
        underpowered: ``power < TARGET_POWER``.
        suggested_trials: when underpowered, the requests that would reach :data:`TARGET_POWER` (exact for
            two versions, the hardest single version's :func:`min_sample_size` otherwise).
        warning: a sentence for people when underpowered, else ``None``.

    Each row's ``ci`` is a Clopper-Pearson interval at ``1 - alpha`` for that category alone (the intervals
    are not simultaneous).
    """

    passed: bool
    rows: tuple[CategoryRow, ...]
    total: int
    p_value: float
    alpha: float
    method: str
    tested: bool
    reason: str | None
    misroute: float
    power: float
    weakest_alternative: str | None
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
        return not self.tested

    def decision_rule(self) -> str:
        """The rule that decided this verdict, in words, ending with its outcome."""
        outcome = "pass" if self.passed else "fail"
        if self.reason is not None:
            return f"exact claim, no statistics: {self.reason} → {outcome}"
        h0 = ", ".join(f"{row.name} = {_prob(row.claimed)}" for row in self.rows if row.claimed > 0)
        if not self.tested:
            return f"{self.method}: {h0}; every request is in the only claimed category → {outcome}"
        return (
            f"{self.method}, H0: {h0}, reject if p-value < {self.alpha:g}; "
            f"p-value = {_pvalue(self.p_value)} → {outcome}"
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
        elif not self.tested:
            verdict = "Passed: all traffic went to the only claimed category."
        else:
            verdict = (
                f"Tested with the {self.method} at alpha = {self.alpha:g} (a correct mesh fails it at most "
                f"{_pct(self.alpha)} of the time): p-value {_pvalue(self.p_value)}, so the check "
                + ("passed." if self.passed else "failed: this split is unlikely if the claim is true.")
            )
        parts = [f"{expected}; {seen}", verdict]
        if self.weakest_alternative is not None:
            parts.append(
                f"With {self.total} requests a {_points(self.misroute)} misroute (hardest to notice: "
                f"{self.weakest_alternative}) is noticed with probability {self.power:.2f}."
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
    ci = _clopper_pearson(k, n, a)
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
) -> DistributionVerdict:
    """Check a whole split, e.g. ``{"v1": 50, "v2": 50}``, against observed ``counts`` per category.

    ``claimed`` weights are relative (50/30/20 and 0.5/0.3/0.2 are the same claim); they are normalised.
    A category with weight 0, or observed but not listed in ``claimed``, is an exact claim of no traffic:
    any request there fails the check with a reason, whatever alpha.

    Otherwise H0 is "the true shares are the claimed ones", decided by the *exact multinomial test*: the
    p-value is the probability, under H0, of every split of the same number of requests that is no more
    likely than the one observed (the multinomial form of scipy's two-sided ``binomtest``, and equal to it for
    two versions). Splits are enumerated where they have probability (within 8 standard deviations of the
    claim on every version); the little mass outside is added to every p-value, so the test never rejects
    more often than alpha. Its level is exact, not an approximation: the chi-square approximation it
    replaces failed up to 1.8% of correct releases at alpha = 0.01 (10% claimed, 22 requests).

    When the enumeration would exceed :data:`EXACT_OUTCOME_BUDGET` splits (many versions and many requests),
    each version gets its own exact two-sided binomial test at ``alpha / k`` (Bonferroni): also a proven
    level (at most alpha by the union bound), somewhat conservative.

    The check passes when p-value >= alpha. ``power`` is the probability of failing when ``misroute`` of the
    traffic moves between two claimed versions, the smallest over every such move.
    """
    a = _alpha(alpha)
    m = _misroute(misroute)
    weights = _claimed_weights(claimed)
    observed: dict[str, int] = {name: _count(c, f"count of {name!r}") for name, c in counts.items()}
    total = sum(observed.values())
    if total == 0:
        raise StatsError("no requests were counted, so there is nothing to check; send some requests first")

    weight_sum = sum(weights.values())
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
    probs = tuple(row.claimed for row in positive)
    power, weakest = _split_power(total, probs, tuple(row.name for row in positive), a, m)
    underpowered = power < TARGET_POWER
    suggested, warning = None, None
    if underpowered:
        suggested, warning = _split_advice(positive, total, power, weakest, m, a)
    common = {
        "rows": rows,
        "total": total,
        "alpha": a,
        "misroute": m,
        "power": power,
        "weakest_alternative": weakest,
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
            passed=False, p_value=0.0, method="exact claim (no statistics)", tested=False, reason=listed, **common
        )
    if len(positive) == 1:
        return DistributionVerdict(
            passed=True, p_value=1.0, method="exact claim (no statistics)", tested=False, reason=None, **common
        )

    x = np.array([row.count for row in positive], dtype=np.int64)
    support = _exact_split(total, probs)
    if support is not None:
        p_value = float(support.p_values(x[None, :])[0])
        method = f"exact multinomial test ({len(positive)} versions)"
    else:
        p_value = _bonferroni_p_value(x, total, probs)
        method = (
            f"exact binomial test per version with a Bonferroni correction (alpha / {len(positive)} each; "
            f"more than {EXACT_OUTCOME_BUDGET:,} possible splits to enumerate)"
        )
    return DistributionVerdict(
        passed=p_value >= a, p_value=p_value, method=method, tested=True, reason=None, **common
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


Grid = tuple[tuple[str, ...], list[tuple[str, ...]]]  # a table: header, rows


def verdict_tables(verdict: SplitVerdict | DistributionVerdict | SequentialVerdict) -> tuple[list[Grid], list[str]]:
    """The observation against the claim as tables, and the lines that say how it was decided: what
    `render_table` prints and the report renders as HTML.

    Columns: category | observed count | observed % | claimed % | CI at ``1 - alpha`` (Clopper-Pearson), the last
    row the total. A sequential verdict has no interval column (an interval after a data-dependent stop would not
    keep its confidence); a second table lists the likelihood ratios batch by batch instead.
    """
    if isinstance(verdict, SequentialVerdict):
        return _sequential_tables(verdict)
    header = ("category", "observed count", "observed %", "claimed %", f"{_pct(verdict.confidence)} CI")
    body: list[tuple[str, ...]] = []
    if isinstance(verdict, SplitVerdict):
        low, high = verdict.ci
        body.append((verdict.label, str(verdict.successes), _pct1(verdict.observed), _pct1(verdict.claimed),
                     _interval(low, high)))
        body.append((f"not {verdict.label}", str(verdict.trials - verdict.successes), _pct1(1 - verdict.observed),
                     _pct1(1 - verdict.claimed), _interval(1 - high, 1 - low)))
        total = verdict.trials
    else:
        body += [(row.name, str(row.count), _pct1(row.observed), _pct1(row.claimed), _interval(*row.ci))
                 for row in verdict.rows]
        total = verdict.total
    body.append(("total", str(total), _pct1(1.0), _pct1(1.0), ""))
    lines = [f"decision: {verdict.decision_rule()}"] + ([f"warning: {verdict.warning}"] if verdict.warning else [])
    return [(header, body)], lines


def render_table(verdict: SplitVerdict | DistributionVerdict | SequentialVerdict) -> str:
    """A plain-text table of the observation against the claim, followed by the decision rule in words."""
    grids, lines = verdict_tables(verdict)
    right = (False, True, True, True, False)
    text = [_grid(header, body, right[:len(header)] if header[0] == "category" else (True,) * len(header))
            for header, body in grids]
    return "\n\n".join(text) + "\n" + "\n".join(lines)


def _sequential_tables(verdict: SequentialVerdict) -> tuple[list[Grid], list[str]]:
    d = verdict.design
    claimed = dict(zip(d.names, d.claimed, strict=True))
    counts = [
        (name, str(count), _pct1(count / verdict.total), _pct1(claimed.get(name, 0.0)))
        for name, count in verdict.counts
    ]
    trace = [
        (str(i), str(requests), f"{math.exp(min(mixture, 700.0)):.3g}", f"{math.exp(min(largest, 700.0)):.3g}")
        for i, (requests, mixture, largest) in enumerate(verdict.history, start=1)
    ]
    grids: list[Grid] = [
        (("category", "observed count", "observed %", "claimed %"), counts),
        (("batch", "requests", "misroutes vs claim", "largest misroute not ruled out"), trace),
    ]
    lines = [
        f"(refuted at {1.0 / d.alpha:g} or more; a misroute is ruled out at {d.beta:g} or less, and the claim "
        "accepted once every misroute is)",
        f"decision: {verdict.stopped()} → {'pass' if verdict.passed else 'fail'}",
        verdict.guarantees(),
    ]
    return grids, lines


def _grid(header: tuple[str, ...], body: list[tuple[str, ...]], right: tuple[bool, ...]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return " | ".join(padded).rstrip()

    return "\n".join([fmt(header), "-+-".join("-" * w for w in widths), *(fmt(line) for line in body)])


# --------------------------------------------------------------------------------------------------------
# Sequential checks: send until the claim is decided
# --------------------------------------------------------------------------------------------------------


class Stop(IntEnum):
    """Where a sequential check stands after a batch."""

    CONTINUE = 0  # no boundary crossed yet: send another batch
    ACCEPTED = 1  # every misroute has been ruled out: pass
    REJECTED = 2  # the misroutes together are at least 1/alpha times as likely as the claim: fail
    CAPPED = 3  # the cap was reached between the boundaries: the claim was not refuted, pass


@dataclass(frozen=True)
class SequentialDesign:
    """A sequential test of a claimed split: a mixture sequential probability ratio test (SPRT).

    After each batch, for every misroute ``q`` (``misroute`` of the traffic moved from one listed category to
    another, see ``alternatives``) the likelihood ratio ``LR_q = P(counts | q) / P(counts | claim)`` is
    computed from all counts so far. Then:

    * **reject** (the check fails) as soon as the mixture ``mean_q LR_q >= 1 / alpha``, or a category claimed
      to get no traffic got some (an exact claim);
    * a misroute ``q`` is **ruled out** at the first look where ``LR_q <= beta`` (and stays ruled out);
      the check **accepts** (passes) once every misroute is ruled out;
    * **cap**: after ``cap`` requests without either, stop; the claim was not refuted, so the check passes.

    Why the numbers hold, whatever the batch size and wherever the run stops (Ville's inequality: a
    nonnegative supermartingale that starts at 1 ever reaches ``c`` with probability at most ``1 / c``):

    * under the claim, the mixture ratio is such a martingale, so a correct mesh fails with probability at
      most ``alpha``;
    * under a misroute ``q``, ``1 / LR_q`` is one, so ``q`` is ever ruled out (and the check accepts it) with
      probability at most ``beta``; the power against ``q`` is at least ``1 - beta - P(reaching the cap | q)``,
      and ``beta`` leaves a tenth of ``1 - power`` to the cap. The cap is :data:`SEQUENTIAL_CAP` times the
      fixed-size check's requests, where that last term is far smaller; for two categories
      :func:`sequential_oc` computes every figure exactly.

    Attributes:
        names: the listed categories (a claim of 0 allowed: any request there fails the check).
        claimed: their claimed shares, normalised.
        alternatives: the misroutes, as shares in ``names`` order; ``labels`` says each in words.
        alpha: the false-failure rate the check keeps.
        power: the power it keeps against every misroute.
        misroute: size of the misroutes (0.10: ten points).
        batch: requests per batch; the boundaries are looked at after each batch.
        cap: most requests the check sends.
        fixed_size: the requests a fixed-size exact check needs for the same power (for two categories,
            :func:`min_sample_size`; a guide from the hardest single category otherwise).
    """

    names: tuple[str, ...]
    claimed: tuple[float, ...]
    alternatives: tuple[tuple[float, ...], ...]
    labels: tuple[str, ...]
    alpha: float
    power: float
    misroute: float
    batch: int
    cap: int
    fixed_size: int

    @property
    def beta(self) -> float:
        """How often a misroute may be ruled out: nine tenths of ``1 - power`` (the cap may take a tenth)."""
        return 0.9 * (1.0 - self.power)

    @property
    def reject_at(self) -> float:
        """Reject when the natural log of the mixture likelihood ratio reaches this: ``log(1 / alpha)``."""
        return math.log(1.0 / self.alpha)

    @property
    def rule_out_at(self) -> float:
        """A misroute is ruled out when its log likelihood ratio is at most this: ``log(beta)``."""
        return math.log(self.beta)

    def claim_text(self) -> str:
        return _describe_split(self.names, self.claimed)

    def log_ratios(self, counts: np.ndarray) -> np.ndarray:
        """``log LR_q`` of every misroute (last axis) for counts (last axis: ``names``); any leading shape.

        A misroute that the counts rule out (a request where it sends none) has ``-inf``.
        """
        x = np.asarray(counts, dtype=float)
        p = np.asarray(self.claimed, dtype=float)
        q = np.asarray(self.alternatives, dtype=float)  # (A, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(q) - np.log(p)[None, :]  # (A, k): +inf where p = 0 < q, -inf where q = 0 < p
            terms = x[..., None, :] * ratio
            terms = np.where(x[..., None, :] > 0, terms, 0.0)
            total = terms.sum(axis=-1)
        return np.where(np.isnan(total), -np.inf, total)

    def decide(self, counts: np.ndarray, ruled_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Where the check stands after a batch: (:class:`Stop` codes, misroutes ruled out so far).

        ``counts``: requests per category so far (last axis: ``names``), any leading shape; ``ruled_out``: the
        misroutes ruled out at earlier looks (last axis: ``alternatives``; none by default). This is the whole
        decision rule: the step calls it with one row, the simulation with thousands.
        """
        x = np.asarray(counts)
        ratios = self.log_ratios(x)
        before = np.zeros(ratios.shape, dtype=bool) if ruled_out is None else np.asarray(ruled_out, dtype=bool)
        now = before | (ratios <= self.rule_out_at)
        mixture = _special().logsumexp(ratios, axis=-1) - math.log(len(self.alternatives))
        zero = np.asarray(self.claimed) == 0.0
        impossible = (x[..., zero] > 0).any(axis=-1) if zero.any() else np.zeros(x.shape[:-1], dtype=bool)
        rejected = impossible | (mixture >= self.reject_at)
        accepted = ~rejected & now.all(axis=-1)
        capped = ~rejected & ~accepted & (x.sum(axis=-1) >= self.cap)
        codes = np.full(x.shape[:-1], int(Stop.CONTINUE), dtype=np.int8)
        codes[accepted] = int(Stop.ACCEPTED)
        codes[rejected] = int(Stop.REJECTED)
        codes[capped] = int(Stop.CAPPED)
        return codes, now


@dataclass(frozen=True)
class SequentialOC:
    """Exact operating characteristics of a two-category :class:`SequentialDesign` under one true split."""

    truth: tuple[float, ...]
    label: str
    rejected: float  # probability that the check fails
    accepted: float
    capped: float
    mean_requests: float


@dataclass(frozen=True)
class SequentialVerdict:
    """Where a sequential check stands after a batch, and why.

    Attributes:
        design: the test.
        counts: requests per category, ``design.names`` first, then unlisted categories seen.
        total: requests counted.
        batches: batches sent.
        stop: where it stands (:class:`Stop`).
        log_mixture: natural log of the mixture likelihood ratio.
        log_ratios: natural log of each misroute's likelihood ratio (``design.labels`` order).
        ruled_out_at: for each misroute, the requests after which it was ruled out (``None``: not yet).
        reason: why it stopped (or goes on), in words.
        history: ``(requests, mixture ratio, largest ratio of a misroute not yet ruled out)`` per batch.
        level, power, mean_requests: exact false-failure rate, smallest power over the misroutes and
            expected requests when the claim holds, from :func:`sequential_oc` (``None`` beyond two categories,
            where the bounds ``alpha`` and ``1 - power`` hold but are not computed exactly).
    """

    design: SequentialDesign
    counts: tuple[tuple[str, int], ...]
    total: int
    batches: int
    stop: Stop
    log_mixture: float
    log_ratios: tuple[float, ...]
    ruled_out_at: tuple[int | None, ...]
    reason: str
    history: tuple[tuple[int, float, float], ...]
    level: float | None
    power: float | None
    mean_requests: float | None

    @property
    def decided(self) -> bool:
        return self.stop != Stop.CONTINUE

    @property
    def passed(self) -> bool:
        """The claim was not refuted (accepted, or not refuted by the cap)."""
        return self.stop in (Stop.ACCEPTED, Stop.CAPPED)

    @property
    def ruled_out(self) -> tuple[bool, ...]:
        return tuple(at is not None for at in self.ruled_out_at)

    def stopped(self) -> str:
        """How many requests it took and why it stopped, in one sentence."""
        word = {Stop.ACCEPTED: "accepted", Stop.REJECTED: "refuted", Stop.CAPPED: "not refuted by the cap",
                Stop.CONTINUE: "undecided"}[self.stop]
        batches = f"{self.batches} batch{'es' if self.batches != 1 else ''} of up to {self.design.batch}"
        verb = "stopped" if self.decided else "goes on"
        return f"{verb} after {self.total} requests ({batches}): the claim ({self.design.claim_text()}) is {word}, " \
               f"{self.reason}"

    def guarantees(self) -> str:
        """What the check promises, with the exact figures where they are computed."""
        d = self.design
        text = (
            f"Mixture SPRT at alpha = {d.alpha:g} with power {d.power:g} against every {_points(d.misroute)} "
            f"misroute, looked at after each batch, cap {d.cap} requests: a correct mesh fails it at most "
            f"{_pct(d.alpha)} of the time and a misroute is ruled out at most {_pct(d.beta)} of the time "
            f"(Ville's inequality); a run that reaches the cap passes."
        )
        if self.level is not None and self.power is not None and self.mean_requests is not None:
            text += (
                f" Exactly, over every path: false failures {_pct(round(self.level, 5))}, power "
                f"{self.power:.4f}, {self.mean_requests:.0f} requests on average when the claim holds, where the "
                f"fixed-size exact check needs {d.fixed_size}."
            )
            if self.power < d.power:
                text += (f" Warning: the cap of {d.cap} requests leaves the power at {self.power:.2f}; raise it "
                         f"(the default is {SEQUENTIAL_CAP:g} times the fixed-size check).")
        return text

    def describe(self) -> str:
        seen = ", ".join(f"{count} {name} ({_pct(count / self.total)})" for name, count in self.counts)
        return f"Sequential check {self.stopped()}. Observed {seen}. {self.guarantees()}"


def sequential_design(
    claimed: Mapping[str, float],
    alpha: float = DEFAULT_ALPHA,
    *,
    misroute: float = DEFAULT_MISROUTE,
    power: float = REQUIRED_POWER,
    batch: int | None = None,
    batch_multiple: int = 1,
    cap: int | None = None,
) -> SequentialDesign:
    """The sequential test of ``claimed`` (relative weights, as for :func:`multinomial_check`).

    By default a batch is a tenth of what the fixed-size exact check needs for the same ``power``
    (:data:`SEQUENTIAL_BATCHES`), rounded up to a multiple of ``batch_multiple`` (the requests in flight at
    once), and the cap is :data:`SEQUENTIAL_CAP` times that fixed size, in whole batches.
    """
    a = _alpha(alpha)
    m = _misroute(misroute)
    target = float(power)
    if not 0.0 < target < 1.0:
        raise StatsError(f"power must be between 0 and 1 (exclusive), got {power!r}; 0.99 is the default")
    weights = _claimed_weights(claimed)
    names = tuple(weights)
    if len(names) < 2:
        raise StatsError(
            f"a split of only {names[0]!r} is an exact claim (every response from it), which needs no sequential "
            "test: send a fixed number of requests and check that every response comes from it"
        )
    weight_sum = sum(weights.values())
    probs = tuple(weights[name] / weight_sum for name in names)
    alternatives = tuple(q for _, _, q in _shifts(probs, m))
    labels = tuple(_describe_split(names, q) for q in alternatives)
    try:
        if len(names) == 2:
            fixed = _min_sample_size(probs[0], m, a, target)
        else:
            fixed = max(_min_sample_size(p, m, a, target) for p in probs)
    except SampleSizeLimitError as exc:
        raise StatsError(f"no sequential check can be planned: {exc}") from None
    multiple = max(1, _count(batch_multiple, "batch multiple"))
    size = _count(batch, "batch size") if batch is not None else math.ceil(fixed / SEQUENTIAL_BATCHES)
    size = max(multiple, math.ceil(size / multiple) * multiple)
    limit = _count(cap, "cap") if cap is not None else math.ceil(SEQUENTIAL_CAP * fixed / size) * size
    limit = min(limit, MAX_SAMPLE_SIZE)
    if limit < size:
        raise StatsError(f"a cap of {limit} requests is smaller than one batch of {size}; raise the cap")
    return SequentialDesign(names, probs, alternatives, labels, a, target, m, size, limit, fixed)


def sequential_check(
    design: SequentialDesign, counts: Mapping[str, int], previous: SequentialVerdict | None = None
) -> SequentialVerdict:
    """Where ``design`` stands after one more batch, with ``counts`` per category over every batch so far (pure).

    ``previous`` is the verdict after the batch before (``None`` after the first): it carries the misroutes
    already ruled out and the history. A category outside ``design.names`` that got requests refutes the claim
    at once (an exact claim of no traffic), as in :func:`multinomial_check`.
    """
    observed = {name: _count(c, f"count of {name!r}") for name, c in counts.items()}
    total = sum(observed.values())
    if total == 0:
        raise StatsError("no requests were counted, so there is nothing to decide; send a batch first")
    x = np.array([observed.get(name, 0) for name in design.names], dtype=np.int64)
    before = previous.ruled_out if previous is not None else (False,) * len(design.alternatives)
    codes, now = design.decide(x, np.array(before, dtype=bool))
    ratios = design.log_ratios(x)
    ruled_out_at = tuple(
        (previous.ruled_out_at[i] if previous is not None and before[i] else total) if flag else None
        for i, flag in enumerate(now.tolist())
    )
    mixture = float(_special().logsumexp(ratios) - math.log(len(design.alternatives)))
    open_ratios = [float(r) for r, flag in zip(ratios, now.tolist(), strict=True) if not flag]
    largest = max(open_ratios) if open_ratios else -math.inf
    history = (*(previous.history if previous is not None else ()), (total, mixture, largest))
    listed = tuple((name, int(c)) for name, c in zip(design.names, x, strict=True))
    unlisted = tuple((name, c) for name, c in observed.items() if name not in design.names and c > 0)
    zero = [(name, c) for name, c in listed if c > 0 and design.claimed[design.names.index(name)] == 0.0]
    stop = Stop(int(codes))
    if unlisted or zero:
        stop = Stop.REJECTED
        reason = "; ".join(
            [f"{c} request{'s' if c != 1 else ''} went to {name!r}, which the claim does not list"
             for name, c in unlisted]
            + [f"{c} request{'s' if c != 1 else ''} went to {name!r}, which the claim gives weight 0"
               for name, c in zero]
        ) + " (an exact claim, no statistics)"
    elif stop == Stop.REJECTED:
        reason = (f"since the misroutes together are {_ratio(mixture)} times as likely as the claim (1/alpha = "
                  f"{1.0 / design.alpha:g} refutes it)")
    elif stop == Stop.ACCEPTED:
        reason = "since every misroute is ruled out (at most beta = " + f"{design.beta:g} times as likely as " \
                 "the claim): " + "; ".join(f"({label}) after {at} requests" for label, at in
                                            zip(design.labels, ruled_out_at, strict=True))
    elif stop == Stop.CAPPED:
        reason = (f"since the cap of {design.cap} requests was reached with the misroutes {_ratio(mixture)} times "
                  f"as likely as the claim (1/alpha = {1.0 / design.alpha:g} would refute it) and "
                  f"{sum(1 for flag in now.tolist() if not flag)} misroute(s) not ruled out")
    else:
        reason = f"since no boundary is crossed yet (misroutes {_ratio(mixture)} times as likely as the claim)"
    level = power = mean = None
    if len(design.names) == 2:
        level, power, mean = _sequential_summary(design)
    return SequentialVerdict(
        design=design,
        counts=listed + unlisted,
        total=total,
        batches=len(history),
        stop=stop,
        log_mixture=mixture,
        log_ratios=tuple(float(r) for r in ratios),
        ruled_out_at=ruled_out_at,
        reason=reason,
        history=history,
        level=level,
        power=power,
        mean_requests=mean,
    )


def sequential_oc(design: SequentialDesign, truth: float, label: str = "") -> SequentialOC:
    """Exact operating characteristics of a two-category design when the first category's true share is
    ``truth``: the probability of each way it stops and the expected requests, summed over every path.

    Dynamic programming over (the first category's count, the misroutes ruled out) after each batch, which is
    all the decision depends on, so the figures have no simulation error.
    """
    if len(design.names) != 2:
        raise StatsError("exact operating characteristics are computed for two categories only; simulate others")
    t = _probability(truth, "true share")
    return _sequential_oc(design, t, label or _describe_split(design.names, (t, 1.0 - t)))


@lru_cache(maxsize=64)
def _sequential_oc(design: SequentialDesign, truth: float, label: str) -> SequentialOC:
    binom = _sp().binom
    width = len(design.alternatives)
    states: dict[tuple[bool, ...], np.ndarray] = {(False,) * width: np.ones(1)}
    n = 0
    outcome = {Stop.REJECTED: 0.0, Stop.ACCEPTED: 0.0, Stop.CAPPED: 0.0}
    mean = 0.0
    while n < design.cap and states:
        size = min(design.batch, design.cap - n)
        step = binom.pmf(np.arange(size + 1), size, truth)
        n += size
        first = np.arange(n + 1)
        counts = np.column_stack([first, n - first])
        following: dict[tuple[bool, ...], np.ndarray] = {}
        for flags, state in states.items():
            mass = np.convolve(state, step)
            codes, now = design.decide(counts, np.broadcast_to(np.array(flags), (n + 1, width)))
            for stop in outcome:
                outcome[stop] += float(mass[codes == int(stop)].sum())
            mean += n * float(mass[codes != int(Stop.CONTINUE)].sum())
            going = codes == int(Stop.CONTINUE)
            for combo in {tuple(row) for row in now[going].tolist()}:
                pick = going & (now == np.array(combo)).all(axis=1)
                following.setdefault(combo, np.zeros(n + 1))[pick] += mass[pick]
        states = {flags: state for flags, state in following.items() if state.sum() > 1e-16}
    return SequentialOC((truth, 1.0 - truth), label, outcome[Stop.REJECTED], outcome[Stop.ACCEPTED],
                        outcome[Stop.CAPPED], mean)


def _sequential_summary(design: SequentialDesign) -> tuple[float, float, float]:
    """(exact false-failure rate, smallest power over the misroutes, mean requests when the claim holds)."""
    null = sequential_oc(design, design.claimed[0], "the claim")
    power = min(
        sequential_oc(design, q[0], label).rejected
        for q, label in zip(design.alternatives, design.labels, strict=True)
    )
    return null.rejected, power, null.mean_requests


def _ratio(log_value: float) -> str:
    return f"{math.exp(min(log_value, 700.0)):.3g}"


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


def _claimed_weights(claimed: Mapping[str, float]) -> dict[str, float]:
    """The claim's relative weights, checked: at least one category, all finite and >= 0, not all 0."""
    if not claimed:
        raise StatsError("the claimed split lists no categories; name at least one, e.g. {'v1': 100}")
    weights: dict[str, float] = {}
    for name, weight in claimed.items():
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise StatsError(f"claimed weight of {name!r} is {weight!r}; weights must be numbers") from None
        if not math.isfinite(value) or value < 0:
            raise StatsError(f"claimed weight of {name!r} is {weight!r}; weights must be finite and >= 0")
        weights[name] = value
    if sum(weights.values()) <= 0:
        raise StatsError("every claimed weight is 0; at least one category must get traffic")
    return weights


def _shifts(probs: tuple[float, ...], misroute: float) -> list[tuple[int, int, tuple[float, ...]]]:
    """Every misroute of ``misroute`` of the traffic from category i to category j (i != j): ``(i, j, q)``.

    A category with less than ``misroute`` loses all it has (a 5% canary misrouted by 10 points gets 0%).
    """
    moves: list[tuple[int, int, tuple[float, ...]]] = []
    for i, p_i in enumerate(probs):
        moved = min(misroute, p_i)
        if moved <= 0.0:
            continue
        for j in range(len(probs)):
            if j == i:
                continue
            q = list(probs)
            q[i] = max(0.0, p_i - moved)
            q[j] = min(1.0, probs[j] + moved)
            moves.append((i, j, tuple(q)))
    return moves


def _describe_split(names: tuple[str, ...], q: tuple[float, ...]) -> str:
    return ", ".join(f"{name} {_pct(share)}" for name, share in zip(names, q, strict=True))


def _log_pmf(grid: np.ndarray, n: int, probs: tuple[float, ...]) -> np.ndarray:
    """Multinomial log-probabilities of the splits in ``grid`` (rows of counts summing to n); 0 log 0 = 0."""
    special = _special()
    logs = special.xlogy(grid, np.asarray(probs, dtype=float)[None, :]).sum(axis=1)
    return special.gammaln(n + 1.0) - special.gammaln(grid + 1.0).sum(axis=1) + logs


@dataclass(frozen=True)
class _ExactSplit:
    """Every split of ``n`` requests with probability under H0, ordered by that probability.

    ``outside`` is the H0 mass of the splits not enumerated (more than :data:`_SUPPORT_SDS` standard deviations
    from the claim on some category); it is added to every p-value, so no p-value is ever too small.
    """

    n: int
    probs: tuple[float, ...]
    grid: np.ndarray  # (G, k) counts
    pmf: np.ndarray  # (G,) probabilities under H0
    ascending: np.ndarray  # pmf sorted
    cumulative: np.ndarray  # running sum of ``ascending``
    outside: float

    def p_values(self, counts: np.ndarray) -> np.ndarray:
        """Exact two-sided p-values of splits (rows of ``counts``): P(a split no more likely than this one)."""
        pmf = np.exp(_log_pmf(np.asarray(counts, dtype=float), self.n, self.probs))
        return self._p_of(pmf)

    def _p_of(self, pmf: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.ascending, pmf * _RELATIVE_ERROR, side="right")
        below = np.where(index > 0, self.cumulative[np.maximum(index - 1, 0)], 0.0)
        return np.minimum(1.0, below + self.outside)

    def power(self, q: tuple[float, ...], alpha: float) -> float:
        """P(the test at ``alpha`` rejects | true shares ``q``); splits outside the enumeration are rejected."""
        kept = self._p_of(self.pmf) >= alpha
        mass = float(np.exp(_log_pmf(self.grid[kept].astype(float), self.n, q)).sum())
        return min(1.0, max(0.0, 1.0 - mass))


def _support_ranges(n: int, probs: tuple[float, ...]) -> list[tuple[int, int]]:
    ranges = []
    for p in probs[:-1]:
        sd = math.sqrt(n * p * (1.0 - p))
        low = max(0, math.floor(n * p - _SUPPORT_SDS * sd - 2.0))
        high = min(n, math.ceil(n * p + _SUPPORT_SDS * sd + 2.0))
        ranges.append((low, high))
    return ranges


@lru_cache(maxsize=8)
def _exact_split(n: int, probs: tuple[float, ...]) -> _ExactSplit | None:
    """The enumeration for the exact multinomial test, or ``None`` when it would be too large."""
    ranges = _support_ranges(n, probs)
    if math.prod(high - low + 1 for low, high in ranges) > EXACT_OUTCOME_BUDGET:
        return None
    axes = np.meshgrid(*(np.arange(low, high + 1) for low, high in ranges), indexing="ij")
    head = np.stack([axis.ravel() for axis in axes], axis=1)
    last = n - head.sum(axis=1)
    keep = last >= 0
    grid = np.column_stack([head[keep], last[keep]]).astype(np.int64)
    pmf = np.exp(_log_pmf(grid.astype(float), n, probs))
    ascending = np.sort(pmf)
    cumulative = np.cumsum(ascending)
    outside = max(0.0, 1.0 - float(cumulative[-1]))
    return _ExactSplit(n, probs, grid, pmf, ascending, cumulative, outside)


def _bonferroni_p_value(counts: np.ndarray, n: int, probs: tuple[float, ...]) -> float:
    smallest = min(float(_sp().binomtest(int(c), n, p).pvalue) for c, p in zip(counts, probs, strict=True))
    return min(1.0, len(probs) * smallest)


def _split_power(
    n: int, probs: tuple[float, ...], names: tuple[str, ...], alpha: float, misroute: float
) -> tuple[float, str | None]:
    """(smallest power over every misroute between claimed categories, that misroute in words)."""
    if len(probs) < 2:
        return 1.0, None
    support = _exact_split(n, probs)
    worst: tuple[float, tuple[float, ...]] | None = None
    for i, j, q in _shifts(probs, misroute):
        if support is not None:
            power = support.power(q, alpha)
        else:  # Bonferroni: rejects when either version that moved does; at least the better of the two
            power = max(
                _binomial_power(n, probs[c], q[c], alpha / len(probs)) for c in (i, j)
            )
        if worst is None or power < worst[0]:
            worst = (power, q)
    assert worst is not None  # two claimed categories always allow a move
    return worst[0], _describe_split(names, worst[1])


def _binomial_power(n: int, p0: float, p1: float, alpha: float) -> float:
    low, high = _acceptance(n, p0, alpha)
    kept = float(_sp().binom.cdf(high, n, p1) - (_sp().binom.cdf(low - 1, n, p1) if low > 0 else 0.0))
    return min(1.0, max(0.0, 1.0 - kept))


def _split_advice(
    positive: list[CategoryRow], total: int, power: float, weakest: str | None, misroute: float, alpha: float
) -> tuple[int | None, str]:
    """Suggested requests and a warning for an underpowered split check."""
    if len(positive) == 2:
        needed, advice = _sample_size_advice(positive[0].claimed, misroute, alpha)
    else:  # a guide: the single version hardest to check, on its own
        hardest = max(positive, key=lambda row: row.claimed * (1.0 - row.claimed))
        needed, advice = _sample_size_advice(hardest.claimed, misroute, alpha)
        advice = advice.replace("send at least", "send at least about")
    claim = _describe_split(tuple(row.name for row in positive), tuple(row.claimed for row in positive))
    warning = (
        f"with {total} requests this check cannot reliably tell {claim} from {weakest} (power {power:.2f}); "
        f"{advice}"
    )
    return needed, warning


def _clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval at ``1 - alpha`` in its closed form, from beta quantiles: the same
    interval as scipy's ``binomtest(...).proportion_ci(method="exact")``, without its root finding."""
    beta = _sp().beta
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2.0, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return (low, high)


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
