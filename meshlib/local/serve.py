"""`meshlib up`: run a LocalMesh in the foreground (or detached) with its control channel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from meshlib.errors import MeshlibError
from meshlib.explain import proxy_workload_ref
from meshlib.local.control import ControlServer, clear_state, read_state, state_path, write_state
from meshlib.local.mesh import PROXY_CONTAINER, LocalMesh
from meshlib.local.process import read_mesh_config
from meshlib.xds.dialect import from_config_dump, render

SHORT_KINDS = {"vs": "VirtualService", "virtualservice": "VirtualService", "virtualservices": "VirtualService",
               "dr": "DestinationRule", "destinationrule": "DestinationRule", "destinationrules": "DestinationRule",
               "gw": "Gateway", "gateway": "Gateway", "gateways": "Gateway", "se": "ServiceEntry",
               "serviceentry": "ServiceEntry", "serviceentries": "ServiceEntry", "svc": "Service",
               "service": "Service", "services": "Service", "deploy": "Deployment", "deployment": "Deployment",
               "deployments": "Deployment", "canary": "Canary", "canaries": "Canary"}


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


class Handlers:
    """Blocking functions the control channel calls, one per CLI command."""

    def __init__(self, mesh: LocalMesh, stop: threading.Event) -> None:
        self.mesh, self.stop, self.started = mesh, stop, time.time()

    def apply(self, body: dict[str, Any]) -> str:
        res = self.mesh.apply(body["paths"], body.get("namespace"))
        return "\n".join(f"{r.kind.lower()}/{r.name} configured" for r in res)

    def delete(self, body: dict[str, Any]) -> str:
        res = self.mesh.delete(body["paths"], body.get("namespace"))
        return "\n".join(f'{r.kind.lower()} "{r.name}" deleted' for r in res) or "nothing to delete"

    def get(self, body: dict[str, Any]) -> str:
        what, ns = body["what"].lower(), body.get("namespace") or self.mesh.namespace
        if what in ("pods", "pod", "po"):
            rows = [("NAME", "READY", "STATUS", "RESTARTS", "AGE")]
            for p in self.mesh.pods(ns):
                containers = len(p.logs) or 1
                ready = containers if p.ready else containers - 1
                rows.append((p.name, f"{ready}/{containers}", "Running" if p.ready else "Pending", "0",
                             f"{int(time.time() - self.started)}s"))
            return _table(rows) if len(rows) > 1 else f"No resources found in {ns} namespace."
        kind = SHORT_KINDS.get(what)
        if kind is None:
            raise MeshlibError(f"unknown resource type {what!r}; try pods, svc, deploy, vs, dr, gw, se, canary")
        if kind == "Canary":  # as `kubectl get canaries` prints Flagger's status columns
            rows = [("NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME")]
            for r in self.mesh.store.of_kind(kind, ns):
                try:
                    s = self.mesh.canary_status(r.name, ns)
                except MeshlibError:
                    s = {}
                rows.append((r.name, str(s.get("phase", "")), str(s.get("canaryWeight", "")),
                             str(s.get("lastTransitionTime", ""))))
            return _table(rows) if len(rows) > 1 else f"No resources found in {ns} namespace."
        rows = [("NAME", "SOURCE")]
        rows += [(r.name, str(r.source)) for r in self.mesh.store.of_kind(kind, ns)]
        return _table(rows) if len(rows) > 1 else f"No resources found in {ns} namespace."

    def logs(self, body: dict[str, Any]) -> str:
        name, ns = proxy_workload_ref(body["target"], body.get("namespace") or self.mesh.namespace)
        lines = self.mesh.logs(name, ns, body.get("container"))
        tail = body.get("tail")
        return "\n".join(lines[-tail:] if tail else lines)

    def proxy_config(self, body: dict[str, Any]) -> str:
        """What the proxy's running Envoy has (its own /config_dump), in istioctl's tables or either JSON."""
        name, ns = proxy_workload_ref(body["proxy"], body.get("namespace") or self.mesh.namespace)
        pod = self.mesh.find_pods(name, ns)[0]
        dump = self.mesh.config_dump(name, ns)
        pc = from_config_dump(dump, f"{pod.name}.{pod.namespace}", "sidecar", pod.namespace)
        return render(pc, body["what"], body.get("output", "short"), body.get("name"), dump)

    def proxy_status(self, _body: dict[str, Any]) -> str:
        """Like `istioctl proxy-status`: every proxy, whether it runs the config meshlib last pushed."""
        rows = [("NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION")]
        for pod, status in self.mesh.proxy_status():
            by_type = {t.short_name: t.state(status.version) for t in status.types.values()}
            rows.append((f"{pod.name}.{pod.namespace}", "Kubernetes", by_type.get("CDS", "NOT SENT"),
                         by_type.get("LDS", "NOT SENT"), by_type.get("EDS", "NOT SENT"),
                         by_type.get("RDS", "NOT SENT"), "meshlib", status.version or "-"))
            if status.error:
                rows.append(("", "", "", "", "", "", "", f"rejected: {status.error}"))
        return _table(rows)

    def down(self, _body: dict[str, Any]) -> str:
        self.stop.set()
        return "stopping"


def up(paths: list[str], namespace: str, port: int, istio_version: str | None, detach: bool,
       mesh_config: str | None = None, time_scale: float = 1.0) -> int:
    images = read_mesh_config(mesh_config, announce=lambda line: print(line, flush=True))
    if detach:
        return _detach()
    _refuse_if_running()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalMesh(paths, namespace=namespace, port=port, istio_version=istio_version, images=images,
                   time_scale=time_scale) as mesh:
        h = Handlers(mesh, stop)
        control = ControlServer({"apply": h.apply, "delete": h.delete, "get": h.get, "logs": h.logs,
                                 "proxy-config": h.proxy_config, "proxy-status": h.proxy_status,
                                 "down": h.down})
        url = mesh.call(control.start())
        try:
            write_state({"pid": os.getpid(), "control": url, "token": control.token,
                         "gateway": mesh.gateway_url, "namespace": namespace})
            pods = mesh.pods()
            print(f"mesh up: {len(pods)} pods; ingress gateway on {mesh.gateway_url} "
                  f"(Istio {mesh.store.profile.version} behaviour, Envoy {mesh.envoy.version_text})", flush=True)
            print(f"  try: curl -s -H 'Host: webapp.istioinaction.io' {mesh.gateway_url}/api/catalog", flush=True)
            print("  stop with Ctrl-C or `meshlib down`", flush=True)
            while not stop.wait(0.2):
                pass
        finally:
            clear_state(os.getpid())
            mesh.call(control.close())
    print("mesh down", flush=True)
    return 0


def _refuse_if_running() -> None:
    try:
        state = read_state()
    except MeshlibError:
        return
    try:
        os.kill(state["pid"], 0)
    except (OSError, KeyError):
        state_path().unlink(missing_ok=True)  # stale: the process is gone
        return
    raise MeshlibError(f"a local mesh is already running (pid {state['pid']}, gateway {state.get('gateway')}); "
                       "stop it with `meshlib down` first")


def _detach() -> int:
    """Run this same `meshlib up` command line in the background, in a session of its own."""
    _refuse_if_running()
    cmd = [sys.executable, "-m", "meshlib.cli", *(a for a in sys.argv[1:] if a != "--detach")]
    log = state_path().with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MeshlibError(f"the mesh did not start: {log.read_text().strip()}")
        try:
            state = read_state()
            if state.get("pid") == proc.pid:
                print(f"mesh up in the background (pid {proc.pid}); ingress gateway on {state['gateway']}; "
                      f"log in {log}; stop with `meshlib down`")
                return 0
        except MeshlibError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise MeshlibError(f"the mesh did not start within 30 s; see {log}")


def down(timeout: float = 30) -> int:
    from meshlib.local.control import send

    state = read_state()
    send("down", {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(state["pid"], 0)
        except OSError:
            print("mesh down")
            return 0
        time.sleep(0.1)
    raise MeshlibError(f"the mesh (pid {state['pid']}) did not stop within {timeout:g}s")


__all__ = ["PROXY_CONTAINER", "down", "up"]
