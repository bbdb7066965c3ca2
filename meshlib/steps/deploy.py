"""Deploying manifests and mesh settings."""

from meshlib.dsl import deploy
from meshlib.steps._matcher import cfparse, given, restore, world

cfparse()


@given('the manifest "{name:Quoted}" is applied')
def manifest_applied(context, name):
    """Apply one manifest file or folder (path relative to manifests/), like `kubectl apply -f`.

    Example: Given the manifest "ch5/catalog-dest-rule.yaml" is applied
    """
    deploy.apply_manifests(world(context), [name])


@given("these resources are applied:")
def resources_applied(context):
    """Apply the YAML in the step's doc string (one or more documents).

    Example: Given these resources are applied: (followed by a \"\"\" YAML block)
    """
    deploy.apply_yaml(world(context), context.text or "")


@given('the manifest "{name:Quoted}" is deleted')
def manifest_deleted(context, name):
    """Delete the resources a manifest defines, like `kubectl delete -f`.

    Example: Given the manifest "ch5/catalog-vs-v2-mirror.yaml" is deleted
    """
    deploy.delete_manifests(world(context), [name])


@given("all {kind:Name} resources are deleted")
def all_deleted(context, kind):
    """Delete every resource of a kind in the scenario's namespace (`kubectl delete KIND --all`).

    Example: Given all VirtualService resources are deleted
    """
    deploy.delete_all(world(context), kind)


@given("the mesh's outbound traffic policy is {mode:Name}")
def outbound_policy(context, mode):
    """Set meshConfig.outboundTrafficPolicy.mode to REGISTRY_ONLY or ALLOW_ANY (Istio's default).

    Example: Given the mesh's outbound traffic policy is REGISTRY_ONLY
    """
    deploy.set_outbound_policy(world(context), mode)


@given("access logging is on for {app:Name}")
def access_logging(context, app):
    """Turn on Envoy access logs for the sidecars of an app (a Telemetry resource selecting app=APP).

    Example: Given access logging is on for forum
    """
    deploy.enable_access_log(world(context), app)


restore()
