"""behave adapters over meshlib.dsl: thin wrappers whose docstrings make the step catalog.

Use in a project: a `steps/meshlib_steps.py` containing `from meshlib.steps.all import *  # noqa`.
"""
