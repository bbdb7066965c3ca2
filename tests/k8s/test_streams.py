"""Logs, exec and port-forward through the client's real protocols, against the real API server: the API server
reaches the pod's node (kwok's kubelet API, over TLS checked against the test CA) and kwok answers from this machine,
as its debugging kinds tell it: a pod's log is a file, exec runs a local process, port-forward dials a local
address (see KWOK_DEBUG_KINDS in controlplane.py)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from controlplane import HOST, KWOK_API, ControlPlane, not_built_reason
from kubernetes import config
from kubernetes.dynamic import DynamicClient
from testkit.servers import json_server

from meshlib.kube.backend import KubernetesBackend
from meshlib.kube.cluster import Cluster, ClusterError, Executed, _exit_code

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

T = TypeVar("T")
ALLOWED = ("admin",)
# a workload as injection leaves it: the app's container and the sidecar's
ORDERS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, labels: {app: orders}}
spec:
  replicas: 2
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      containers:
      - {name: orders, image: example/orders:v1, ports: [{containerPort: 8080, name: http}]}
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}
"""


def cri_log(lines: list[tuple[datetime, str, str]]) -> str:
    """A container log file as a CRI runtime writes it (and kwok reads it): `<RFC 3339 time> <stream> F <line>`."""
    return "".join(f"{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {stream} F {text}\n" for at, stream, text in lines)


def kwok(cp: ControlPlane, kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> None:
    """Create one of kwok's debugging objects (kwok.x-k8s.io/v1alpha1) through the API server."""
    dynamic = DynamicClient(config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin",
                                                          persist_config=False))
    resource = dynamic.resources.get(api_version=KWOK_API, kind=kind)
    dynamic.create(resource, body={"apiVersion": KWOK_API, "kind": kind,
                                   "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
                                   "spec": spec}, namespace=namespace)


def delete_kwok(cp: ControlPlane, kind: str, name: str) -> None:
    dynamic = DynamicClient(config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin",
                                                          persist_config=False))
    dynamic.delete(dynamic.resources.get(api_version=KWOK_API, kind=kind), name=name)


def once_kwok_knows(ask: Callable[[], T], timeout: float = 15.0) -> T:
    """`ask()`, again while kwok answers that nothing points that pod's stream anywhere: kwok learns of a new
    object by its watch, a moment after the API server stored it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ask()
        except ClusterError as exc:
            if not any(f"no {what} found" in str(exc) for what in ("logs", "exec", "forward")) \
                    or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@pytest.fixture
def orders(cp: ControlPlane, request: pytest.FixtureRequest) -> Iterator[tuple[KubernetesBackend, str, list[str]]]:
    """The backend with ORDERS rolled out in a namespace of the test's own: (backend, namespace, pod names)."""
    namespace = "streams-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    b = KubernetesBackend(namespace, context="admin", allowed=ALLOWED, kubeconfig=cp.kubeconfig)
    try:
        b.apply_text(ORDERS, namespace)
        pods = sorted(p["metadata"]["name"] for p in b.cluster.list("v1", "Pod", namespace, "app=orders"))
        assert len(pods) == 2, pods
        yield b, namespace, pods
    finally:
        b.close()


def http_server() -> contextlib.AbstractContextManager[ThreadingHTTPServer]:
    """An HTTP/1.1 server on 127.0.0.1 that answers every GET with what it was asked, as JSON with its length."""
    return json_server(lambda request: {"path": request.path, "host": request.headers.get("Host")}, HOST)


