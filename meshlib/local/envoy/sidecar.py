"""One pod's proxy: its Envoy process, its request records and its merged metrics endpoint (:15020).

The same class runs a sidecar and the ingress gateway; what differs is the config meshlib pushes over xDS.
Like pilot-agent on :15020, the metrics endpoint serves Istio's standard metrics (derived from the records
Envoy writes, `meshlib.local.envoy.records`) followed by Envoy's own stats, so Prometheus sees both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

from meshlib.local.envoy.binary import EnvoyBinary
from meshlib.local.envoy.process import EnvoyProcess, bootstrap
from meshlib.local.envoy.records import Ledger, PodRecords, Resolver
from meshlib.local.logs import LogBuffer
from meshlib.local.metrics import Peer
from meshlib.xds.bind import CAPTURE_STAT_PREFIX

ADMIN_PORT = 15000
CAPTURE_PORT = 15001
AGENT_PORT = 15020  # pilot-agent's merged metrics
METRICS_PATH = "/stats/prometheus"
BEGUN = re.compile(r"^http\.(.+)\.downstream_rq_total$")
RECORDLESS = frozenset({"admin", CAPTURE_STAT_PREFIX})  # connection managers without meshlib's record log


def node_id(kind: str, ip: str, pod: str, namespace: str) -> str:
    """Istio's node id: `sidecar~10.0.0.5~webapp-7d…-x.istioinaction~istioinaction.svc.cluster.local`."""
    return f"{'router' if kind == 'gateway' else 'sidecar'}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


class PodProxy:
    """A pod's Envoy plus what pilot-agent adds: merged metrics; records read lazily, never per request."""

    def __init__(self, binary: EnvoyBinary, *, kind: str, ip: str, pod: str, namespace: str, peer: Peer,
                 log: LogBuffer, workdir: Path, xds: tuple[str, int], resolver: Resolver,
                 ledger: Ledger) -> None:
        self.kind = kind
        self.ip = ip
        self.pod = pod
        self.namespace = namespace
        self.node_id = node_id(kind, ip, pod, namespace)
        self.records_path = workdir / f"{pod}.records.jsonl"
        self.records = PodRecords(self.records_path, pod, peer, ledger, gateway=kind == "gateway")
        self.resolver = resolver
        labels = {"NAME": pod, "NAMESPACE": namespace, "WORKLOAD_NAME": peer.workload,
                  "LABELS": {"app": peer.app, "version": peer.version}}
        self.envoy = EnvoyProcess(binary, bootstrap(self.node_id, f"{peer.workload}.{namespace}", (ip, ADMIN_PORT),
                                                    xds, ip, labels), pod, log.write)
        self._agent: web.AppRunner | None = None

    @property
    def outbound_url(self) -> str:
        """Where the pod's apps send outbound requests (their HTTP_PROXY): the capture listener."""
        return f"http://{self.ip}:{CAPTURE_PORT}"

    @property
    def metrics_address(self) -> str:
        return f"{self.ip}:{AGENT_PORT}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._agent = runner
        await web.TCPSite(runner, self.ip, AGENT_PORT).start()
        await self.envoy.start()

    async def close(self) -> None:
        try:
            await self.envoy.close()
        finally:
            self.records.close()
            if self._agent is not None:
                await self._agent.cleanup()
                self._agent = None

    def refresh(self) -> int:
        """Read the records Envoy wrote since the last call into metrics and the ledger; how many there were."""
        return self.records.refresh(self.resolver)

    async def requests_begun(self) -> int:
        """How many requests this Envoy's record-writing connection managers have begun (`downstream_rq_total`):
        each ends in exactly one record, written when the request ends and flushed every flush interval."""
        counters = await self.envoy.counters(BEGUN.pattern)
        return sum(value for name, value in counters.items()
                   if (m := BEGUN.match(name)) is not None and m.group(1) not in RECORDLESS)

    @property
    def records_read(self) -> int:
        """Record lines read so far (well-formed or not)."""
        return self.records.records + self.records.malformed

    def istio_metrics(self) -> bytes:
        self.refresh()
        return self.records.exposition()

    async def metrics_text(self) -> str:
        """Istio's standard metrics and Envoy's own stats, as Prometheus scrapes them from :15020."""
        return self.istio_metrics().decode() + await self.envoy.stats_prometheus()

    async def config_dump(self) -> dict[str, Any]:
        return await self.envoy.config_dump()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=await self.metrics_text(), content_type="text/plain")
