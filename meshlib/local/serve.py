"""`meshlib up`: run a LocalMesh in the foreground (or detached) with its control channel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from meshlib.config import listing
from meshlib.config.loader import STDIN
from meshlib.errors import MeshlibError
from meshlib.explain import proxy_workload_ref
from meshlib.local.control import ControlServer, clear_state, read_state, state_path, write_state
from meshlib.local.mesh import PROXY_CONTAINER, LocalMesh
from meshlib.local.meshconfig import read_mesh_config
from meshlib.xds.dialect import from_config_dump, render

_table = listing.table
OUTPUTS = ("table", "json", "yaml")


def guarded(name: str, handler: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """`handler` whose unexpected failures still answer the CLI with one line (never a bare HTTP 500); the
    traceback goes to the mesh's own output, for the bug report."""

    def run(body: dict[str, Any]) -> Any:
        if not isinstance(body, dict):
            raise MeshlibError(f"{name}: the request must be a JSON object")
        try:
            return handler(body)
        except MeshlibError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            traceback.print_exc()
            raise MeshlibError(f"{name}: the mesh could not handle this request ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}); see the mesh's output for details") from None
        except Exception as exc:
            traceback.print_exc()
            raise MeshlibError(f"{name} failed inside the mesh ({type(exc).__name__}: {' '.join(str(exc).split())})"
                               "; this is a meshlib bug, the mesh's output has the details") from None

    return run


class Handlers:
    """Blocking functions the control channel calls, one per CLI command."""

    def __init__(self, mesh: LocalMesh, stop: threading.Event) -> None:
        self.mesh, self.stop, self.started = mesh, stop, time.time()

    def apply(self, body: dict[str, Any]) -> str:
        """All or nothing: every document is validated before anything is stored (`LocalMesh.apply`)."""
        res = self.mesh.apply(body.get("paths") or [], body.get("namespace"), text=body.get("text"),
                              text_name=STDIN)
        lines = [f"{r.kind.lower()}/{r.name} configured" for r in res]
        note = listing.not_modelled_line(res)
        return "\n".join(lines + ([note] if note else []))

    def delete(self, body: dict[str, Any]) -> str:
        res = self.mesh.delete(body.get("paths") or [], body.get("namespace"), text=body.get("text"),
                               text_name=STDIN)
        return "\n".join(f'{r.kind.lower()} "{r.name}" deleted' for r in res) or "nothing to delete"

    def get(self, body: dict[str, Any]) -> str | list[dict[str, Any]]:
        """A table, or (`output` json or yaml) a list of objects the CLI prints in that format."""
        what, ns = str(body["what"]).lower(), body.get("namespace") or self.mesh.namespace
        output = body.get("output") or "table"
        if output not in OUTPUTS:
            raise MeshlibError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
        if output != "table" and what not in ("pods", "pod", "po"):
            return listing.as_data(listing.resources(self.mesh.store, what, ns))
        if what in ("pods", "pod", "po"):
            rows = [("NAME", "READY", "STATUS", "RESTARTS", "AGE")]
            for p in self.mesh.pods(ns):
                containers = len(p.logs) or 1
                ready = containers if p.ready else containers - 1
                rows.append((p.name, f"{ready}/{containers}", "Running" if p.ready else "Pending", "0",
                             f"{int(time.time() - self.started)}s"))
            if output != "table":
                return [dict(zip(("name", "ready", "status", "restarts", "age"), r, strict=True)) for r in rows[1:]]
            return _table(rows) if len(rows) > 1 else f"No resources found in {ns} namespace."
        kind = listing.kind_for(what, self.mesh.store)
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
        rows = listing.as_rows(listing.resources(self.mesh.store, what, ns), what)
        return _table(rows) if len(rows) > 1 else f"No resources found in {ns} namespace."

    def logs(self, body: dict[str, Any]) -> str:
        name, ns = proxy_workload_ref(body["target"], body.get("namespace") or self.mesh.namespace)
        lines = self.mesh.logs(name, ns, body.get("container"))
        tail = body.get("tail")
        if tail is not None and (not isinstance(tail, int) or tail < 0):
            raise MeshlibError(f"--tail must be 0 or more, got {tail!r}")
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
    config = read_mesh_config(mesh_config, announce=lambda line: print(line, flush=True))
    if detach:
        return _detach()
    _refuse_if_running()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalMesh(paths, namespace=namespace, port=port, istio_version=istio_version, config=config,
                   time_scale=time_scale) as mesh:
        h = Handlers(mesh, stop)
        handlers = {"apply": h.apply, "delete": h.delete, "get": h.get, "logs": h.logs,
                    "proxy-config": h.proxy_config, "proxy-status": h.proxy_status, "down": h.down}
        control = ControlServer({name: guarded(name, fn) for name, fn in handlers.items()})
        url = mesh.call(control.start())
        try:
            write_state({"pid": os.getpid(), "control": url, "token": control.token,
                         "gateway": mesh.gateway_url, "namespace": namespace})
            pods = mesh.pods()
            print(f"mesh up: {len(pods)} pods; ingress gateway on {mesh.gateway_url} "
                  f"(Istio {mesh.store.profile.version} behaviour, Envoy {mesh.envoy.version_text})", flush=True)
            print(f"  try: curl -s -H 'Host: webapp.istioinaction.io' {mesh.gateway_url}/api/catalog", flush=True)
            note = listing.not_modelled_line(mesh.store.not_modelled())
            if note:
                print(f"  {note}", flush=True)
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
    pid = state.get("pid") if isinstance(state, dict) else None
    try:
        if not isinstance(pid, int) or pid <= 0:
            raise OSError("no pid")
        os.kill(pid, 0)
    except OSError:
        state_path().unlink(missing_ok=True)  # stale or damaged: no running mesh wrote it
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
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "it exited without a message"
            raise MeshlibError(f"the mesh did not start: {last.removeprefix('error: ')} (full output in {log})")
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

    state = checked_state()
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


def checked_state() -> dict[str, Any]:
    """The state file of the running mesh, refused in one line when it is damaged (empty, not an object,
    missing the pid, control URL or token)."""
    state = read_state()
    if (not isinstance(state, dict) or not isinstance(state.get("pid"), int)
            or not isinstance(state.get("control"), str) or not isinstance(state.get("token"), str)):
        raise MeshlibError(f"the mesh state file {state_path()} is damaged (it needs pid, control and token); "
                           "remove it and run `meshlib up` again")
    return state


__all__ = ["PROXY_CONTAINER", "checked_state", "down", "up"]
