"""Resilience: how requests spread over pods, and the retries, circuit breaking and ejections Envoy counted."""

from meshlib.dsl import resilience
from meshlib.steps._matcher import cfparse, given, restore, then, world

cfparse()


@given('requests name one of the users {users:List} in the header "{name:HeaderName}"')
def rotate_users(context, users, name):
    """Requests carry a header whose value goes round a list of users, one request after another.

    Example: Given requests name one of the users alice, bob, carol and dave in the header "x-user"
    """
    values = tuple(u.strip() for u in users.replace(" and ", ",").split(",") if u.strip())
    world(context).rotate = (name, values)


@then("the requests to {app:Name} were spread evenly over its {count:d} pods")
def spread_evenly(context, app, count):
    """Round robin: each pod served as many requests as the others, give or take one.

    Example: Then the requests to simple-backend were spread evenly over its 3 pods
    """
    resilience.spread_evenly(world(context), app, count)


@then('the requests with the same "{header:HeaderName}" stayed on one {app:Name} pod')
def sticky(context, header, app):
    """Consistent hashing: every request carrying one value of the header went to the same pod.

    Example: Then the requests with the same "x-user" stayed on one simple-web pod
    """
    resilience.sticky(world(context), header, app)


@then("at least {count:d} responses have status {status:d}")
def at_least_status(context, count, status):
    """Some of the last batch's responses had this status (the others may have any).

    Example: Then at least 1 responses have status 500
    """
    resilience.at_least_status(world(context), count, status)


@then("the {caller:Name} sidecar retried requests to {service:Name}")
def retried(context, caller, service):
    """The caller's Envoy counted retries (upstream_rq_retry) on its clusters for the service.

    Example: Then the simple-web sidecar retried requests to simple-backend
    """
    resilience.retried(world(context), caller, service)


@then("the {caller:Name} sidecar retried no request to {service:Name}")
def not_retried(context, caller, service):
    """The caller's Envoy counted no retry on any of its clusters for the service.

    Example: Then the webapp sidecar retried no request to catalog
    """
    resilience.retried(world(context), caller, service, some=False)


@then("the {caller:Name} sidecar's circuit breaker for {service:Name} tripped")
def overflowed(context, caller, service):
    """The caller's Envoy refused requests over the connection-pool limits (pending, connection or retry overflow).

    Example: Then the simple-web sidecar's circuit breaker for simple-backend tripped
    """
    resilience.overflowed(world(context), caller, service)


@then("the {caller:Name} sidecar has no healthy {service:Name} pod left")
def none_healthy(context, caller, service):
    """Every endpoint of the service is out of the caller's load balancing (ejected): Envoy answers 503 UH.

    Example: Then the simple-web sidecar has no healthy simple-backend pod left
    """
    resilience.none_healthy(world(context), caller, service)


@then("the {caller:Name} sidecar ejected a {service:Name} pod")
def ejected(context, caller, service):
    """The caller's outlier detection ejected at least one endpoint of the service.

    Example: Then the simple-web sidecar ejected a simple-backend pod
    """
    resilience.ejected(world(context), caller, service)


restore()
