"""behave adapters over meshlib.dsl: thin wrappers whose docstrings make the step catalog.

Use in a project: a `steps/meshlib_steps.py` containing `from meshlib.steps.all import *  # noqa`.
A project's own steps register with `from meshlib.steps import given, when, then, world`, so a meshlib
error in them fails the step with its one-line message rather than a traceback.
"""

from meshlib.steps._matcher import given, then, when, world

__all__ = ["given", "then", "when", "world"]
