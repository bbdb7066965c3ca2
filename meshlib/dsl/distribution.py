"""Traffic splits, decided by exact tests at a stated confidence (meshlib.stats)."""

from __future__ import annotations

from collections import Counter

from meshlib.dsl.responses import _need, version_of
from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed
from meshlib.stats import binomial_check, multinomial_check, render_table


def about_share(world: World, share: float, app: str, version: str) -> None:
    responses = _need(world)
    hits = sum(version_of(r, app) == version for r in responses)
    verdict = binomial_check(hits, len(responses), share, alpha=world.alpha, label=f"{app} {version}")
    world.attach(f"distribution: {app} {version}", render_table(verdict))
    if verdict.warning:
        world.note(f"{app} {version} about {share:.0%}: {verdict.warning}")
    if not verdict.passed:
        raise ExpectationFailed(verdict.describe() + "\n" + render_table(verdict))


def split(world: World, app: str, shares: dict[str, float]) -> None:
    responses = _need(world)
    counts = Counter(version_of(r, app) for r in responses)
    verdict = multinomial_check(dict(counts), shares, alpha=world.alpha)
    world.attach(f"distribution across {app} versions", render_table(verdict))
    if verdict.warning:
        world.note(f"split of {app} versions: {verdict.warning}")
    if not verdict.passed:
        raise ExpectationFailed(verdict.describe() + "\n" + render_table(verdict))
