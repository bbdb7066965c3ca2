"""Which cluster a run may touch: a kubeconfig context (or the pod's in-cluster account) named in an allowlist.

`-D context=NAME` picks the context (default: the kubeconfig's current one); `-D allowed_contexts=A,B` lists the
contexts a run may use. A context outside the list is refused before any request is sent, so a suite pointed at
the wrong kubeconfig stops at once instead of applying manifests to production. `in-cluster` names the service
account of the pod the run is in, and must be allowed like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshlib.errors import MeshlibError, MissingExtra

try:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
except ModuleNotFoundError as exc:
    raise MissingExtra("the kubernetes backend", exc.name, "kubernetes") from None

IN_CLUSTER = "in-cluster"


@dataclass(frozen=True)
class Target:
    """The chosen context and the API server it points at."""

    context: str
    server: str
    api: client.ApiClient


def parse_allowlist(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def connect(context: str | None, allowed: tuple[str, ...], kubeconfig: str | Path | None = None) -> Target:
    """An API client for `context` if the allowlist names it; MeshlibError (one line) otherwise."""
    if not allowed:
        raise MeshlibError("the kubernetes backend needs an allowlist of contexts it may touch: "
                           "-D allowed_contexts=CONTEXT[,CONTEXT…] (for example kind-meshlib)")
    if context == IN_CLUSTER:
        _require(IN_CLUSTER, allowed)
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise MeshlibError(f"context in-cluster: not running in a pod with a service account ({exc})") from None
        return Target(IN_CLUSTER, configuration.host, client.ApiClient(configuration))
    file = str(kubeconfig) if kubeconfig else None
    try:
        contexts, current = config.list_kube_config_contexts(config_file=file)
    except (ConfigException, OSError) as exc:
        raise MeshlibError(f"cannot read the kubeconfig {file or '(KUBECONFIG or ~/.kube/config)'}: {exc}") from None
    names = [c["name"] for c in contexts]
    chosen = context or (current or {}).get("name")
    if not chosen:
        raise MeshlibError("the kubeconfig has no current context: name one with -D context=NAME")
    if chosen not in names:
        raise MeshlibError(f"the kubeconfig has no context {chosen!r}; it has: {', '.join(names) or 'none'}")
    _require(chosen, allowed)
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=file, context=chosen, client_configuration=configuration,
                                persist_config=False)
    except (ConfigException, OSError) as exc:
        raise MeshlibError(f"context {chosen!r}: cannot load its credentials: {exc}") from None
    return Target(chosen, configuration.host, client.ApiClient(configuration))


def _require(context: str, allowed: tuple[str, ...]) -> None:
    if context not in allowed:
        raise MeshlibError(f"context {context!r} is not in the allowlist ({', '.join(allowed)}): the run touches "
                           f"no cluster it was not told it may; add it with -D allowed_contexts=…,{context} only if "
                           "it is a test cluster")
