"""Envoy config and route prediction, read from the running proxies (no traffic needed)."""

from urllib.parse import urlsplit

from meshlib.dsl import envoy
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


def _split(url):
    """Host with its port (a service on 9080 is routed by route config `9080`), and path with its query."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.netloc, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@then("the {proxy:Proxy}'s route for {host:Name} goes to subset {subset:Name}")
def route_subset(context, proxy, host, subset):
    """The proxy's route table sends the host to exactly this DestinationRule subset.

    Example: Then the ingress gateway's route for catalog.istioinaction.io goes to subset version-v1
    """
    envoy.route_goes_to(world(context), proxy, host, "/", {}, subset)


@then('the {proxy:Proxy}\'s route for {host:Name} with header "{name:HeaderName}: {value:Quoted}" goes to subset {subset:Name}')
def route_subset_header(context, proxy, host, name, value, subset):
    """Like the step above, for a request that carries the header.

    Example: Then the ingress gateway's route for catalog.istioinaction.io with header "x-istio-cohort: internal" goes to subset version-v2
    """
    envoy.route_goes_to(world(context), proxy, host, "/", {name: value}, subset)


@then("a request for {url:Name} at the {proxy:Proxy} would reach {app:Name} {version:Name}")
def would_reach(context, url, proxy, app, version):
    """Route prediction with the same router the proxies run: which version the route's endpoints belong to.

    Example: Then a request for http://catalog.istioinaction/items at the webapp sidecar would reach catalog v1
    """
    host, path = _split(url)
    envoy.would_reach(world(context), proxy, host, path, dict(world(context).headers), version, app)


@then("every request to {app:Name} went where the routes predicted")
def matches_prediction(context, app):
    """Request by request (by x-request-id), the version that served it is one its caller's route allows.

    Example: Then every request to catalog went where the routes predicted
    """
    envoy.observed_matches_prediction(world(context), app)


@then('the config dump of the {proxy:Proxy} contains "{expr:Quoted}"')
def dump_has(context, proxy, expr):
    """A JSONPath over the proxy's Envoy config_dump (snake_case) matches something.

    Example: Then the config dump of the webapp sidecar contains "$..route_config[?name == '80']"
    """
    envoy.config_dump_has(world(context), proxy, expr)


@then('in the config dump of the {proxy:Proxy}, "{expr:Quoted}" is "{value:Quoted}"')
def dump_equal(context, proxy, expr, value):
    """The first JSONPath match in the proxy's config_dump equals the value.

    Example: Then in the config dump of the ingress gateway, "$..virtual_hosts[0].name" is "catalog.istioinaction.io:80"
    """
    envoy.config_dump_has(world(context), proxy, expr, value)


restore()
