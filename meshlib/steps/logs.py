"""Container logs and sidecar access logs, counted since the last batch of traffic started."""

from meshlib.dsl import logs
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


@then("the {app:Name} {version:Name} logs show {count:d} mirrored requests")
def mirrored(context, app, version, count):
    """The app's log has N requests whose Host carries Envoy's `-shadow` suffix (Istio ≤ 1.27).

    Example: Then the catalog v2 logs show 100 mirrored requests
    """
    logs.logs_show(world(context), app, version, count, "-shadow")


@then('the {app:Name} {version:Name} logs show {count:d} lines with "{text:Quoted}"')
def count_lines(context, app, version, count, text):
    """Exactly N lines of the app container's log contain the text.

    Example: Then the catalog v2 logs show 100 lines with "GET catalog.istioinaction:80 /items"
    """
    logs.logs_show(world(context), app, version, count, text)


@then('the {app:Name} {version:Name} logs show "{text:Quoted}"')
def show(context, app, version, text):
    """At least one line of the app container's log contains the text.

    Example: Then the catalog v2 logs show "-shadow"
    """
    logs.logs_show_some(world(context), app, version, text)


@then('the {app:Name} {version:Name} logs show no "{text:Quoted}"')
def show_none(context, app, version, text):
    """No line of the app container's log contains the text.

    Example: Then the catalog v2 logs show no "-shadow"
    """
    logs.logs_show_none(world(context), app, version, text)


@then('the {app:Name} sidecar\'s access log shows {count:d} lines with "{text:Quoted}"')
def access_log_count(context, app, count, text):
    """Exactly N lines of the app's sidecar access log since the last batch contain the text.

    Example: Then the forum sidecar's access log shows 5 lines with "block_all"
    """
    logs.access_log_shows(world(context), app, text, count)


@then('the {app:Name} sidecar\'s access log shows "{text:Quoted}"')
def access_log(context, app, text):
    """The app's sidecar (istio-proxy) access log has a line with the text: flags, route names, clusters.

    Example: Then the forum sidecar's access log shows "block_all"
    """
    logs.access_log_shows(world(context), app, text)


restore()
