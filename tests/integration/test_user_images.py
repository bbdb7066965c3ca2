"""User images mapped to local commands: served through the mesh, restarted after a crash, gone after close."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from meshlib.errors import ConfigError
from meshlib.local.mesh import LocalMesh
from meshlib.local.process import load_image_map

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
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep}
spec:
  selector: {matchLabels: {app: sleep}}
  template:
    metadata: {labels: {app: sleep}}
    spec:
      containers: [{name: sleep, image: curlimages/curl}]
"""


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
    with LocalMesh([manifests], port=0, images=load_image_map(config)) as mesh:
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
        load_image_map(config)
    assert f"{config}:2" in str(err.value) and "list of strings" in str(err.value)
