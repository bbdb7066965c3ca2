"""Step pattern language and registration for meshlib's behave steps.

Patterns use cfparse with meshlib's types (shared with the pytest-bdd adapter). Steps register through
`given`/`when`/`then` from here, not behave's: a meshlib error (bad input, a mesh that would not start) then
fails the step with its one-line message instead of a Python traceback. Any other exception is a bug in
meshlib or in a project's step and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from meshlib.errors import MeshlibError, MissingExtra

try:
    import behave
    from behave import register_type, use_step_matcher
    from behave.runner import Context
except ModuleNotFoundError as exc:
    raise MissingExtra("meshlib.steps", exc.name, "behave") from None

from meshlib.dsl.types import TYPES
from meshlib.dsl.world import World

register_type(**TYPES)

StepFunc = Callable[..., Any]


class StepNotRun(AssertionError):
    """The step could not do what it says (bad input, or the mesh could not); not a failed release check."""


def _clean_errors(func: StepFunc) -> StepFunc:
    @functools.wraps(func)
    def step(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeshlibError as exc:
            raise StepNotRun(f"could not run the step: {exc}") from None
    return step


def _register(keyword: Callable[[str], Callable[[StepFunc], StepFunc]]) -> Callable[[str], Callable[[StepFunc],
                                                                                             StepFunc]]:
    def decorator_for(pattern: str) -> Callable[[StepFunc], StepFunc]:
        def register(func: StepFunc) -> StepFunc:
            keyword(pattern)(_clean_errors(func))
            return func
        return register
    return decorator_for


given = _register(behave.given)
when = _register(behave.when)
then = _register(behave.then)


def cfparse() -> None:
    use_step_matcher("cfparse")


def restore() -> None:
    use_step_matcher("parse")


def world(context: Context) -> World:
    w = getattr(context, "world", None)
    if w is None:
        raise RuntimeError("no meshlib world: is meshlib.steps.environment wired into environment.py?")
    return w
