"""Version gates and scenario order: what the tags ask of a run (meshlib.tags, shared by behave and pytest)."""

from __future__ import annotations

import pytest

from meshlib.errors import InputError
from meshlib.tags import order, pinned_version, version_gate, with_seed


@pytest.mark.parametrize(("tags", "version", "skipped"), [
    (["istio.version>=1.28"], "1.28", None),
    (["istio.version>=1.28"], "1.27", "needs Istio >= 1.28 (@istio.version>=1.28); this run's profile is 1.27"),
    (["istio.version<1.28"], None, None),  # the default profile is the book's 1.17
    (["istio.version<1.28"], "1.28.2", "needs Istio < 1.28 (@istio.version<1.28); this run's profile is 1.28"),
    (["istio.version<=1.27", "istio.version>1.20"], "1.24", None),
    (["istio.version<=1.27", "istio.version>1.20"], "1.19", "needs Istio > 1.20"),
    (["istio.version!=1.22", "critical"], "1.22", "needs Istio != 1.22"),
    (["istio.version=1.28"], "1.17", None),  # a pin is not a gate: the scenario runs on 1.28
])
def test_version_gates_skip_with_the_reason(tags: list[str], version: str | None, skipped: str | None) -> None:
    reason = version_gate(tags, version)
    assert (reason is None) == (skipped is None) and (skipped is None or reason.startswith(skipped)), reason


def test_a_pin_sets_the_profile_and_the_innermost_wins() -> None:
    assert pinned_version(["istio.version>=1.20"], "1.17") == "1.17"
    assert pinned_version(["istio.version=1.24", "istio.version=1.28"], None) == "1.28"


def test_a_gate_with_an_unknown_version_is_one_clear_error() -> None:
    with pytest.raises(InputError, match=r"tag @istio.version>=2.x: unknown Istio version"):
        version_gate(["istio.version>=2.x"], None)


def test_orders() -> None:
    items = list(range(6))
    assert order(items, None) == items and order(items, "reverse") == items[::-1]
    shuffled = order(items, "shuffle:7")
    assert sorted(shuffled) == items and shuffled != items and shuffled == order(items, "shuffle:7")
    assert with_seed("shuffle").startswith("shuffle:") and with_seed("reverse") == "reverse"
    with pytest.raises(InputError, match="use as-written, reverse, shuffle or shuffle:SEED"):
        order(items, "backwards")


def test_behave_reads_a_scenarios_tags_outermost_first() -> None:
    """behave's effective_tags is a set: the hook orders feature, rule, scenario tags so the innermost pin wins
    whatever the hash seed."""
    from behave.parser import parse_feature

    from meshlib.steps.environment import _ordered_tags

    feature = parse_feature("@istio.version=1.22\nFeature: f\n  Rule: r\n\n    @istio.version=1.28 @slow\n"
                            "    Scenario: s\n      Given a step\n")
    [scenario] = list(feature.walk_scenarios())
    tags = _ordered_tags(scenario)
    assert tags == ["istio.version=1.22", "istio.version=1.28", "slow"]
    assert pinned_version(tags, None) == "1.28"
