"""Egress control: calls from a workload to hosts outside the mesh."""

from meshlib.dsl import egress
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


@then("calls from {workload:Name} to {host:Name} are blocked with {status:d}")
def blocked(context, workload, host, status):
    """A call from the workload's sidecar to the external host gets this status (502 block_all under
    REGISTRY_ONLY).

    Example: Then calls from forum to jsonplaceholder.typicode.com are blocked with 502
    """
    egress.blocked(world(context), workload, host, status)


@then("calls from {workload:Name} to {host:Name} get through")
def allowed(context, workload, host):
    """A call from the workload's sidecar to the external host reaches it (ALLOW_ANY or a ServiceEntry).

    Example: Then calls from forum to jsonplaceholder.typicode.com get through
    """
    egress.allowed(world(context), workload, host)


restore()
