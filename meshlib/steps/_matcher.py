"""Step pattern language: cfparse with meshlib's types (shared with the pytest-bdd adapter)."""

from __future__ import annotations

from behave import register_type, use_step_matcher
from behave.runner import Context

from meshlib.dsl.types import TYPES
from meshlib.dsl.world import World

register_type(**TYPES)


def cfparse() -> None:
    use_step_matcher("cfparse")


def restore() -> None:
    use_step_matcher("parse")


def world(context: Context) -> World:
    w = getattr(context, "world", None)
    if w is None:
        raise RuntimeError("no meshlib world: is meshlib.steps.environment wired into environment.py?")
    return w
