"""Starting and stopping the embedded mesh: nothing keeps listening, threads end, errors say what to do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from meshclient import CATALOG_V1, CH5, NS, ROOT, SERVICES, WEBAPP_HOST, request, wait_until

from meshlib.errors import ConfigError, MeshlibError
from meshlib.local.mesh import LocalMesh
from meshlib.local.tempdirs import sweep_stale_dirs

WORLD = [SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"]


def mesh_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("meshlib"))


def listening_ports(mesh: LocalMesh) -> set[tuple[str, int]]:
    """Every loopback address the mesh listens on: the gateway, each pod's Envoy (admin, capture, inbound ports),
    its merged metrics, its apps, the stand-ins."""
    ports = {("127.0.0.1", mesh.gateway_port)}
    for pod in mesh.pods():
        assert pod.sidecar is not None and pod.ip
        ports |= {(pod.ip, 15000), (pod.ip, 15020)}
        if not pod.workload.is_gateway:
            ports.add((pod.ip, 15001))
            ports |= {(pod.ip, p) for p in pod.workload.container_ports()}
        ports.update(pod.ports.values())
    external = getattr(mesh, "_external", None)
    if external is not None:
        ports.add(("127.0.0.1", external.port))
    return ports


def refuses(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def assert_all_closed(ports: set[tuple[str, int]]) -> None:
    still_open = sorted(p for p in ports if not refuses(p))
    assert not still_open, f"addresses still accepting connections after close(): {still_open}"


def settled_thread_count(baseline: int) -> int:
    return wait_until(threading.active_count, lambda n: n <= baseline, timeout=3)


def test_close_stops_every_listener_and_thread():
    baseline = threading.active_count()
    mesh = LocalMesh(WORLD, namespace=NS, port=0, seed=1).start()
    try:
        assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200
        ports = listening_ports(mesh)
        assert len(ports) >= 15, ports  # 4 pods × (admin, outbound, inbound, app) + gateway (+ admin) + stand-in
        assert all(not refuses(p) for p in ports)
        # the mesh's loop, and the xDS server's stream handlers and readers (one each per connected Envoy)
        threads = mesh_threads()
        assert threads.count("meshlib-local-mesh") == 1, threads
        assert sum(t.startswith("meshlib-xds") for t in threads) >= len(mesh.pods()), threads
        assert all(t == "meshlib-local-mesh" or t.startswith("meshlib-xds") for t in threads), threads
    finally:
        mesh.close()

    assert_all_closed(ports)
    assert mesh_threads() == []
    assert settled_thread_count(baseline) <= baseline
    mesh.close()  # idempotent
    with pytest.raises(MeshlibError, match="not running"):
        mesh.apply([CH5 / "catalog-dest-rule.yaml"])


def test_an_exception_inside_the_with_block_still_closes_everything():
    baseline = threading.active_count()
    ports: set[tuple[str, int]] = set()
    with pytest.raises(RuntimeError, match="step failed"):
        with LocalMesh(WORLD, namespace=NS, port=0, seed=2) as mesh:
            ports = listening_ports(mesh)
            assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200
            raise RuntimeError("step failed")

    assert ports
    assert_all_closed(ports)
    assert mesh_threads() == []
    assert settled_thread_count(baseline) <= baseline


def test_a_busy_gateway_port_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(MeshlibError) as caught:
            LocalMesh(WORLD, namespace=NS, port=port, seed=3).start()

        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert "another port" in message and "0 picks a free one" in message, message
        assert mesh_threads() == []
        # the port is still the other owner's
        assert not refuses(("127.0.0.1", port))


def test_an_unknown_image_names_the_file_and_line(tmp_path):
    manifest = tmp_path / "mystery.yaml"
    manifest.write_text(textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: mystery
        spec:
          replicas: 1
          selector:
            matchLabels:
              app: mystery
          template:
            metadata:
              labels:
                app: mystery
            spec:
              containers:
              - name: mystery
                image: example.com/team/mystery:1.2
                ports:
                - containerPort: 9000
        """))
    line = manifest.read_text().splitlines().index("        image: example.com/team/mystery:1.2") + 1

    with pytest.raises(ConfigError) as caught:
        LocalMesh([CATALOG_V1, manifest], namespace=NS, port=0, seed=4).start()
    message = str(caught.value)
    assert f"{manifest}:{line}" in message, message
    assert "example.com/team/mystery:1.2" in message and "map it to a local command" in message, message
    assert mesh_threads() == []

    with LocalMesh([CATALOG_V1], namespace=NS, port=0, seed=4) as mesh:
        pods = sorted(p.name for p in mesh.pods())
        with pytest.raises(ConfigError) as caught:
            mesh.apply(text=manifest.read_text())
        assert f"<inline>:{line}" in str(caught.value)
        assert sorted(p.name for p in mesh.pods()) == pods, "a rejected apply changes nothing"


