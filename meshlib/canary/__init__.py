"""Flagger's canary analysis with the Istio provider, as pure functions and a clock-injected state machine.

- `spec`: the Canary resource with Flagger's defaults, and the pod-template hash that triggers an analysis;
- `objects`: the Deployments, Services, DestinationRules and VirtualService Flagger generates;
- `metrics`: builtin Istio queries, MetricTemplate rendering, threshold checks and their messages;
- `controller`: `CanaryController.tick(now, observation, metrics)`, one run of Flagger's analysis loop.
"""

from meshlib.canary.controller import (
    CanaryController,
    CanaryStatus,
    Condition,
    Event,
    HistoryPoint,
    Observation,
    Phase,
    TickResult,
    observe,
)
from meshlib.canary.metrics import BUILTIN_QUERIES, MetricProvider, MetricQueryError, render_query
from meshlib.canary.objects import Routes, generated_objects, owned_by, routes_of, to_yaml, virtual_service
from meshlib.canary.spec import Canary, CanaryError, template_hash

__all__ = [
    "BUILTIN_QUERIES", "Canary", "CanaryController", "CanaryError", "CanaryStatus", "Condition", "Event",
    "HistoryPoint", "MetricProvider", "MetricQueryError", "Observation", "Phase", "Routes", "TickResult",
    "generated_objects", "observe", "owned_by", "render_query", "routes_of", "template_hash", "to_yaml",
    "virtual_service",
]
