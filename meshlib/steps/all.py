"""Every meshlib step, for `from meshlib.steps.all import *` in a project's steps/ folder."""

from meshlib.steps import analysis, deploy, distribution, egress, envoy, logs, responses, traffic  # noqa: F401
