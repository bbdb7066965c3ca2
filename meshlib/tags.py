"""What a scenario's tags ask of the run, independent of behave or pytest.

- `@istio.version=1.28` pins the scenario (or feature) to that Istio profile.
- `@istio.version>=1.28`, `>1.27`, `<1.28`, `<=1.27`, `!=1.22` gate it: it runs only when the profile it would
  run on satisfies every such tag, and is skipped with the reason otherwise.
- `@shared.mesh` on a feature lets its scenarios share one mesh (faster, at the price of isolation); without it
  every scenario starts from its Background on a mesh of its own.

`-D scenario_order=reverse|shuffle|shuffle:SEED` reorders the scenarios of each feature, which shows whether
they depend on one another.
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from meshlib.errors import InputError, MeshlibError
from meshlib.profile import profile_for

VERSION_TAG = "istio.version"
SHARED_MESH = "shared.mesh"
_GATE = re.compile(rf"{re.escape(VERSION_TAG)}(>=|<=|!=|=|>|<)(.+)")
_COMPARE: dict[str, Callable[[tuple[int, int], tuple[int, int]], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt, "<": operator.lt}

T = TypeVar("T")


def _minor(version: str, tag: str) -> tuple[int, int]:
    try:
        major, minor = profile_for(version).version.split(".")
    except MeshlibError as exc:  # the profile's own one-line error, with the tag that carried it
        raise InputError(f"tag @{tag}: {exc}") from None
    return int(major), int(minor)


def _version_tags(tags: Sequence[str]) -> list[tuple[str, str, str]]:
    return [(t, m.group(1), m.group(2)) for t in tags if (m := _GATE.fullmatch(t))]


def pinned_version(tags: Sequence[str], default: str | None) -> str | None:
    """The profile the tags pin (`@istio.version=X`; the innermost, i.e. the last, wins), else `default`."""
    pins = [v for _, op, v in _version_tags(tags) if op == "="]
    return pins[-1] if pins else default


def version_gate(tags: Sequence[str], version: str | None) -> str | None:
    """None when the scenario runs on `version` (None: the default profile); else why it is skipped."""
    run = profile_for(version).version
    have = _minor(run, "istio.version")
    for tag, op, wanted in _version_tags(tags):
        if op != "=" and not _COMPARE[op](have, _minor(wanted, tag)):
            return f"needs Istio {op} {wanted} (@{tag}); this run's profile is {run}"
    return None


def order(items: Sequence[T], how: str | None) -> list[T]:
    """`items` in the order `-D scenario_order` asks for: as written (default), reversed, or shuffled."""
    if not how or how == "as-written":
        return list(items)
    if how == "reverse":
        return list(reversed(items))
    if how.startswith("shuffle:") and how.partition(":")[2].isdigit():
        shuffled = list(items)
        random.Random(int(how.partition(":")[2])).shuffle(shuffled)
        return shuffled
    raise InputError(f"-D scenario_order={how!r}: use as-written, reverse, shuffle or shuffle:SEED")


def with_seed(how: str | None) -> str | None:
    """A bare `shuffle` gets a seed drawn now, so the run can say it and be repeated."""
    return f"shuffle:{random.SystemRandom().randrange(10**6)}" if how == "shuffle" else how


__all__ = ["SHARED_MESH", "VERSION_TAG", "order", "pinned_version", "version_gate", "with_seed"]
