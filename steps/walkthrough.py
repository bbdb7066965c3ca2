"""Project-only steps: the walkthrough's services in its own words (Istio in Action, chapter 5)."""


from meshlib.dsl import deploy
from meshlib.steps import given, when, world

CATALOG_V1 = "services/catalog/kubernetes/catalog.yaml"
CATALOG_V2 = "services/catalog/kubernetes/catalog-deployment-v2.yaml"
WEBAPP = "services/webapp/kubernetes/webapp.yaml"
FORUM = "services/forum/kubernetes/forum-all.yaml"
FLAGGER_V2 = "ch5/flagger/catalog-deployment-v2.yaml"
FLAGGER_V2_BLOWUP = "ch5/flagger/catalog-deployment-v2-blowup.yaml"


@given("the catalog service runs v1")
def catalog_v1(context):
    """Deploy catalog v1 (ServiceAccount, Service 80→3000, Deployment version=v1).

    Example: Given the catalog service runs v1
    """
    deploy.apply_manifests(world(context), [CATALOG_V1])


@given("the catalog service runs v1 and v2")
def catalog_v1_v2(context):
    """Deploy catalog v1 and catalog-v2 (version=v2, SHOW_IMAGE: answers carry imageUrl).

    Example: Given the catalog service runs v1 and v2
    """
    deploy.apply_manifests(world(context), [CATALOG_V1, CATALOG_V2])


@given("the webapp is exposed through the ingress gateway")
def webapp_exposed(context):
    """Deploy webapp and route webapp.istioinaction.io to it at the ingress gateway (coolstore-gateway).

    Example: Given the webapp is exposed through the ingress gateway
    """
    deploy.apply_manifests(world(context), [WEBAPP, "ch5/webapp-catalog-gw-vs.yaml"])


@given("the forum service runs")
def forum(context):
    """Deploy the forum, which calls jsonplaceholder.typicode.com for its users.

    Example: Given the forum service runs
    """
    deploy.apply_manifests(world(context), [FORUM])


@given("catalog subsets are defined for v1 and v2")
def subsets(context):
    """Apply the DestinationRule with subsets version-v1 and version-v2.

    Example: Given catalog subsets are defined for v1 and v2
    """
    deploy.apply_manifests(world(context), ["ch5/catalog-dest-rule.yaml"])


@given("catalog v2 is mirrored")
def mirrored(context):
    """All catalog traffic goes to v1 and every request is mirrored to v2 (catalog-vs-v2-mirror.yaml).

    Example: Given catalog v2 is mirrored
    """
    deploy.apply_manifests(world(context), ["ch5/catalog-dest-rule.yaml", "ch5/catalog-vs-v2-mirror.yaml"])


@when("the new catalog version is deployed")
def new_catalog_version(context):
    """Update the catalog Deployment to the version that shows images (ch5/flagger/catalog-deployment-v2.yaml).

    Under a Canary this starts Flagger's analysis, as `kubectl apply -f` does in the walkthrough.
    Example: When the new catalog version is deployed
    """
    deploy.apply_manifests(world(context), [FLAGGER_V2])


@when("a catalog version that fails half of its requests is deployed")
def failing_catalog_version(context):
    """Update the catalog Deployment to a version whose /items answers 500 to half of the requests (the
    catalog's BLOWUP failure injection: ch5/flagger/catalog-deployment-v2-blowup.yaml).

    Example: When a catalog version that fails half of its requests is deployed
    """
    deploy.apply_manifests(world(context), [FLAGGER_V2_BLOWUP])
