"""behave hooks for this project: meshlib's (one mesh per feature, evidence, clean teardown)."""

from meshlib.steps.environment import *  # noqa: F403
