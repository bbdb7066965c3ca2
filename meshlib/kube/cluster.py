"""The one place that talks to the Kubernetes API (official client): apply, delete, wait, read, and the streams a
kubelet serves through the API server (a pod's log, exec, port-forward).

Every API failure becomes one `ClusterError` line that says what was asked, what the API server answered and what
to do: forbidden (403), an unknown kind (its CRD is not installed), a field another manager owns (server-side apply
conflict), an unreachable server. Nothing else in meshlib imports `kubernetes`.
"""

from __future__ import annotations

import http.client
import json
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.stream import portforward, stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDIN_CHANNEL, PortForward, WSClient
from urllib3.exceptions import HTTPError as TransportError
from websocket import WebSocketBadStatusException, WebSocketException

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


class Executed(NamedTuple):
    """What a command run in a container left: its output and exit code."""

    stdout: str
    stderr: str
    exit_code: int


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or exc.status)


def _websocket_failure(exc: ApiException) -> ApiException | BaseException:
    """The stream helpers report any failure to open the websocket as `ApiException(status=0, reason=str(error))`
    raised while handling that error: a refused handshake becomes the API server's own answer again (status and
    Status body), a failure to connect the transport error it was."""
    cause = exc.__context__
    if exc.status == 0 and isinstance(cause, WebSocketBadStatusException):
        body = cause.resp_body.decode("utf-8", "replace") if isinstance(cause.resp_body, bytes) else cause.resp_body
        return ApiException(status=cause.status_code, reason=cause.status_message, body=body)
    if exc.status == 0 and isinstance(cause, (OSError, WebSocketException)):
        return cause
    return exc


def _exit_code(what: str, status_text: str) -> int:
    """The exit code in the Status a kubelet sends on the exec stream's error channel when the command ends:
    Success is 0, NonZeroExitCode names the code in a cause of type ExitCode; anything else is a failure to run it."""
    try:
        status = json.loads(status_text) if status_text else None
    except ValueError:
        status = None
    if not isinstance(status, dict):
        raise ClusterError(f"{what}: the stream closed without the command's exit status "
                           f"({_one_line(status_text) or 'nothing on the error channel'})")
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("type") == "ExitCode":
                return int(cause["message"])
    raise ClusterError(f"{what}: {_one_line(status.get('message') or status_text)}")


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
            unwrapped = _websocket_failure(exc)
            if not isinstance(unwrapped, ApiException):
                raise self._unreachable(what, unwrapped) from None
            exc = unwrapped
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
        except (TransportError, OSError, WebSocketException) as exc:
            raise self._unreachable(what, exc) from None

    def _unreachable(self, what: str, exc: BaseException) -> ClusterError:
        first = (str(exc).splitlines() or [""])[0][:200]
        return ClusterError(f"{what}: cannot reach the Kubernetes API at {self.server} ({type(exc).__name__}: {first})")

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

    # --- streams: what a kubelet serves through the API server (websockets, as the client speaks them) ------
    def _stream_api(self) -> client.CoreV1Api:
        """A CoreV1Api on an ApiClient of its own: `kubernetes.stream` swaps its client's transport for the length
        of the call, which must not touch the client other calls (or other threads) use."""
        return client.CoreV1Api(client.ApiClient(self.api.configuration))

    def exec(self, pod: str, namespace: str, container: str | None, command: Sequence[str],
             stdin: str | None = None, timeout: float = 60.0) -> Executed:
        """Run `command` in a container of the pod (no TTY) through the API server's exec websocket; wait for it to
        end (at most `timeout` seconds) and return its stdout, stderr and exit code.

        `stdin` is written, then closed with the v5 protocol's close signal (API servers since 1.30; over v4 stdin
        is never closed). A command that cannot be run, a refusal, or one still running at `timeout`: ClusterError.
        """
        where = f" in container {container}" if container else ""
        what = f"run `{shlex.join(command)}`{where} of pod {pod} in namespace {namespace}"
        core = self._stream_api()
        ws: WSClient = self._call(what, lambda: stream(
            core.connect_get_namespaced_pod_exec, pod, namespace, command=list(command), container=container,
            stdin=stdin is not None, stdout=True, stderr=True, tty=False, _preload_content=False))
        try:
            with self._asking(what):
                if stdin is not None:
                    ws.write_stdin(stdin)
                    ws.close_channel(STDIN_CHANNEL)
                ws.run_forever(timeout=timeout)
                if ws.is_open():
                    raise ClusterError(f"{what}: still running after {timeout:g}s"
                                       + (" (a command that reads stdin to its end may not see it end)"
                                          if stdin is not None else ""))
                stdout, stderr = ws.read_stdout(timeout=0), ws.read_stderr(timeout=0)
                status = ws.read_channel(ERROR_CHANNEL, timeout=0)
        finally:
            ws.close()
            core.api_client.close()
        return Executed(stdout, stderr, _exit_code(what, status))

    @contextmanager
    def port_forward(self, pod: str, namespace: str, port: int) -> Iterator[ForwardedPort]:
        """One TCP connection to `port` of the pod, through the API server's port-forward websocket; closed on
        exit. The pod side does not end the stream when its server closes the connection (the kubelet keeps it
        until the client closes), so read answers by their length, not to the end."""
        what = f"forward port {port} of pod {pod} in namespace {namespace}"
        core = self._stream_api()
        pf: PortForward = self._call(what, lambda: portforward(
            core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)))
        forwarded = ForwardedPort(what, pf, port)
        try:
            yield forwarded
        finally:
            forwarded.close()
            core.api_client.close()

    def http_get(self, pod: str, namespace: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET `path` from `port` of the pod over a port-forward (HTTP/1.1, one request): its status and body.
        The answer must carry its length (Content-Length or chunked): the forwarded stream does not end."""
        with self.port_forward(pod, namespace, port) as forwarded:
            conn = http.client.HTTPConnection("localhost", port, timeout=timeout)
            conn.sock = forwarded.socket
            conn.sock.settimeout(timeout)
            what = f"GET {path} from port {port} of pod {pod} in namespace {namespace}"
            try:
                conn.request("GET", path, headers={"Host": f"localhost:{port}", "Connection": "close"})
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                refused = forwarded.error()
                raise ClusterError(f"{what}: " + (_one_line(refused) if refused else
                                                  f"no answer ({type(exc).__name__}: {_one_line(exc)})")) from None


class ForwardedPort:
    """A connection to a pod's port: `socket` is socket-like (send/recv/settimeout); `error()` is what the pod's
    side reported on the port's error channel (the kubelet could not connect, say), None while it reported nothing."""

    def __init__(self, what: str, pf: PortForward, port: int) -> None:
        self.what = what
        self._pf = pf
        self.port = port
        self.socket = pf.socket(port)
        self.socket.setblocking(True)

    def error(self) -> str | None:
        return self._pf.error(self.port)

    def close(self) -> None:
        """Closing our end makes the client's proxy thread close the websocket."""
        self.socket.close()
