"""Flagger canaries: wait for a phase, check phases, weights, the Flagger log and what clients saw."""

from meshlib.dsl import canary
from meshlib.steps._matcher import cfparse, restore, then, when, world

cfparse()


@when("the canary {name:Name} reaches {phase:Name}")
def reaches(context, name, phase):
    """Wait until an analysis tick leaves the Canary in this phase (bounded: twice its whole scaled schedule).

    Fails at once if it ends in another final phase; attaches the per-tick table, the weights chart (SVG),
    the metric queries and the Flagger log.
    Example: When the canary catalog-release reaches Succeeded
    """
    canary.wait_for_phase(world(context), name, phase)


@then("the canary {name:Name} is {phase:Name}")
def is_phase(context, name, phase):
    """The Canary's status.phase now (Initialized, Progressing, Promoting, Succeeded, Failed…).

    Example: Then the canary catalog-release is Failed
    """
    canary.is_phase(world(context), name, phase)


@then("the canary {name:Name} has weight {weight:d}")
def has_weight(context, name, weight):
    """The Canary's status.canaryWeight now (the share of matched traffic the canary gets, in percent).

    Example: Then the canary catalog-release has weight 0
    """
    canary.has_weight(world(context), name, weight)


@then("the canary weight of {name:Name} climbed {weights:List}")
def climbed(context, name, weights):
    """The weights the analysis set, in order (repeats and 0 left out), are exactly these.

    Example: Then the canary weight of catalog-release climbed 10, 20, 30, 40, 50
    """
    canary.climbed(world(context), name, canary.parse_weights(weights))


@then("the canary {name:Name} went through the phases {phases:List}")
def went_through(context, name, phases):
    """These phases came in this order (others may come between them).

    Example: Then the canary catalog-release went through the phases Progressing, Promoting, Finalising, Succeeded
    """
    canary.went_through(world(context), name, canary.items(phases))


@then('the Flagger log of {name:Name} shows "{text:Quoted}"')
def log_shows(context, name, text):
    """A line of Flagger's log about this canary contains the text (`kubectl logs deploy/flagger -n istio-system`).

    Example: Then the Flagger log of catalog-release shows "Canary failed! Scaling down"
    """
    canary.log_shows(world(context), name, text)


@then("at most {share:Percent} of the background requests failed")
def at_most_failed(context, share):
    """Of the background traffic's requests (so far, or of the traffic that stopped last), at most this share got
    no response or a 5xx.

    Example: Then at most 10% of the background requests failed
    """
    canary.at_most_failed(world(context), share)


restore()
