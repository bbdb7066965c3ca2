"""What clients saw: statuses, JSON content, headers, and which version answered."""

from meshlib.dsl import responses
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


@then("every response has status {status:d}")
def every_status(context, status):
    """All responses of the last batch have this HTTP status (exact, no statistics).

    Example: Then every response has status 200
    """
    responses.every_status(world(context), status)


@then('no response contains "{expr:Quoted}"')
def none_contain(context, expr):
    """No response body has a match for the JSONPath.

    Example: Then no response contains "$[*].imageUrl"
    """
    responses.none_contain(world(context), expr)


@then("no client sees {field:Name}")
def no_client_sees(context, field):
    """No response body has the field anywhere (JSONPath `$..FIELD`).

    Example: Then no client sees imageUrl
    """
    responses.none_contain(world(context), f"$..{field}")


@then('every response contains "{expr:Quoted}"')
def all_contain(context, expr):
    """Every response body has a match for the JSONPath.

    Example: Then every response contains "$[*].imageUrl"
    """
    responses.all_contain(world(context), expr)


@then('{count:d} responses contain "{expr:Quoted}"')
def count_contain(context, count, expr):
    """Exactly N response bodies have a match for the JSONPath.

    Example: Then 0 responses contain "$[*].imageUrl"
    """
    responses.exactly_contain(world(context), count, expr)


@then('every response has "{expr:Quoted}" equal to "{value:Quoted}"')
def all_equal(context, expr, value):
    """Every match of the JSONPath in every response equals the value.

    Example: Then every response has "$[0].name" equal to "Elinor Glasses"
    """
    responses.all_equal(world(context), expr, value)


@then('every response body contains "{text:Quoted}"')
def body_contains(context, text):
    """Every response body contains the text.

    Example: Then every response body contains "error calling Forum service"
    """
    responses.all_bodies_contain(world(context), text)


@then('every response has the header "{name:HeaderName}"')
def has_header(context, name):
    """Every response carries the header.

    Example: Then every response has the header "x-envoy-upstream-service-time"
    """
    responses.all_have_header(world(context), name)


@then('every response has the header "{name:HeaderName}" equal to "{value:Quoted}"')
def header_equal(context, name, value):
    """Every response carries the header with exactly this value.

    Example: Then every response has the header "content-type" equal to "application/json"
    """
    responses.all_have_header(world(context), name, value)


@then("no request was retried")
def none_retried(context):
    """No request of the last batch needed a retry at any hop (from the request ledger: Envoy's try numbers).

    Example: Then no request was retried
    """
    responses.at_most_retried(world(context), 0.0)


@then("at most {share:Percent} of requests were retried")
def few_retried(context, share):
    """At most this share of the last batch's requests needed a retry at some hop.

    Example: Then at most 1% of requests were retried
    """
    responses.at_most_retried(world(context), share)


@then("every response comes from {app:Name} {version:Name}")
def every_from(context, app, version):
    """Every request was served by pods of APP with label version=VERSION (mirrored copies do not count).

    Example: Then every response comes from catalog v1
    """
    responses.every_response_from(world(context), app, version)


restore()
