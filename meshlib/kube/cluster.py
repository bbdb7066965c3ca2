"""The one place that talks to the Kubernetes API (official client): apply, delete, wait, read, follow one object's
changes (the API's watch: `Following`), and the streams a kubelet serves through the API server (a pod's log, exec,
port-forward), with `LocalForward`: a port on 127.0.0.1 whose every connection is a port-forward to a pod.

Every API failure becomes one `ClusterError` line that says what was asked, what the API server answered and what
to do: forbidden (403), an unknown kind (its CRD is not installed), a field another manager owns (server-side apply
conflict), an unreachable server. Nothing else in meshlib imports `kubernetes`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from meshlib.errors import MeshlibError, MissingExtra

try:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    from kubernetes.stream import portforward, stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL, STDIN_CHANNEL, PortForward, WSClient
    from kubernetes.watch import Watch
    from urllib3.exceptions import HTTPError as TransportError
    from websocket import WebSocketBadStatusException, WebSocketException
except ModuleNotFoundError as exc:
    raise MissingExtra("the kubernetes backend", exc.name, "kubernetes") from None

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

    def _resource(self, api_version: str, kind: str, refresh: bool = True) -> Any:
        """The API's description of a kind; the kinds are read again once when it is missing (a CRD installed
        since the client read them, or since another process cached them), unless `refresh` is False."""
        kinds = self.dynamic.resources
        try:
            return kinds.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            if refresh:
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

    def serves(self, api_version: str, kind: str, refresh: bool = True) -> bool:
        """Whether the API server knows the kind (its CRD is installed), without an error when it does not;
        `refresh=False` trusts the kinds as last read (just read for another version of the kind, say)."""
        try:
            self._resource(api_version, kind, refresh)
        except ClusterError as exc:
            if "does not know" in str(exc):
                return False
            raise
        return True

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

    def follow(self, ref: Ref, on_change: Callable[[dict[str, Any] | None], None],
               timeout: int = 240) -> Following:
        """Follow one object through the API's watch: `on_change` gets its state now (None: it does not exist), in
        the caller's thread, then every later state (None once deleted) in a thread of its own, until the returned
        `Following` is closed. `timeout`: seconds each watch request lasts before it is made again from the last
        resourceVersion (and from a fresh read when the server no longer has that version: 410 Gone)."""
        resource = self._resource(ref.api_version, ref.kind)
        following = Following(self, ref, resource, on_change, timeout)
        following.start()
        return following

    def _read_listed(self, ref: Ref, resource: Any) -> tuple[dict[str, Any] | None, str]:
        """The object (or None) and the resourceVersion of the list it came in: where a watch starts."""
        listed = self._call(f"read {ref}", lambda: self.dynamic.get(
            resource, namespace=ref.namespace, field_selector=f"metadata.name={ref.name}")).to_dict()
        items = listed.get("items") or []
        return (items[0] if items else None), str((listed.get("metadata") or {}).get("resourceVersion") or "")

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

    def pod_log(self, pod: str, namespace: str, container: str | None, since_seconds: int | None,
                limit_bytes: int | None = None, timeout: float = 60.0) -> str:
        """A container's log (the last `since_seconds`; of that, the first `limit_bytes`), in one request of at most
        `timeout` seconds."""
        core = client.CoreV1Api(self.api)
        return self._call(f"read the log of pod {pod} in namespace {namespace}", lambda: core.read_namespaced_pod_log(
            pod, namespace, container=container, since_seconds=since_seconds, timestamps=False,
            limit_bytes=limit_bytes, _request_timeout=timeout))

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

    def open_port(self, pod: str, namespace: str, port: int) -> ForwardedPort:
        """One TCP connection to `port` of the pod, through the API server's port-forward websocket; the caller
        closes it. The pod side does not end the stream when its server closes the connection (the kubelet keeps
        it until the client closes), so read answers by their length, not to the end."""
        what = f"forward port {port} of pod {pod} in namespace {namespace}"
        core = self._stream_api()
        try:
            pf: PortForward = self._call(what, lambda: portforward(
                core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)))
        except BaseException:
            core.api_client.close()
            raise
        return ForwardedPort(what, pf, port, on_close=core.api_client.close)

    @contextmanager
    def port_forward(self, pod: str, namespace: str, port: int) -> Iterator[ForwardedPort]:
        """`open_port`, closed on exit."""
        forwarded = self.open_port(pod, namespace, port)
        try:
            yield forwarded
        finally:
            forwarded.close()

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


class Following:
    """One object followed by the API's watch (see `Cluster.follow`). `errors` keeps the latest reasons a watch
    request failed (it is made again a second later); `close()` ends the watch at once and joins its thread."""

    RETRY = 1.0

    def __init__(self, cluster: Cluster, ref: Ref, resource: Any, on_change: Callable[[dict[str, Any] | None], None],
                 timeout: int) -> None:
        self.cluster = cluster
        self.ref = ref
        self._resource = resource
        self._on_change = on_change
        self._timeout = timeout
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.events = 0

    def start(self) -> None:
        obj, version = self.cluster._read_listed(self.ref, self._resource)
        self._deliver(obj)
        self._thread = threading.Thread(target=self._run, args=(version,), daemon=True,
                                        name=f"meshlib-follow-{self.ref.kind}-{self.ref.name}")
        self._thread.start()

    def _deliver(self, obj: dict[str, Any] | None) -> None:
        try:
            self._on_change(obj)
        except Exception as exc:  # noqa: BLE001 (the watcher's own thread: kept, never a traceback)
            self._note(f"handling a change of {self.ref}: {type(exc).__name__}: {exc}")

    def _note(self, text: str) -> None:
        with self._lock:
            self.errors = [*self.errors[-9:], _one_line(text)]

    def _run(self, version: str) -> None:
        while not self._closed.is_set():
            try:
                version = self._watch_from(version)
            except ApiException as exc:
                if self._closed.is_set():
                    return
                if exc.status == 410:  # the server has compacted that version away: read the object again
                    try:
                        obj, version = self.cluster._read_listed(self.ref, self._resource)
                    except ClusterError as err:
                        self._note(str(err))
                        self._closed.wait(self.RETRY)
                        continue
                    self._deliver(obj)
                    continue
                self._note(f"watching {self.ref}: the API server answered {exc.status}: {_reason(exc)}")
                self._closed.wait(self.RETRY)
            except Exception as exc:  # noqa: BLE001 (a dropped connection, an unreachable server: try again)
                if self._closed.is_set():
                    return
                self._note(f"watching {self.ref}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
                self._closed.wait(self.RETRY)

    def _watch_from(self, version: str) -> str:
        """One watch request from `version`; the last version it saw."""
        watch = Watch()
        with self._lock:
            if self._closed.is_set():
                return version
            self._watch = watch
        try:
            for event in self.cluster.dynamic.watch(self._resource, namespace=self.ref.namespace, name=self.ref.name,
                                                    resource_version=version or None, timeout=self._timeout,
                                                    watcher=watch):
                if self._closed.is_set():
                    break
                obj = event.get("raw_object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self.events += 1
                    self._deliver(obj)
                elif event.get("type") == "DELETED":
                    self.events += 1
                    self._deliver(None)
        finally:
            with self._lock:
                self._watch = None
        return version

    def close(self, timeout: float = 5.0) -> None:
        """End the watch (its connection is shut down, so a read in progress returns) and wait for the thread.
        The stop is repeated until the thread ends: a watch request still being made when close() began has no
        connection to shut down yet, and would otherwise wait for its next event."""
        self._closed.set()
        deadline = time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                watch = self._watch
            if watch is not None:
                with contextlib.suppress(Exception):
                    watch.stop()
            self._thread.join(0.05)


class ForwardedPort:
    """A connection to a pod's port: `socket` is socket-like (send/recv/settimeout); `error()` is what the pod's
    side reported on the port's error channel (the kubelet could not connect, say), None while it reported nothing."""

    def __init__(self, what: str, pf: PortForward, port: int, on_close: Callable[[], Any] | None = None) -> None:
        self.what = what
        self._pf = pf
        self.port = port
        self.socket = pf.socket(port)
        self.socket.setblocking(True)
        self._on_close = on_close

    def error(self) -> str | None:
        return self._pf.error(self.port)

    def close(self) -> None:
        """Closing our end makes the client's proxy thread close the websocket."""
        self.socket.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            with contextlib.suppress(Exception):
                on_close()


