"""A user's view of the embedded mesh: HTTP requests over loopback, bounded waits, the walkthrough's files.

Single requests use `http.client` (any Host header, any status without exceptions); batches use aiohttp
with a bounded concurrency and an overall time limit. Every wait here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from meshlib.local.mesh import LocalMesh

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CH5 = MANIFESTS / "ch5"
SERVICES = MANIFESTS / "services"
CATALOG_V1 = SERVICES / "catalog" / "kubernetes" / "catalog.yaml"
CATALOG_V2 = SERVICES / "catalog" / "kubernetes" / "catalog-deployment-v2.yaml"
WEBAPP = SERVICES / "webapp" / "kubernetes" / "webapp.yaml"
FORUM = SERVICES / "forum" / "kubernetes" / "forum-all.yaml"
SLEEP = """\
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


def isolated_env(home: Path) -> dict[str, str]:
    """The environment of a user whose home and mesh state file are `home`'s, so runs never share them."""
    return {**os.environ, "HOME": str(home), "MESHLIB_STATE": str(home / "state" / "mesh.json")}


def behave_project(root: Path, features: Mapping[str, str]) -> Path:
    """A behave project in `root` as a user sets one up: meshlib's steps and environment, and `features`."""
    shutil.copytree(ROOT / "steps", root / "steps")
    shutil.copy(ROOT / "environment.py", root)
    (root / "features").mkdir()
    for name, text in features.items():
        (root / "features" / name).write_text(text)
    return root


def run_behave(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`behave` in `project` with plain output, its manifests folder being the project's."""
    return subprocess.run([sys.executable, "-m", "behave", "-f", "plain", "--no-timings", "--no-capture",
                           "-D", f"manifests={project}", *args], cwd=project, env=isolated_env(project),
                          capture_output=True, text=True, timeout=timeout)

NS = "istioinaction"
WEBAPP_HOST = "webapp.istioinaction.io"
CATALOG_HOST = "catalog.istioinaction.io"
COHORT = {"x-istio-cohort": "internal"}

REQUEST_TIMEOUT = 10.0
BATCH_TIMEOUT = 40.0

T = TypeVar("T")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def has_image(self) -> bool:
        """A catalog v2 answer: some item carries `imageUrl`."""
        return b"imageUrl" in self.body

    def __str__(self) -> str:
        return f"{self.status} {self.text[:200]!r}"


def _port(target: LocalMesh | int) -> int:
    return target if isinstance(target, int) else target.gateway_port


def request(target: LocalMesh | int, path: str, host: str, headers: Mapping[str, str] | None = None,
            method: str = "GET", body: bytes | None = None, timeout: float = REQUEST_TIMEOUT) -> Reply:
    """One request to the ingress gateway (or any loopback port) with the given Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", _port(target), timeout=timeout)
    started = time.monotonic()
    try:
        sent = {"Host": host, **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, data, {k.lower(): v for k, v in resp.getheaders()}, time.monotonic() - started)
    finally:
        conn.close()


def send_many(target: LocalMesh | int, path: str, host: str, count: int, headers: Mapping[str, str] | None = None,
              concurrency: int = 16, timeout: float = BATCH_TIMEOUT) -> list[Reply]:
    """`count` GET requests, at most `concurrency` in flight, all within `timeout` seconds."""
    port = _port(target)
    sent = {"Host": host, **(headers or {})}

    async def run() -> list[Reply]:
        limit = asyncio.Semaphore(concurrency)
        client_timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            async def one() -> Reply:
                async with limit:
                    started = time.monotonic()
                    async with session.get(f"http://127.0.0.1:{port}{path}", headers=sent) as resp:
                        data = await resp.read()
                        return Reply(resp.status, data, {k.lower(): v for k, v in resp.headers.items()},
                                     time.monotonic() - started)

            return await asyncio.gather(*(one() for _ in range(count)))

    async def bounded() -> list[Reply]:
        return await asyncio.wait_for(run(), timeout)

    return asyncio.run(bounded())


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0,
               interval: float = 0.02) -> T:
    """Poll `probe` until `done(value)` or `timeout` seconds; return the last value either way."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


def settle(probe: Callable[[], T], quiet: float = 0.3, timeout: float = 5.0, interval: float = 0.05) -> T:
    """Poll `probe` until its value has not changed for `quiet` seconds (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    value = probe()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(interval)
        new = probe()
        if new != value:
            value, stable_since = new, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return value


def count_lines(mesh: LocalMesh, workload: str, line: str, container: str | None = None) -> int:
    return sum(1 for entry in mesh.logs(workload, NS, container=container) if entry == line)


def pod_names(mesh: LocalMesh, workload: str) -> list[str]:
    return sorted(p.name for p in mesh.find_pods(workload, NS))
