"""Benchmark of the embedded mesh: cold start, and throughput/latency through the gateway and direct to a pod.

Run: `.venv/bin/python tests/bench/mesh_bench.py [--requests 3000] [--concurrency 32]`. Prints figures;
asserts nothing. All traffic goes to 127.0.0.1 and the request count is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import aiohttp

from meshlib.local.mesh import LocalMesh

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "manifests/services", ROOT / "manifests/ch5/webapp-catalog-gw-vs.yaml"]


async def load(url: str, host: str | None, requests: int, concurrency: int) -> tuple[float, list[float], int]:
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
                if resp.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - t) * 1000)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        started = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, errors


def report(name: str, requests: int, elapsed: float, latencies: list[float], errors: int) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(f"{name:<44} {requests / elapsed:8.0f} req/s   p50 {q[49]:6.2f} ms   p99 {q[98]:6.2f} ms   "
          f"errors {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        with LocalMesh(MANIFESTS, namespace="istioinaction", port=0):
            starts.append((time.perf_counter() - t) * 1000)
    print(f"cold start (4 workloads + gateway, 5 runs): median {statistics.median(starts):.0f} ms, "
          f"max {max(starts):.0f} ms")
    with LocalMesh(MANIFESTS, namespace="istioinaction", port=0, seed=1) as mesh:
        gw = f"{mesh.gateway_url}/api/catalog"
        pod = mesh.find_pods("catalog", "istioinaction")[0]
        direct = f"http://127.0.0.1:{pod.ports[3000]}/items"
        sidecar = f"http://127.0.0.1:{pod.sidecar.inbound_ports[3000]}/items"
        n, c = args.requests, args.concurrency
        asyncio.run(load(gw, "webapp.istioinaction.io", 200, c))  # warm-up
        report(f"gateway -> webapp -> catalog (c={c})", n, *asyncio.run(load(gw, "webapp.istioinaction.io", n, c)))
        report(f"catalog pod via its sidecar inbound (c={c})", n,
               *asyncio.run(load(sidecar, "catalog.istioinaction", n, c)))
        report(f"catalog app directly (c={c})", n, *asyncio.run(load(direct, None, n, c)))


if __name__ == "__main__":
    main()