def test_logs_of_a_deployment_are_its_pods_logs_from_the_node(cp: ControlPlane, orders, tmp_path: Path) -> None:
    b, namespace, pods = orders
    now = datetime.now(UTC)
    files = {}
    for n, pod in enumerate(pods):
        files[pod] = tmp_path / f"{pod}.log"
        files[pod].write_text(cri_log([
            (now - timedelta(hours=2), "stdout", f"orders-{n} starting"),
            (now - timedelta(seconds=5), "stdout", f"orders-{n} GET /orders 200"),
            (now - timedelta(seconds=4), "stderr", f"orders-{n} slow query"),
        ]))
        sidecar = tmp_path / f"{pod}.proxy.log"
        sidecar.write_text(cri_log([(now, "stdout", "[envoy] access log line")]))
        # a Logs object is named like its pod; per container: the app's file, and the sidecar's
        kwok(cp, "Logs", pod, {"logs": [{"containers": ["orders"], "logsFile": str(files[pod])},
                                        {"containers": ["istio-proxy"], "logsFile": str(sidecar)}]}, namespace)

    lines = once_kwok_knows(lambda: b.logs("orders", namespace))
    # both pods, the app's container (not the sidecar's), stdout and stderr in the file's order
    assert lines == ["orders-0 starting", "orders-0 GET /orders 200", "orders-0 slow query",
                     "orders-1 starting", "orders-1 GET /orders 200", "orders-1 slow query"]
    # `since` travels as sinceSeconds to the kubelet API; kwok compares it with each line's CRI timestamp
    assert b.logs("orders", namespace, since=now - timedelta(minutes=1)) == [
        "orders-0 GET /orders 200", "orders-0 slow query", "orders-1 GET /orders 200", "orders-1 slow query"]
    assert b.logs("orders", namespace, container="istio-proxy") == ["[envoy] access log line"] * 2


def test_logs_that_nothing_points_anywhere_are_one_line(cp: ControlPlane, orders) -> None:
    b, namespace, pods = orders
    with pytest.raises(ClusterError) as err:
        b.logs("orders", namespace)
    message = str(err.value)
    assert f"read the log of pod {pods[0]} in namespace {namespace}: the API server answered 400" in message
    assert "no logs found for container" in message and "\n" not in message, message


def test_cluster_logs_select_pods_by_namespace(cp: ControlPlane, orders, tmp_path: Path) -> None:
    b, namespace, _ = orders
    log = tmp_path / "all.log"
    log.write_text(cri_log([(datetime.now(UTC), "stdout", "one file for every pod")]))
    name = f"{namespace}-logs"
    kwok(cp, "ClusterLogs", name, {"selector": {"matchNamespaces": [namespace]},
                                   "logs": [{"logsFile": str(log)}]})
    try:
        assert once_kwok_knows(lambda: b.logs("orders", namespace)) == ["one file for every pod"] * 2
    finally:
        delete_kwok(cp, "ClusterLogs", name)


def test_exec_in_a_pod_returns_output_and_exit_code(cp: ControlPlane, orders, tmp_path: Path) -> None:
    b, namespace, pods = orders
    name = f"{namespace}-exec"
    # kwok runs the command here, in this working directory and with these variables
    kwok(cp, "ClusterExec", name, {"selector": {"matchNamespaces": [namespace]}, "execs": [
        {"containers": ["orders"], "local": {"workDir": str(tmp_path), "envs": [{"name": "GREETING",
                                                                                 "value": "hello"}]}}]})
    try:
        ran = once_kwok_knows(lambda: b.cluster.exec(
            pods[0], namespace, "orders", ["sh", "-c", 'echo "$GREETING from $(pwd)"; echo careful >&2']))
        assert ran == Executed(stdout=f"hello from {tmp_path}\n", stderr="careful\n", exit_code=0)
        stdout, stderr, code = b.cluster.exec(pods[1], namespace, "orders", ["sh", "-c", 'read line; echo "got $line"'],
                                              stdin="a line\n")
        assert (stdout, stderr, code) == ("got a line\n", "", 0)

        # a kubelet reports a non-zero exit as NonZeroExitCode with the code; kwok wraps the process's exit error
        # before its streaming server sees it, so here it arrives as an internal error naming the exit status
        with pytest.raises(ClusterError) as failed:
            b.cluster.exec(pods[0], namespace, "orders", ["sh", "-c", "echo partial; exit 3"])
        message = str(failed.value)
        assert message.startswith(f"run `sh -c 'echo partial; exit 3'` in container orders of pod {pods[0]} in "
                                  f"namespace {namespace}: ") and "exit status 3" in message, message
        with pytest.raises(ClusterError, match='executable file not found'):
            b.cluster.exec(pods[0], namespace, "orders", ["no-such-command"])
        # the sidecar's container has no exec target: kwok says so, in one line
        with pytest.raises(ClusterError) as no_target:
            b.cluster.exec(pods[0], namespace, "istio-proxy", ["true"])
        assert 'no exec found for container "istio-proxy"' in str(no_target.value)
        assert "\n" not in str(no_target.value)
        # kwok never closes a command's stdin (it copies the stream into the pipe and leaves the pipe open), so a
        # command that reads stdin to its end does not end: the call says so after its timeout
        with pytest.raises(ClusterError, match=r"still running after 1s \(a command that reads stdin"):
            b.cluster.exec(pods[0], namespace, "orders", ["cat"], stdin="x\n", timeout=1)
    finally:
        delete_kwok(cp, "ClusterExec", name)


