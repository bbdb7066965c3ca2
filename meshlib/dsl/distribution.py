"""Traffic splits, decided by exact tests at a stated confidence (meshlib.stats), for a fixed number of requests
or by sending batches until a sequential test decides.

A sequential decision belongs to the requests it sent: the "about N%" or "split" step that follows reads it
instead of testing those requests again (a fixed-size test over a number of requests that another test chose
would not keep its confidence), and only for the claim that was decided.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshlib.dsl import sending
from meshlib.dsl.responses import traced, version_of
from meshlib.dsl.world import World
from meshlib.errors import InputError
from meshlib.expect import ExpectationFailed
from meshlib.report.tables import escape, html_document, table_fragment
from meshlib.stats import (
    DistributionVerdict,
    SequentialVerdict,
    SplitVerdict,
    Stop,
    binomial_check,
    multinomial_check,
    render_table,
    sequential_check,
    sequential_design,
    verdict_tables,
)
from meshlib.traffic import Response

# The decision rules the steps use; tests/unit/test_split_levels.py measures these very functions.
SHARE_CHECK = binomial_check  # "about N% of responses come from APP VERSION" after a fixed number of requests
SPLIT_CHECK = multinomial_check  # "responses split between APP versions as:" after a fixed number of requests
SEQUENTIAL_CHECK = sequential_check  # "requests are sent until it is decided whether ...", after each batch

Counts = Callable[[list[Response]], dict[str, int]]


@dataclass(frozen=True)
class Decided:
    """A claim decided by sending until the sequential test stopped, and the requests that decided it."""

    app: str
    claim: dict[str, float]  # as the step stated it (shares of the listed categories)
    wording: str  # the claim in the step's words
    verdict: SequentialVerdict
    responses: list[Response]


def other(version: str) -> str:
    """The category of every response that did not come from `version` (in the share claims' tables)."""
    return f"not {version}"


def _share_counts(app: str, version: str) -> Counts:
    def count(responses: list[Response]) -> dict[str, int]:
        hits = sum(version_of(r, app) == version for r in responses)
        return {version: hits, other(version): len(responses) - hits}

    return count


def _split_counts(app: str) -> Counts:
    def count(responses: list[Response]) -> dict[str, int]:
        return dict(Counter(version_of(r, app) for r in responses))

    return count


def _share_wording(share: float, app: str, version: str) -> str:
    return f"about {share:.0%} of responses come from {app} {version}"


def _split_wording(app: str, shares: Mapping[str, float]) -> str:
    return f"responses split between {app} versions as " + ", ".join(f"{v} {s:.0%}" for v, s in shares.items())


# --- fixed number of requests (or the decision of a sequential send) ---------------------------------------


def about_share(world: World, share: float, app: str, version: str) -> None:
    decided = _decided(world)
    if decided is not None:
        claim = {version: share, other(version): 1.0 - share}
        _report_decided(world, decided, app, claim, _share_wording(share, app, version))
        return
    responses = traced(world)
    hits = sum(version_of(r, app) == version for r in responses)
    verdict = SHARE_CHECK(hits, len(responses), share, alpha=world.alpha, label=f"{app} {version}")
    _attach(world, f"distribution: {app} {version}", verdict)
    if verdict.warning:
        world.note(f"{app} {version} about {share:.0%}: {verdict.warning}")
    if not verdict.passed:
        raise ExpectationFailed(verdict.describe() + "\n" + render_table(verdict))


def _attach(world: World, name: str, verdict: SplitVerdict | DistributionVerdict | SequentialVerdict) -> None:
    """The verdict as evidence: its tables (observed against claimed, with the interval or the batches), then how
    it was decided."""
    grids, lines = verdict_tables(verdict)
    body = "".join(table_fragment(header, rows) for header, rows in grids)
    said = "".join(f'<p class="note">{escape(line)}</p>' for line in lines)
    world.attach(name, html_document(f"<h4>{escape(name)}</h4>{body}{said}", name), "html")


def split(world: World, app: str, shares: dict[str, float]) -> None:
    decided = _decided(world)
    if decided is not None:
        _report_decided(world, decided, app, dict(shares), _split_wording(app, shares))
        return
    responses = traced(world)
    counts = Counter(version_of(r, app) for r in responses)
    verdict = SPLIT_CHECK(dict(counts), shares, alpha=world.alpha)
    _attach(world, f"distribution across {app} versions", verdict)
    if verdict.warning:
        world.note(f"split of {app} versions: {verdict.warning}")
    if not verdict.passed:
        raise ExpectationFailed(verdict.describe() + "\n" + render_table(verdict))


# --- sequential: send until decided ------------------------------------------------------------------------


def decide_share(world: World, share: float, app: str, version: str, host: str, path: str) -> SequentialVerdict:
    """Send batches to `host` `path` until "about `share` of responses come from `app` `version`" is decided."""
    claim = {version: share, other(version): 1.0 - share}
    return _decide(world, app, claim, _share_wording(share, app, version), _share_counts(app, version), host, path)


def decide_split(world: World, app: str, shares: dict[str, float], host: str, path: str) -> SequentialVerdict:
    """Send batches to `host` `path` until the split of `app` versions as `shares` is decided."""
    return _decide(world, app, dict(shares), _split_wording(app, shares), _split_counts(app), host, path)


def _decide(world: World, app: str, claim: dict[str, float], wording: str, count: Counts, host: str,
            path: str) -> SequentialVerdict:
    design = sequential_design(claim, world.alpha, batch_multiple=world.concurrency)
    verdicts: list[SequentialVerdict] = []

    def decided(responses: list[Response]) -> bool:
        verdicts.append(SEQUENTIAL_CHECK(design, count(responses), verdicts[-1] if verdicts else None))
        return verdicts[-1].decided

    responses = sending.until_decided(world, path, host, design.batch, design.cap, decided)
    traced(world)  # a decision over batches whose records had not all arrived is no decision
    verdict = verdicts[-1]
    world.decided = Decided(app, claim, wording, verdict, responses)
    _attach(world, f"sequential check: {wording}", verdict)
    world.note(f"{wording}: {verdict.stopped()}")
    return verdict


def _decided(world: World) -> Decided | None:
    """The sequential decision over the last batch, if the last batch was sent until a claim was decided."""
    found = world.decided
    return found if isinstance(found, Decided) and found.responses is world.responses else None


def _same_claim(decided: Decided, app: str, claim: Mapping[str, float]) -> bool:
    if decided.app != app or list(decided.claim) != list(claim):
        return False
    total_decided, total_claim = sum(decided.claim.values()), sum(claim.values())
    return all(math.isclose(decided.claim[name] / total_decided, claim[name] / total_claim, abs_tol=1e-9)
               for name in claim)


def _report_decided(world: World, decided: Decided, app: str, claim: Mapping[str, float], wording: str) -> None:
    if not _same_claim(decided, app, claim):
        raise InputError(
            f"the last requests were sent until it was decided whether {decided.wording}; this step claims "
            f"{wording}, which they did not decide (testing them again would not keep the stated confidence): "
            "state the claim that was decided, or send a fixed number of requests first"
        )
    verdict = decided.verdict
    _attach(world, f"decided: {wording}", verdict)
    if verdict.stop == Stop.CAPPED:
        world.note(f"{wording}: {verdict.stopped()}")
    if not verdict.passed:
        raise ExpectationFailed(verdict.describe() + "\n" + render_table(verdict))
