"""Analysis gates over everything applied so far."""

from meshlib.dsl import analysis
from meshlib.steps._matcher import cfparse, restore, then, world

cfparse()


@then("the manifests have no analysis errors")
def no_errors(context):
    """`meshlib analyze` over the applied resources finds no errors (warnings are attached as evidence).

    Example: Then the manifests have no analysis errors
    """
    analysis.no_errors(world(context))


restore()
