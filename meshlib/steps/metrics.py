"""Metrics: PromQL on the mesh's Prometheus, and builtin checks on the sidecars' own counters.

PromQL steps fail with "needs Prometheus" where it is missing; tag such scenarios `@needs.prometheus` to have
them skipped there instead. Builtin checks count from the moment the last batch of traffic started.
"""


from meshlib.dsl import metrics
from meshlib.steps._matcher import cfparse, given, restore, then, world

cfparse()


def _doc_string(context):
    text = (context.text or "").strip()
    if not text:
        raise ValueError('write the PromQL in a doc string under the step (between """ lines)')
    return text


@then("the PromQL `{query:Query}` is at least {bound:g}")
def promql_at_least(context, query, bound):
    """Run the PromQL on Prometheus (after a fresh scrape of every proxy); its one value is at least the bound.
    No series, or NaN, fails (Flagger's "no values found").

    Example: Then the PromQL `sum(istio_requests_total{destination_workload="catalog"})` is at least 50
    """
    metrics.promql_at_least(world(context), query, bound)


@then("the PromQL `{query:Query}` is at most {bound:g}")
def promql_at_most(context, query, bound):
    """Run the PromQL on Prometheus (after a fresh scrape of every proxy); its one value is at most the bound.

    Example: Then the PromQL `sum(istio_requests_total{response_code=~"5.*"}) or vector(0)` is at most 0
    """
    metrics.promql_at_most(world(context), query, bound)


@then("the PromQL query is at least {bound:g}")
def promql_text_at_least(context, bound):
    """Like the one-line form, with the PromQL in the step's doc string (for long queries such as Flagger's).

    Example: Then the PromQL query is at least 99 (followed by a \"\"\" block with the query)
    """
    metrics.promql_at_least(world(context), _doc_string(context), bound)


@then("the PromQL query is at most {bound:g}")
def promql_text_at_most(context, bound):
    """Like the one-line form, with the PromQL in the step's doc string.

    Example: Then the PromQL query is at most 500 (followed by a \"\"\" block with the query)
    """
    metrics.promql_at_most(world(context), _doc_string(context), bound)


@given("Prometheus is scraping every proxy")
def prometheus_scrapes(context):
    """Wait (bounded) until Prometheus scrapes every sidecar, so rate() queries see the traffic sent next.

    Example: Given Prometheus is scraping every proxy
    """
    metrics.prometheus_scrapes_every_proxy(world(context))


@then("istio_requests_total for {label:Name} {value:Name} grew by at least {count:d}")
def requests_grew(context, label, value, count):
    """Requests counted where they were served (reporter=destination) with this label value grew by at least N
    since the last batch started: through PromQL when Prometheus runs, else from the sidecars' counters.

    Example: Then istio_requests_total for destination_version v2 grew by at least 90
    """
    metrics.requests_grew(world(context), label, value, count)


@then("{workload:Name} received {count:d} requests")
def received(context, workload, count):
    """The workload's sidecars counted exactly N inbound requests since the last batch started
    (mirrored copies included).

    Example: Then catalog-v2 received 100 requests
    """
    metrics.received(world(context), workload, count)


@then("the success rate of {workload:Name} is at least {share:Percent}")
def success_at_least(context, workload, share):
    """Flagger's request-success-rate since the last batch started: requests the workload answered with
    anything but a 5xx, out of all it received (destination side); no requests at all fails.

    Example: Then the success rate of catalog is at least 99%
    """
    metrics.success_rate_at_least(world(context), workload, share)


@then("the success rate of {workload:Name} is below {share:Percent}")
def success_below(context, workload, share):
    """Flagger's request-success-rate since the last batch started is below the share (a check that would fail).

    Example: Then the success rate of catalog-v2 is below 99%
    """
    metrics.success_rate_below(world(context), workload, share)


@then("the p{quantile:d} latency of {workload:Name} is at most {limit:Duration}")
def latency(context, quantile, workload, limit):
    """The quantile of the workload's request durations since the last batch started, from Istio's duration
    histogram as Flagger's request-duration computes it (destination side).

    Example: Then the p99 latency of catalog is at most 500 ms
    """
    metrics.latency_at_most(world(context), workload, quantile / 100, limit * 1000)


restore()
