"""The meshlib step library; project-only steps live beside this file."""

from meshlib.steps.all import *  # noqa: F403
