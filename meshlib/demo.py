"""`make demo`: the walkthrough of Istio in Action chapter 5 on the embedded mesh, with a summary.

Until the behave features land (issue 4) this runs the seed's checks as a script: each step applies the
chapter's manifests to one running mesh, sends real requests over loopback and checks what a user sees.
The summary goes to stdout and to reports/demo-summary.json.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from meshlib.errors import MeshlibError
from meshlib.local.mesh import LocalMesh
from meshlib.stats import binomial_check

ROOT = Path.cwd()
NS = "istioinaction"
M = ROOT / "manifests"


def get(mesh: LocalMesh, host: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(mesh.gateway_url + path, headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def walkthrough(mesh: LocalMesh) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, seen: str) -> None:
        results.append((name, ok, seen))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {seen}", flush=True)

    webapp = "webapp.istioinaction.io"
    catalog = "catalog.istioinaction.io"
    mesh.apply([M / "ch5/catalog-gateway.yaml", M / "ch5/catalog-vs.yaml"])
    status, body = get(mesh, catalog, "/items")
    check("5.2.2 the gateway routes catalog.istioinaction.io to catalog", status == 200 and '"id"' in body,
          f"HTTP {status}")
    mesh.apply([M / "ch5/catalog-dest-rule.yaml", M / "ch5/catalog-vs-v1.yaml"])
    v2 = sum("imageUrl" in get(mesh, catalog, "/items")[1] for _ in range(50))
    check("5.2.4 all traffic goes to catalog v1", v2 == 0, f"{v2} of 50 responses had imageUrl")
    mesh.apply([M / "ch5/catalog-vs-v2-request.yaml"])
    ok = "imageUrl" in get(mesh, catalog, "/items", {"x-istio-cohort": "internal"})[1]
    plain = "imageUrl" in get(mesh, catalog, "/items")[1]
    check("5.2.5 x-istio-cohort: internal reaches v2 at the gateway", ok and not plain,
          f"with header v2={ok}, without header v2={plain}")
    mesh.apply([M / "ch5/catalog-vs-v2-request-mesh.yaml"])
    ok = "imageUrl" in get(mesh, webapp, "/api/catalog", {"x-istio-cohort": "internal"})[1]
    plain = "imageUrl" in get(mesh, webapp, "/api/catalog")[1]
    check("5.2.6 the header routes to v2 deep in the call graph (webapp -> catalog)", ok and not plain,
          f"with header v2={ok}, without header v2={plain}")
    mesh.apply([M / "ch5/catalog-vs-v2-10-90-mesh.yaml"])
    n = 500
    v2 = sum("imageUrl" in get(mesh, webapp, "/api/catalog")[1] for _ in range(n))
    verdict = binomial_check(v2, n, 0.10)
    check("5.3 about 10% of requests reach v2 (90/10 split)", verdict.passed,
          f"{v2}/{n} = {v2 / n:.1%}, p-value {verdict.p_value:.3f} (exact binomial test, alpha {verdict.alpha})")
    mesh.apply([M / "ch5/catalog-vs-v2-mirror.yaml"])
    before = len(mesh.logs("catalog-v2", NS))
    seen = sum("imageUrl" in get(mesh, webapp, "/api/catalog")[1] for _ in range(100))
    mirrored = wait_for(lambda: sum("-shadow" in line for line in mesh.logs("catalog-v2", NS)[before:]) >= 100)
    shadow = sum("-shadow" in line for line in mesh.logs("catalog-v2", NS)[before:])
    check("5.4 mirrored traffic never reaches clients and v2 logs show -shadow", seen == 0 and mirrored,
          f"{seen} client responses with imageUrl; {shadow} '-shadow' requests in catalog-v2's log")
    status, _ = get(mesh, webapp, "/api/users")
    mesh.apply([M / "ch5/mesh-registry-only.yaml"])
    blocked, body = get(mesh, webapp, "/api/users")
    mesh.apply([M / "ch5/forum-serviceentry.yaml"])
    allowed, _ = get(mesh, webapp, "/api/users")
    check("5.5 REGISTRY_ONLY blocks jsonplaceholder; a ServiceEntry allows it",
          status == 200 and blocked == 500 and "error calling Forum service" in body and allowed == 200,
          f"ALLOW_ANY {status}, REGISTRY_ONLY {blocked} ({body.strip()}), with ServiceEntry {allowed}")
    return results


def main() -> int:
    print("meshlib demo: Istio in Action chapter 5 on the embedded mesh (no behave features yet: issue 4)")
    started = time.monotonic()
    try:
        with LocalMesh([M / "services", M / "ch5/webapp-catalog-gw-vs.yaml"], namespace=NS, port=0, seed=7) as mesh:
            print(f"mesh up in {time.monotonic() - started:.2f}s, gateway {mesh.gateway_url}")
            results = walkthrough(mesh)
    except MeshlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    passed = sum(ok for _, ok, _ in results)
    out = ROOT / "reports" / "demo-summary.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([{"check": n, "passed": ok, "seen": s} for n, ok, s in results], indent=2))
    print(f"\n{passed} passed, {len(results) - passed} failed in {time.monotonic() - started:.1f}s; "
          f"summary in {out.relative_to(ROOT)}")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