def test_an_exit_code_is_read_from_the_status_a_kubelet_sends() -> None:
    # what a kubelet's streaming server writes on the error channel when the command exits with 3 (kwok cannot:
    # see above); and its Success
    status = {"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code: 3",
              "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "type": "ExitCode",
                                                                   "message": "3"}]}}
    assert _exit_code("run x", json.dumps(status)) == 3
    assert _exit_code("run x", '{"metadata":{},"status":"Success"}') == 0
    with pytest.raises(ClusterError, match="run x: the stream closed without the command's exit status"):
        _exit_code("run x", "")


def test_port_forward_reaches_the_pods_port(cp: ControlPlane, orders) -> None:
    b, namespace, pods = orders
    with http_server() as server:
        port = server.server_address[1]
        # a PortForward is named like its pod: its port 8080 is the local server
        kwok(cp, "PortForward", pods[0], {"forwards": [{"ports": [8080], "target": {"address": HOST,
                                                                                    "port": port}}]}, namespace)
        status, body = once_kwok_knows(lambda: b.cluster.http_get(pods[0], namespace, 8080, "/orders?id=7"))
        assert status == 200
        assert json.loads(body) == {"path": "/orders?id=7", "host": "localhost:8080"}

        # the connection itself: one request, the answer read by its length (the stream stays open after it)
        with b.cluster.port_forward(pods[0], namespace, 8080) as forwarded:
            forwarded.socket.settimeout(10)
            forwarded.socket.sendall(b"GET /raw HTTP/1.1\r\nHost: orders\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                chunk = forwarded.socket.recv(65536)
                assert chunk, f"the forwarded connection closed after {answer!r} ({forwarded.error()})"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"path": "/raw", "host": "orders"}
            assert forwarded.error() is None

    # another port of the pod, and the same port after the server is gone: kwok's answer, in one line
    with pytest.raises(ClusterError) as unknown:
        b.cluster.http_get(pods[0], namespace, 9090, "/")
    assert str(unknown.value) == (f"GET / from port 9090 of pod {pods[0]} in namespace {namespace}: error forwarding "
                                  f"port 9090 to pod {pods[0]}/{namespace}, uid : forward not found for port 9090 in "
                                  f'pod "{namespace}/{pods[0]}"')
    with pytest.raises(ClusterError) as refused:
        b.cluster.http_get(pods[0], namespace, 8080, "/")
    assert f"failed to dial {HOST}:{port}" in str(refused.value) and "connection refused" in str(refused.value)


def test_streams_are_refused_for_a_user_without_the_right(cp: ControlPlane, orders) -> None:
    _, namespace, pods = orders
    viewer = Cluster(config.new_client_from_config(config_file=str(cp.kubeconfig), context="viewer",
                                                   persist_config=False), cp.server)
    for ask, resource in ((lambda: viewer.exec(pods[0], namespace, "orders", ["true"]), "pods/exec"),
                          (lambda: viewer.http_get(pods[0], namespace, 8080, "/"), "pods/portforward")):
        with pytest.raises(ClusterError) as err:
            ask()
        message = str(err.value)
        assert f'cannot get resource "{resource}"' in message and "forbidden" in message, message
        assert "\n" not in message