MAX_FORWARDED = 256  # port-forward streams open at once through one LocalForward; more connections wait
FORWARD_IDLE = 300.0  # seconds without a byte either way before a forwarded connection is closed
_POLL = 0.25


class LocalForward:
    """A port on 127.0.0.1 standing for a port of a pod, as `kubectl port-forward` makes one: each accepted
    connection is one port-forward stream (the API server's websocket) to `port` of the pod named by `pod` at that
    moment, and bytes are pumped both ways until either side closes or nothing moves for `idle` seconds.

    Bounded: at most `limit` connections at a time (later ones wait in the listen backlog until one ends).
    `close()` stops accepting (the port refuses connections once it returns) and ends every connection. A stream
    that cannot be opened, or that the pod's side ends with an error, closes its client connection; the reasons
    are kept in `errors` (the latest few) for whoever wants to say why.
    """

    def __init__(self, cluster: Cluster, pod: str, namespace: str, port: int, *, limit: int = MAX_FORWARDED,
                 idle: float = FORWARD_IDLE) -> None:
        self.cluster = cluster
        self.pod = pod  # may be changed between connections (a newer ready pod)
        self.namespace = namespace
        self.port = port
        self.idle = idle
        self.errors: list[str] = []
        self.accepted = 0
        self._slots = threading.BoundedSemaphore(limit)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pumps: set[threading.Thread] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(min(1024, socket.SOMAXCONN))
        except OSError:
            self._listener.close()
            raise
        self.local_port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True,
                                          name=f"meshlib-forward-{namespace}-{port}")
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._pumps)

    def _accept(self) -> None:
        try:
            while not self._closed.is_set():
                if not self._slots.acquire(timeout=_POLL):
                    continue
                ready, _, _ = select.select([self._listener], [], [], _POLL)
                if not ready or self._closed.is_set():
                    self._slots.release()
                    continue
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    self._slots.release()
                    continue
                self.accepted += 1
                pump = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                        name=f"meshlib-forward-{self.port}-{self.accepted}")
                with self._lock:
                    self._pumps.add(pump)
                pump.start()
        finally:
            self._listener.close()

    def _note(self, text: str) -> None:
        with self._lock:
            self.errors = [*self.errors[-9:], _one_line(text)]

    def _serve(self, conn: socket.socket) -> None:
        forwarded: ForwardedPort | None = None
        try:
            conn.settimeout(30.0)
            try:
                forwarded = self.cluster.open_port(self.pod, self.namespace, self.port)
            except ClusterError as exc:
                self._note(str(exc))
                return
            self._pump(conn, forwarded)
        except Exception as exc:  # noqa: BLE001 (a thread of its own: kept for the caller, never a traceback)
            self._note(f"forwarding to port {self.port} of pod {self.pod}: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            if forwarded is not None:
                forwarded.close()
            with self._lock:
                self._pumps.discard(threading.current_thread())
            self._slots.release()

    def _pump(self, conn: socket.socket, forwarded: ForwardedPort) -> None:
        remote = forwarded.socket
        last = time.monotonic()
        while not self._closed.is_set():
            ready, _, _ = select.select([conn, remote], [], [], _POLL)
            if not ready:
                if time.monotonic() - last > self.idle:
                    return
                continue
            last = time.monotonic()
            for sock in ready:
                other = remote if sock is conn else conn
                try:
                    data = sock.recv(1 << 16)
                    if data:
                        other.sendall(data)
                        continue
                except ConnectionError:
                    pass  # the pod's side went away with bytes unread (its error says why), or the client did
                if error := forwarded.error():
                    self._note(f"{forwarded.what}: {error}")
                return  # one side closed: a port-forward stream cannot be half-closed, so end both

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (each notices within a quarter second) and wait for them."""
        self._closed.set()
        self._acceptor.join(timeout)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pumps = list(self._pumps)
        deadline = time.monotonic() + timeout
        for pump in pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
