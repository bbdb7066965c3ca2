"""The one place that talks to the Kubernetes API (official client): apply, delete, wait, read.

Every API failure becomes one `ClusterError` line that says what was asked, what the API server answered and what
to do: forbidden (403), an unknown kind (its CRD is not installed), a field another manager owns (server-side apply
conflict), an unreachable server. Nothing else in meshlib imports `kubernetes`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from urllib3.exceptions import HTTPError as TransportError

from meshlib.errors import MeshlibError

FIELD_MANAGER = "meshlib"
T = TypeVar("T")
CRD_HINTS = {"networking.istio.io": "install Istio (its base chart holds the CRDs)",
             "security.istio.io": "install Istio (its base chart holds the CRDs)",
             "telemetry.istio.io": "install Istio (its base chart holds the CRDs)",
             "flagger.app": "install Flagger (its chart holds the Canary CRD)"}


class ClusterError(MeshlibError):
    """The API server refused or could not be reached; the message is one line."""


class NotFound(ClusterError):
    """The object asked for does not exist (404)."""


@dataclass(frozen=True)
class Ref:
    """An object as the API names it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind} {self.name}{where}"


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or exc.status)


class Cluster:
    """A cluster behind one API client: the verbs the backend needs, in domain words."""

    def __init__(self, api: client.ApiClient, server: str) -> None:
        self.api = api
        self.server = server
        self._dynamic: DynamicClient | None = None

    # --- errors, in one place ------------------------------------------------------------------------
    @contextmanager
    def _asking(self, what: str) -> Iterator[None]:
        try:
            yield
        except ResourceNotFoundError as exc:
            raise ClusterError(f"{what}: the API server at {self.server} does not serve that kind ({exc})") from None
        except ApiException as exc:
            reason = _reason(exc)
            if exc.status == 403:
                raise ClusterError(f"{what}: forbidden: {reason} (give the run's account that right, or use a "
                                   "context that has it)") from None
            if exc.status == 404:
                raise NotFound(f"{what}: not found ({reason})") from None
            if exc.status == 401:
                raise ClusterError(f"{what}: the API server at {self.server} does not accept the context's "
                                   f"credentials ({reason})") from None
            if exc.status == 409 and "conflict" in reason.lower():
                raise ClusterError(f"{what}: {reason} (another field manager owns those fields: change them "
                                   "through that manager, or delete the object first)") from None
            raise ClusterError(f"{what}: the API server answered {exc.status}: {reason}") from None
        except (TransportError, OSError) as exc:
            raise ClusterError(f"{what}: cannot reach the Kubernetes API at {self.server} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with self._asking(what):
            return fn()
        raise AssertionError("unreachable")  # pragma: no cover (the context manager re-raises or returns)

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            self._dynamic = self._call("read the API server's kinds", lambda: DynamicClient(self.api))
        return self._dynamic

    def _resource(self, api_version: str, kind: str) -> Any:
        """The API's description of a kind; the kinds are read again once when it is missing (a CRD installed
        since the client read them)."""
        kinds = self.dynamic.resources
        try:
            return kinds.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self._call("read the API server's kinds", kinds.invalidate_cache)
        try:
            return kinds.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            group = api_version.rpartition("/")[0]
            hint = CRD_HINTS.get(group, "install the CRD that defines it")
            raise ClusterError(f"the cluster at {self.server} does not know {kind} ({api_version}): {hint}") from None

    # --- what the backend asks ----------------------------------------------------------------------
    def version(self) -> str:
        info = self._call("read the server version", lambda: client.VersionApi(self.api).get_code())
        return str(info.git_version)

    def namespaced(self, api_version: str, kind: str) -> bool:
        return bool(self._resource(api_version, kind).namespaced)

    def apply(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        """Server-side apply as field manager `meshlib`; conflicts are not forced."""
        ref = Ref(body["apiVersion"], body["kind"], body["metadata"]["name"], namespace)
        resource = self._resource(ref.api_version, ref.kind)
        out = self._call(f"apply {ref}", lambda: self.dynamic.server_side_apply(
            resource, body=body, namespace=namespace, field_manager=FIELD_MANAGER))
        return out.to_dict()

    def get(self, ref: Ref) -> dict[str, Any] | None:
        resource = self._resource(ref.api_version, ref.kind)
        try:
            return self._call(f"read {ref}", lambda: self.dynamic.get(resource, name=ref.name,
                                                                       namespace=ref.namespace)).to_dict()
        except NotFound:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str = "") -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        out = self._call(f"list {kind} in namespace {namespace}", lambda: self.dynamic.get(
            resource, namespace=namespace, label_selector=selector or None))
        return [item.to_dict() for item in out.items]

    def delete(self, ref: Ref) -> bool:
        """Delete (background propagation); False when it was already gone."""
        resource = self._resource(ref.api_version, ref.kind)
        try:
            self._call(f"delete {ref}", lambda: self.dynamic.delete(
                resource, name=ref.name, namespace=ref.namespace, body={"propagationPolicy": "Background"}))
        except NotFound:
            return False
        return True

    def wait(self, what: str, check: Callable[[], str | None], timeout: float, poll: float = 0.25) -> None:
        """Poll `check` until it returns None (done) or `timeout`; ClusterError with its last answer else."""
        deadline = time.monotonic() + timeout
        while True:
            waiting_for = check()
            if waiting_for is None:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"{what}: not done after {timeout:g}s: {waiting_for}")
            time.sleep(poll)

    def pod_log(self, pod: str, namespace: str, container: str | None, since_seconds: int | None) -> str:
        core = client.CoreV1Api(self.api)
        return self._call(f"read the log of pod {pod} in namespace {namespace}", lambda: core.read_namespaced_pod_log(
            pod, namespace, container=container, since_seconds=since_seconds, timestamps=False))
