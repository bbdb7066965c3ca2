"""Traffic splits, with stated confidence (exact binomial and exact multinomial tests at the run's alpha)."""

from meshlib.dsl import distribution
from meshlib.dsl.types import parse_percent
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


@then("about {share:Percent} of responses come from {app:Name} {version:Name}")
def about_share(context, share, app, version):
    """Exact two-sided binomial test of the claimed share at alpha (default 0.01, `-D alpha=`); warns when the
    sample cannot tell the claim from a 10-point misroute. After "requests are sent until it is decided whether
    about ..." it reports that sequential decision instead.

    Example: Then about 10% of responses come from catalog v2
    """
    distribution.about_share(world(context), share, app, version)


@then("responses split between {app:Name} versions as:")
def split(context, app):
    """Exact multinomial test of the split across versions at alpha (table columns: version, share); after
    "requests are sent until it is decided whether responses split ..." it reports that sequential decision.

    Example: Then responses split between catalog versions as: (followed by a table: | version | share | with rows | v1 | 50% | and | v2 | 50% |)
    """
    shares = {row["version"]: parse_percent(row["share"]) for row in context.table}
    distribution.split(world(context), app, shares)


restore()
