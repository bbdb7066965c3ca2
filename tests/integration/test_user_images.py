"""User images mapped to local commands: served through the mesh, restarted after a crash, gone after close."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from meshclient import SLEEP, behave_project, isolated_env, run_behave

from meshlib.errors import ConfigError
from meshlib.local.mesh import LocalMesh
from meshlib.local.meshconfig import MeshConfig, load_mesh_config, read_mesh_config

APP = textwrap.dedent("""
    import http.server, os
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/crash":
                os._exit(3)
            body = b'{"from": "user image"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            print("served", self.path, flush=True)
        def log_message(self, *args):
            pass
    print("listening, proxy", os.environ["HTTP_PROXY"], flush=True)
    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
""")
MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: orders}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      containers: [{name: orders, image: example/orders:1.0, ports: [{containerPort: 8080}]}]
---
""" + SLEEP


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "m.yaml").write_text(MANIFESTS)
    config = tmp_path / "meshlib.yaml"
    config.write_text(f'images:\n  example/orders:\n    command: ["{sys.executable}", "{tmp_path / "app.py"}"]\n')
    return tmp_path / "m.yaml", config


def curl(mesh: LocalMesh, path: str) -> int:
    pod = mesh.find_pods("sleep")[0]
    host, port = pod.ports[80]
    req = urllib.request.Request(f"http://{host}:{port}/__meshlib/curl",
                                 data=json.dumps({"url": f"http://orders.default{path}"}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())[0]["status"]


def test_user_image_serves_through_the_mesh_and_restarts_after_a_crash(files: tuple[Path, Path]) -> None:
    manifests, config = files
    with LocalMesh([manifests], port=0, config=load_mesh_config(config)) as mesh:
        assert curl(mesh, "/first") == 200
        curl(mesh, "/crash")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and curl(mesh, "/again") != 200:
            time.sleep(0.1)
        # the command prints "served …" after it answers: wait (bounded) for the line to reach the log
        while time.monotonic() < deadline and "served /again" not in mesh.logs("orders"):
            time.sleep(0.05)
        logs = mesh.logs("orders")
        pid_lines = [line for line in logs if line.startswith("listening")]
        assert "served /first" in logs and "served /again" in logs
        assert any("exited with code 3" in line and "restartPolicy Always" in line for line in logs)
        assert len(pid_lines) >= 2, logs
    leftover = subprocess.run(["pgrep", "-f", str(manifests.parent / "app.py")], capture_output=True, text=True)
    assert leftover.stdout == "", "the user command is still running after close()"


def test_unmapped_image_names_the_line_and_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFESTS)
    with pytest.raises(ConfigError) as err:
        LocalMesh([tmp_path / "m.yaml"], port=0).start()
    message = str(err.value)
    assert f"{tmp_path / 'm.yaml'}:" in message and "example/orders" in message and "meshlib.yaml" in message


def test_bad_mesh_config_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "meshlib.yaml"
    config.write_text("images:\n  example/orders:\n    command: python app.py\n")
    with pytest.raises(ConfigError) as err:
        load_mesh_config(config)
    assert f"{config}:2" in str(err.value) and "list of strings" in str(err.value)


# --- a mesh config runs commands only when the run names it ----------------------------------------
FEATURE = """\
Feature: a user image
  Scenario: orders answers through the mesh
    Given the manifest "m.yaml" is applied
    When 3 requests are sent from sleep to http://orders.default/hello
    Then every response has status 200
    And every response body contains "user image"
"""


def _meshlib(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "meshlib.cli", "up", "-f", "m.yaml", "--port", "0", *args],
                            cwd=tmp_path, env=isolated_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_read_mesh_config_reads_only_a_named_file(files: tuple[Path, Path], monkeypatch) -> None:
    manifests, config = files
    monkeypatch.chdir(config.parent)  # a meshlib.yaml in the current directory
    assert read_mesh_config(None) == MeshConfig()
    assert read_mesh_config("") == MeshConfig()
    seen: list[str] = []
    images = read_mesh_config(config, announce=seen.append).images
    assert list(images) == ["example/orders"]
    assert seen == [f"mesh config {config}: image example/orders runs {sys.executable} {config.parent / 'app.py'}"]


def test_meshlib_up_ignores_a_meshlib_yaml_it_was_not_given(files: tuple[Path, Path]) -> None:
    manifests, config = files
    proc = _meshlib(config.parent)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, out + err
    assert "mesh up" not in out and "runs" not in out
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "'example/orders:1.0' has no builtin app" in err and "map it to a local command" in err
    assert "--mesh-config" in err


def test_meshlib_up_with_mesh_config_prints_the_mapping_and_runs_it(files: tuple[Path, Path]) -> None:
    manifests, config = files
    proc = _meshlib(config.parent, "--mesh-config", "meshlib.yaml")
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("mesh up"):
                break
        assert lines and lines[-1].startswith("mesh up: 3 pods"), lines + [proc.stderr.read() if proc.poll() else ""]
        assert lines[0] == (f"mesh config meshlib.yaml: image example/orders runs "
                            f"{sys.executable} {config.parent / 'app.py'}")
        down = subprocess.run([sys.executable, "-m", "meshlib.cli", "get", "pods"], cwd=config.parent,
                              env=isolated_env(config.parent), capture_output=True, text=True, timeout=30)
        assert down.returncode == 0 and "orders-" in down.stdout, down.stdout + down.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0


@pytest.fixture
def project(files: tuple[Path, Path]) -> Path:
    """A behave project beside the manifests and a meshlib.yaml: meshlib's steps, one feature."""
    return behave_project(files[1].parent, {"orders.feature": FEATURE})


def test_behave_runs_a_user_image_with_mesh_config(project: Path) -> None:
    run = run_behave(project, "-D", "mesh_config=meshlib.yaml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 scenario passed, 0 failed" in run.stdout
    mapping = f"mesh config meshlib.yaml: image example/orders runs {sys.executable} {project / 'app.py'}"
    assert run.stderr.count(mapping) == 1, run.stderr


def test_behave_ignores_a_meshlib_yaml_it_was_not_given(project: Path) -> None:
    run = run_behave(project)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "'example/orders:1.0' has no builtin app" in out and "map it to a local command" in out, out[-3000:]
    assert "mesh config" not in run.stderr
