"""Route selection (pure): the decision a proxy makes for a request, from its translated config."""

from meshlib.router.decision import Decision, FaultDecision, MirrorDecision
from meshlib.router.request import Request
from meshlib.router.select import select_route

__all__ = ["Decision", "FaultDecision", "MirrorDecision", "Request", "select_route"]
