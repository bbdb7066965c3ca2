"""Sending traffic: through the ingress gateway, from inside the mesh, for a while, or in the background."""

from urllib.parse import urlsplit

from meshlib.dsl import distribution, sending
from meshlib.dsl.types import parse_percent
from meshlib.expect import fail
from meshlib.steps._matcher import cfparse, given, restore, when, world

cfparse()


def _split(url):
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _default(context):
    target = getattr(context, "client_url", None)
    if not target:
        raise fail("a client URL", "none was set (add: Given clients call http://HOST/PATH through the ingress "
                                   "gateway)")
    return _split(target)


@given("clients call {url:Name} through the ingress gateway")
def clients_call(context, url):
    """Set the host and path that later "requests are sent" steps use, as external clients would call it.

    Example: Given clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    """
    context.client_url = url


@given('requests carry the header "{name:HeaderName}: {value:Quoted}"')
def carry_header(context, name, value):
    """Add a header to every request sent from now on in this scenario.

    Example: Given requests carry the header "x-istio-cohort: internal"
    """
    world(context).headers[name] = value


@given("requests carry no extra headers")
def no_headers(context):
    """Forget the headers set by earlier steps.

    Example: Given requests carry no extra headers
    """
    world(context).headers.clear()


@given("requests are sent {count:d} at a time")
def concurrency(context, count):
    """How many requests are in flight at once (default 8).

    Example: Given requests are sent 32 at a time
    """
    sending.set_concurrency(world(context), count)


@when("{count:d} requests are sent")
def send_default(context, count):
    """Send N requests to the client URL through the ingress gateway.

    Example: When 100 requests are sent
    """
    host, path = _default(context)
    sending.through_gateway(world(context), count, path, host)


@when("{count:d} requests are sent to {path:Name}")
def send_path(context, count, path):
    """Send N requests to another path on the client URL's host, through the ingress gateway.

    Example: When 10 requests are sent to /api/users
    """
    host, _ = _default(context)
    sending.through_gateway(world(context), count, path, host)


@when("{count:d} requests are sent to {url:Name} through the ingress gateway")
def send_url(context, count, url):
    """Send N requests for a host and path through the ingress gateway.

    Example: When 20 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    """
    host, path = _split(url)
    sending.through_gateway(world(context), count, path, host)


@when("{count:d} {method:Method} requests are sent to {path:Name} with the body:")
def send_with_body(context, count, method, path):
    """Send N requests with a method and the step's doc string as body, to a path on the client URL's host.

    Example: When 3 POST requests are sent to /api/catalog/items with the body: (followed by a \"\"\" JSON block)
    """
    host, _ = _default(context)
    sending.through_gateway(world(context), count, path, host, method=method, body=context.text or "")


@when("{count:d} requests are sent from {workload:Name} to {url:Name}")
def send_from(context, count, workload, url):
    """Send N requests from inside the mesh, through a workload's own sidecar.

    Example: When 50 requests are sent from webapp to http://catalog.istioinaction/items
    """
    sending.from_workload(world(context), count, workload, url)


@when("requests are sent for {seconds:Duration} at {rate:d} per second")
def send_for(context, seconds, rate):
    """Send to the client URL at a steady rate for a bounded time.

    Example: When requests are sent for 2s at 50 per second
    """
    host, path = _default(context)
    sending.for_duration(world(context), seconds, path, host, rate)


@when("requests are sent until it is decided whether about {share:Percent} of responses come from {app:Name} "
      "{version:Name}")
def send_until_share_decided(context, share, app, version):
    """Send batches to the client URL until a sequential test decides the share (alpha of the run, power 0.99
    against a 10-point misroute, at most three times the requests of a fixed-size check); the next "about ... of
    responses come from" step for the same claim passes or fails on that decision.

    Example: When requests are sent until it is decided whether about 10% of responses come from catalog v2
    """
    host, path = _default(context)
    distribution.decide_share(world(context), share, app, version, host, path)


@when("requests are sent until it is decided whether responses split between {app:Name} versions as:")
def send_until_split_decided(context, app):
    """Send batches to the client URL until a sequential test decides the split (table columns: version, share);
    the next "responses split between ... versions as:" step with the same table passes or fails on that decision.

    Example: When requests are sent until it is decided whether responses split between catalog versions as: (followed by a table: | version | share | with rows | v1 | 50% | and | v2 | 50% |)
    """
    host, path = _default(context)
    shares = {row["version"]: parse_percent(row["share"]) for row in context.table}
    distribution.decide_split(world(context), app, shares, host, path)


@given("background traffic of {rate:d} requests per second")
def background(context, rate):
    """Keep traffic flowing to the client URL while the next steps run (stopped at the end of the scenario).

    Example: Given background traffic of 20 requests per second
    """
    host, path = _default(context)
    sending.start_background(world(context), rate, path, host)


@when("the background traffic stops")
def background_stops(context):
    """Stop the background traffic; its responses become the ones later checks look at.

    Example: When the background traffic stops
    """
    sending.stop_background(world(context))


restore()
