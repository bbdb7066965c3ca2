"""Every meshlib step, for `from meshlib.steps.all import *` in a project's steps/ folder."""

from meshlib.steps import (  # noqa: F401
    analysis,
    canary,
    deploy,
    distribution,
    egress,
    envoy,
    logs,
    metrics,
    resilience,
    responses,
    traffic,
)