SIGINT_SCRIPT = """\
import json, signal, sys, time
# a terminal's Ctrl-C raises KeyboardInterrupt; restore that even when this test runs with SIGINT ignored
# (a background job or a CI runner without a terminal starts every child with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
from meshlib.local.mesh import LocalMesh
from test_lifecycle import listening_ports

try:
    with LocalMesh([{world!r}, {gw!r}], namespace="istioinaction", port=0, seed=1) as mesh:
        print(json.dumps({{"gateway": mesh.gateway_port, "ports": sorted(listening_ports(mesh))}}), flush=True)
        time.sleep(30)
except KeyboardInterrupt:
    print("closed", flush=True)
"""


def test_sigint_closes_the_mesh_and_exits():
    script = SIGINT_SCRIPT.format(tests=str(ROOT / "tests" / "integration"), world=str(SERVICES),
                                  gw=str(CH5 / "webapp-catalog-gw-vs.yaml"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, proc.kill)  # bounds the blocking readline below (a cold start imports scipy)
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the mesh is up
        watchdog.cancel()  # from here on only the 15 s exit bound below applies
        assert first, proc.stderr.read() if proc.stderr else ""
        started = json.loads(first)
        assert request(started["gateway"], "/api/catalog", WEBAPP_HOST).status == 200

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)

    assert proc.returncode == 0, err
    assert out.strip() == "closed", (out, err)
    assert_all_closed({(host, port) for host, port in started["ports"]})


KILL_SCRIPT = """\
import json, os, sys, time
from meshlib.local.mesh import LocalMesh
from meshlib.local.meshconfig import load_mesh_config

mesh = LocalMesh([{manifests!r}], port=0, config=load_mesh_config({config!r})).start()
pids = [c._proc.pid for p in mesh.pods() for c in p.apps if hasattr(c, "_proc")]
envoys = [p.sidecar.envoy.pid for p in mesh.pods() if p.sidecar is not None]
pids += envoys
dirs = [str(mesh.workdir)] + [str(p.sidecar.envoy.workdir) for p in mesh.pods() if p.sidecar is not None]
prom_dir = None
if mesh.prometheus is not None:
    pids.append(mesh.prometheus.pid)
    dirs.append(str(mesh.prometheus.dir))
print(json.dumps({{"pids": pids, "envoys": len(envoys), "dirs": dirs}}), flush=True)
time.sleep(60)
"""
USER_IMAGE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      containers: [{name: orders, image: example/orders, ports: [{containerPort: 8080}]}]
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper counts as gone
        return f.read().split()[2] != "Z"


def test_children_die_when_meshlib_is_killed(tmp_path):
    """SIGKILL runs no cleanup code: the kernel must still stop Prometheus and user-image commands."""
    (tmp_path / "m.yaml").write_text(USER_IMAGE)
    # http.server takes its port as an argument, not from $PORT: a shell passes it on
    (tmp_path / "meshlib.yaml").write_text(
        "images:\n  example/orders:\n    command: [\"sh\", \"-c\", \"exec "
        f"{sys.executable} -m http.server --bind 127.0.0.1 $PORT\"]\n")
    script = KILL_SCRIPT.format(manifests=str(tmp_path / "m.yaml"), config=str(tmp_path / "meshlib.yaml"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        pids = started["pids"]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(10)
    assert pids, "the mesh started no child process to check"
    assert started["envoys"] >= 2, started  # the gateway's and the orders pod's Envoy
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "a child process outlived a killed meshlib"
    # no cleanup code ran: the next meshlib start sweeps the dead run's temp dirs (mesh, Envoys, Prometheus)
    assert all(os.path.isdir(d) for d in started["dirs"]), started["dirs"]
    sweep_stale_dirs()
    assert not [d for d in started["dirs"] if os.path.exists(d)]
