"""Benchmark of the embedded mesh on real Envoy: cold start, throughput and latency per hop, RSS per proxy.

Run: `make bench` or `.venv/bin/python tests/bench/mesh_bench.py [--requests 4000] [--concurrency 16]`.
Prints each figure beside its target (issue 8); asserts nothing. The load comes from a separate process (so
it does not share a Python interpreter with the mesh's apps); all traffic goes to loopback, bounded in count.
Ratios are measured in one run, against the same load. Where `wrk` is installed (Debian's `wrk`), the chain is
also driven by it, for 5 s at the same concurrency: a C load generator leaves the two cores to the mesh, so
that row measures the mesh rather than the Python client.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

from meshlib.local.mesh import LocalMesh

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = [ROOT / "manifests/services", ROOT / "manifests/ch5/webapp-catalog-gw-vs.yaml"]
NS = "istioinaction"
WEBAPP = "webapp.istioinaction.io"


@dataclass(frozen=True)
class Run:
    requests: int
    elapsed: float
    latencies_ms: list[float]
    errors: int
    cpu_seconds: float  # what the load generator itself used

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed

    def q(self, p: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]


async def _load(url: str, host: str | None, requests: int, concurrency: int) -> Run:
    latencies: list[float] = []
    errors = 0
    queue = iter(range(requests))
    headers = {"Host": host} if host else {}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in queue:
            t = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append((time.perf_counter() - t) * 1000)

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Run(requests, elapsed, latencies, errors, cpu)


def _child(args: tuple[str, str | None, int, int]) -> Run:
    return uvloop.run(_load(*args))


def load(url: str, host: str | None, requests: int, concurrency: int) -> Run:
    """Send the requests from a child process (its own interpreter and core)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_child, ((url, host, min(200, requests), concurrency),))  # warm-up: connections, JIT-free paths
        return pool.apply(_child, ((url, host, requests, concurrency),))


@dataclass(frozen=True)
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, host: str, concurrency: int, seconds: int = 5) -> WrkRun | None:
    """The chain driven by wrk (one thread, `concurrency` connections, bounded in time); None without wrk."""
    binary = shutil.which("wrk")
    if binary is None:
        return None
    out = subprocess.run([binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}",
                          url], capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkRun(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
                  _ms(latency["50"]), _ms(latency["99"]), done, int(bad.group(1)) if bad else 0)


def cold_start(runs: int = 5) -> list[float]:
    """Seconds from `LocalMesh(...).start()` to the first 200 through the gateway (the walkthrough's world)."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        with LocalMesh(WALKTHROUGH, namespace=NS, port=0, prometheus=False) as mesh:
            req = urllib.request.Request(f"{mesh.gateway_url}/api/catalog", headers={"Host": WEBAPP})
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            while True:
                try:
                    if opener.open(req, timeout=5).status == 200:
                        break
                except OSError:
                    time.sleep(0.01)
            out.append(time.perf_counter() - t)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(mesh: LocalMesh) -> dict[str, int]:
    """Every process of the mesh by role: each pod's Envoy and app, and meshlib itself."""
    out = {"meshlib and the bench (xDS, mesh loop, results)": os.getpid()}
    for pod in mesh.pods():
        short = pod.workload.name
        if pod.sidecar is not None:
            out[f"{short} Envoy"] = pod.sidecar.envoy.pid
        for i, app in enumerate(pod.apps):
            if app.pid:
                out[f"{short} app" + (f" {i}" if i else "")] = app.pid
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    print(f"machine: {os.cpu_count()} CPUs; {n} requests per row at concurrency {c}; load from a separate process")

    starts = cold_start()
    median = statistics.median(starts)
    print(f"walkthrough cold start to first 200: median {median:.2f} s (max {max(starts):.2f} s) "
          f"— target ≤ 1.5 s: {verdict(median <= 1.5)}")

    with LocalMesh(WALKTHROUGH, namespace=NS, port=0, seed=1, prometheus=False) as mesh:
        catalog = mesh.find_pods("catalog", NS)[0]
        app_host, app_port = catalog.ports[3000]
        procs = processes(mesh)
        before = {name: cpu_seconds(pid) for name, pid in procs.items()}
        rows = {
            "gateway → webapp → catalog": load(f"{mesh.gateway_url}/api/catalog", WEBAPP, n, c),
        }
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in procs.items()}
        rows |= {
            "catalog through its sidecar": load(f"http://{catalog.ip}:3000/items", "catalog.istioinaction", n, c),
            "catalog app alone": load(f"http://{app_host}:{app_port}/items", None, n, c),
        }
        rss = {p.name: rss_mib(p.sidecar.envoy.pid) for p in mesh.pods() if p.sidecar is not None}
        wrk_chain = wrk(f"{mesh.gateway_url}/api/catalog", WEBAPP, c)

    for name, run in rows.items():
        print(f"  {name:<30} {run.rps:7.0f} req/s   p50 {run.q(50):6.2f} ms   p99 {run.q(99):6.2f} ms   "
              f"errors {run.errors}")
    chain, sidecar, alone = rows.values()
    ratio = sidecar.rps / alone.rps
    hop = sidecar.q(50) - alone.q(50)
    print(f"gateway → webapp → catalog at c={c}: {chain.rps:.0f} req/s (aiohttp load) — target ≥ 2000: "
          f"{verdict(chain.rps >= 2000)}")
    if wrk_chain is None:
        print("gateway → webapp → catalog with wrk: not measured (install Debian's wrk for this row)")
    else:
        print(f"gateway → webapp → catalog at c={c} with wrk (5 s, {wrk_chain.requests} requests, "
              f"{wrk_chain.errors} errors): {wrk_chain.rps:.0f} req/s, p50 {wrk_chain.p50_ms:.2f} ms, "
              f"p99 {wrk_chain.p99_ms:.2f} ms — target ≥ 2000: {verdict(wrk_chain.rps >= 2000)}")
    print(f"catalog through its sidecar / app alone: {ratio:.0%} — target ≥ 40%: {verdict(ratio >= 0.4)}")
    print(f"added p50 per proxy hop (sidecar inbound): {hop:.2f} ms — target ≤ 1 ms: {verdict(hop <= 1.0)}")
    per_request = {name: 1000 * sec / (n + min(200, n)) for name, sec in spent.items() if sec > 0}
    per_request["load generator (aiohttp)"] = 1000 * chain.cpu_seconds / n
    total = sum(per_request.values())
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(per_request.items(), key=lambda kv: -kv[1]))
    print(f"CPU per request along gateway → webapp → catalog (ms): {parts}; total {total:.2f} ms, so at most "
          f"{1000 * (os.cpu_count() or 1) / max(total, 1e-9):.0f} req/s on {os.cpu_count()} cores")
    print("RSS per proxy: " + ", ".join(f"{name.rsplit('-', 2)[0]} {mib:.0f} MiB" for name, mib in sorted(rss.items()))
          + f" (median {statistics.median(rss.values()):.0f} MiB)")


if __name__ == "__main__":
    main()
