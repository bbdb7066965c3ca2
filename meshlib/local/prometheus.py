"""A real Prometheus for the embedded mesh: the `prometheus` binary on loopback, scraping every proxy.

    with PrometheusServer(scrape_interval=1.0) as prom:
        prom.start([ScrapeTarget("127.0.0.1:41234", {"namespace": "istioinaction", "pod": "catalog-…"})])
        prom.query_scalar('sum(istio_requests_total{reporter="destination"})')

It runs as its own process (`--web.listen-address=127.0.0.1:PORT`, a fresh temp dir for its config and TSDB),
so a packaged Prometheus service on :9090 is never used nor disturbed. Targets are a `file_sd_configs` JSON
file that `update_targets()` rewrites atomically; each target carries the labels a Kubernetes pod scrape
gives (`namespace`, `pod` and the pod's labels, e.g. `app`, `version`).

Prometheus itself throttles target changes: its discovery and scrape managers each apply updates at most
every 5 s, so a new target is scraped 0–10 s after it was written (`wait_for_targets()` waits for that).
`close()` stops the process (SIGTERM, then SIGKILL) and removes the temp dir; it also runs at interpreter
exit for a server that was never closed. Its lifecycle and admin HTTP endpoints are off. If the process dies,
the next query says so (`PrometheusExited`: pid, exit status, the end of its log), not "connection refused".
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from meshlib.errors import MeshlibError
from meshlib.local.children import die_with_parent
from meshlib.local.logs import LogBuffer
from meshlib.local.process import free_port
from meshlib.local.tempdirs import owned_dir

BINARY = "prometheus"
INSTALL_HINT = "install Debian's prometheus package (apt-get install prometheus) to run PromQL steps"
JOB = "kubernetes-pods"
METRICS_PATH = "/stats/prometheus"
TARGETS_FILE = "targets.json"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 10.0
POLL = 0.05
PORT_ATTEMPTS = 3

Labels = dict[str, str]
Sample = tuple[Labels, float]


class PrometheusUnavailable(MeshlibError):
    """No `prometheus` binary (or the mesh was started without one): PromQL cannot run."""

    def __init__(self, detail: str = "", hint: str = INSTALL_HINT) -> None:
        lead = detail or f"no `{BINARY}` binary on PATH"
        super().__init__(f"{lead}: {hint}")


class PromQLError(MeshlibError):
    """Prometheus rejected a query (or could not be asked): carries the PromQL and Prometheus's message."""

    def __init__(self, query: str, message: str) -> None:
        self.query = query
        self.message = message
        super().__init__(f"PromQL {query!r} failed: {message}")


class PrometheusExited(PromQLError):
    """The mesh's Prometheus process is gone: says its pid, exit status and last log lines (not a refused
    connection)."""

    def __init__(self, message: str, query: str | None = None) -> None:
        self.query = query or ""
        self.message = message
        MeshlibError.__init__(self, f"cannot run PromQL {query!r}: {message}" if query else message)

    def for_query(self, query: str) -> PrometheusExited:
        return PrometheusExited(self.message, query)


@dataclass(frozen=True)
class ScrapeTarget:
    """One proxy's admin endpoint (`host:port`) and the labels Prometheus attaches to its series."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


# --- configuration (pure) -------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """A Prometheus duration in whole seconds (`1s`) or else milliseconds (`250ms`)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a Prometheus duration must be positive, got {seconds!r} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def label_name(key: str) -> str:
    """A Kubernetes label key as Prometheus's `labelmap` on `__meta_kubernetes_pod_label_*` names it."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return f"_{name}" if name[:1].isdigit() else name


def prometheus_config(targets_file: str | Path, scrape_interval: float = 1.0, job: str = JOB) -> dict[str, Any]:
    """The whole prometheus.yml: one pod-scrape job over a `file_sd_configs` file, Envoy's stats path."""
    interval = duration(scrape_interval)
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": job,
            "metrics_path": METRICS_PATH,
            "scheme": "http",
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "honor_labels": False,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
        }],
    }


def render_config(targets_file: str | Path, scrape_interval: float = 1.0, job: str = JOB) -> str:
    return yaml.safe_dump(prometheus_config(targets_file, scrape_interval, job), sort_keys=False)


def target_groups(targets: Iterable[ScrapeTarget]) -> list[dict[str, Any]]:
    """The file_sd JSON: one group per target (its labels are per pod), in a stable order."""
    groups = []
    for t in sorted(targets, key=lambda t: t.address):
        labels = {label_name(k): str(v) for k, v in sorted(t.labels.items())}
        groups.append({"targets": [t.address], "labels": labels})
    return groups


# --- the server -----------------------------------------------------------------------------------
_LIVE: set[PrometheusServer] = set()
_LIVE_LOCK = threading.Lock()


def _close_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_close_all)


def find_binary(binary: str = BINARY) -> str:
    """The path of `prometheus`, or PrometheusUnavailable with the install hint."""
    path = shutil.which(binary)
    if path is None:
        raise PrometheusUnavailable()
    return path


class PrometheusServer:
    """The `prometheus` binary on 127.0.0.1 with its own port, config and TSDB in a temp dir."""

    def __init__(self, scrape_interval: float = 1.0, start_timeout: float = START_TIMEOUT,
                 binary: str | None = None) -> None:
        duration(scrape_interval)  # validate early
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.binary = binary
        self._log = LogBuffer()  # Prometheus's own stdout and stderr, read from its log file on demand
        self._log_offset = 0
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.time() when it answered /-/ready
        self._targets: list[ScrapeTarget] = []
        self._lock = threading.RLock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP(S)_PROXY

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> LogBuffer:
        """Prometheus's output so far (kept after close(), for diagnostics)."""
        self._drain_log()
        return self._log

    @property
    def targets_file(self) -> Path:
        assert self.dir is not None
        return self.dir / TARGETS_FILE

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self, targets: Iterable[ScrapeTarget] = (), wait_for_targets: bool = True) -> PrometheusServer:
        """Start Prometheus and wait (bounded) until it is ready and, unless told not to, every target is up.

        On any failure, also KeyboardInterrupt, the process is stopped and the temp dir removed."""
        if self.process is not None:
            return self
        binary = find_binary(self.binary or BINARY)
        deadline = time.monotonic() + self.start_timeout
        try:
            self.dir = owned_dir("prometheus")
            (self.dir / "data").mkdir()
            self.update_targets(targets)
            config = self.dir / "prometheus.yml"
            config.write_text(render_config(self.targets_file, self.scrape_interval), encoding="utf-8")
            with _LIVE_LOCK:
                _LIVE.add(self)
            for attempt in range(PORT_ATTEMPTS):
                self._spawn(binary, config)
                if self._wait_ready(deadline):
                    break
                if attempt == PORT_ATTEMPTS - 1 or not self._port_taken():
                    raise MeshlibError(f"prometheus exited with code {self.process.returncode} while starting; "
                                       f"its log ends: {self._tail()}")
                self._reap()  # lost a race for the free port: try another one
            self.started_at = time.time()
            if wait_for_targets:
                self.wait_for_targets(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, binary: str, config: Path) -> None:
        assert self.dir is not None
        self.port = free_port()
        # no --web.enable-lifecycle nor --web.enable-admin-api: no one can stop, reload or wipe it over HTTP
        # (meshlib rewrites the targets file instead: file_sd notices by itself)
        args = [binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
                "--log.level=info"]
        self._drain_log()
        self._log.write(f"meshlib: starting {' '.join(args)}")
        # output to a file (no pipe to fill, no reader thread); its own session: a Ctrl-C reaches only us,
        # and close() stops it in order
        with open(self._log_path, "ab") as out:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=self.dir, start_new_session=True, preexec_fn=die_with_parent)

    @property
    def _log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "prometheus.log"

    def _drain_log(self, final: bool = False) -> None:
        """Move the lines Prometheus wrote since the last call into the log buffer (complete ones unless final)."""
        with self._lock:
            if self.dir is None or not self._log_path.exists():
                return
            with open(self._log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
            end = len(data) if final else data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                self._log.write(line.decode("utf-8", "replace"))
            self._log_offset += end

    def _wait_ready(self, deadline: float) -> bool:
        """True once /-/ready answers 200; False if the process exits first; MeshlibError past the deadline."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                with self._opener.open(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            time.sleep(POLL)
        raise MeshlibError(f"prometheus did not become ready on {self.url} within {self.start_timeout:g}s; "
                           f"its log ends: {self._tail()}")

    def exit_error(self, query: str | None = None) -> PrometheusExited | None:
        """None while Prometheus runs (or before it started); else the error that says it died, how, and
        the end of its log."""
        proc = self.process
        if proc is None or proc.poll() is None:
            return None
        code = proc.returncode
        status = str(code)
        if code < 0:
            with contextlib.suppress(ValueError):
                status += f" (killed by {signal.Signals(-code).name})"
        tail = " | ".join(line[:300] for line in self.log.read(tail=3)) or "no output"
        return PrometheusExited(f"the mesh's Prometheus (pid {proc.pid}) exited with status {status}; "
                                f"its log: {tail}", query)

    def _port_taken(self) -> bool:
        return any("address already in use" in line for line in self.log.read(tail=20))

    def _tail(self, lines: int = 5) -> str:
        return " | ".join(self.log.read(tail=lines)) or "no output"

    def _reap(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop Prometheus (SIGTERM, SIGKILL after 5 s) and remove its temp dir. Idempotent."""
        with self._lock:
            try:
                self._reap()
            finally:
                with contextlib.suppress(OSError):
                    self._drain_log(final=True)
                if self.dir is not None:
                    shutil.rmtree(self.dir, ignore_errors=True)
                    self.dir = None
                with _LIVE_LOCK:
                    _LIVE.discard(self)

    # --- targets ----------------------------------------------------------------------------------
    def update_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Rewrite the file_sd file atomically (Prometheus notices the rename at once, applies it within ~10 s)."""
        self._targets = list(targets)
        if self.dir is None:
            return
        tmp = self.dir / f".{TARGETS_FILE}.tmp"
        tmp.write_text(json.dumps(target_groups(self._targets), indent=1), encoding="utf-8")
        os.replace(tmp, self.targets_file)

    @property
    def targets(self) -> list[ScrapeTarget]:
        return list(self._targets)

    def active_targets(self) -> list[dict[str, Any]]:
        """Prometheus's view: /api/v1/targets `activeTargets` (labels, health, lastScrape, lastError…)."""
        data = self._get("/api/v1/targets", {"state": "active"}, what="targets")
        return list(data.get("activeTargets") or [])

    def wait_for_targets(self, timeout: float = START_TIMEOUT, scraped_after: float | None = None) -> None:
        """Wait until Prometheus scrapes exactly the current targets and each is `up` — and, with
        `scraped_after` (a time.time()), until each was scraped after that moment."""
        deadline = time.monotonic() + timeout
        while True:
            wanted = {t.address for t in self._targets}
            active = {t.get("labels", {}).get("__address__") or t.get("discoveredLabels", {}).get("__address__"):
                      t for t in self.active_targets()}
            pending = sorted(wanted ^ set(active))
            down = sorted(a for a in wanted & set(active) if active[a].get("health") != "up")
            since = scraped_after if scraped_after is not None else 0.0
            stale = sorted(a for a in wanted & set(active) if scraped_at(active[a]) <= since)
            if not (pending or down or stale):
                if wanted:
                    stored = stored_scrapes(self.query(stored_up_query(active[a] for a in wanted)))
                    stale = sorted(a for a in wanted if stored.get(target_key(active[a]), 0.0) <= since)
                if not stale:
                    return
            if time.monotonic() >= deadline:
                details = [f"not yet in Prometheus's targets (or no longer wanted): {', '.join(pending)}"] \
                    if pending else []
                details += [f"{a} is {active[a].get('health')} ({active[a].get('lastError') or 'not scraped yet'})"
                            for a in down]
                if stale:
                    details.append(f"no stored scrape since the wait began: {', '.join(stale)}")
                raise MeshlibError(f"prometheus on {self.url} did not scrape every mesh proxy within {timeout:g}s: "
                                   + "; ".join(details))
            time.sleep(POLL * 2)

    def sync(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until everything the proxies counted before this call is in Prometheus (one fresh scrape)."""
        self.wait_for_targets(timeout, scraped_after=time.time())

    # --- queries ----------------------------------------------------------------------------------
    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """An instant query: `(labels, value)` per series (a scalar result is one sample with no labels)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return instant_samples(promql, self._get("/api/v1/query", params, query=promql))

    def query_scalar(self, promql: str, at: float | None = None) -> float | None:
        """The one value of `promql`; None when it has no series or is NaN (Flagger's "no values found")."""
        samples = self.query(promql, at)
        if not samples:
            return None
        if len(samples) > 1:
            shown = ", ".join(_series(labels) for labels, _ in samples[:3])
            raise PromQLError(promql, f"it returns {len(samples)} series ({shown}…), not one value: "
                                      "aggregate it, e.g. sum(...)")
        value = samples[0][1]
        return None if math.isnan(value) else value

    def _get(self, path: str, params: dict[str, str], query: str | None = None, what: str = "") -> dict[str, Any]:
        subject = query if query is not None else what
        dead = self.exit_error(query)
        if dead is not None:
            raise dead
        if not self.running:
            raise PrometheusUnavailable(f"prometheus is not running (asked for {subject!r})")
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with self._opener.open(url, timeout=HTTP_TIMEOUT) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {"status": "error", "error": f"HTTP {exc.code} {exc.reason}"}
            finally:
                exc.close()
        except (OSError, ValueError) as exc:
            dead = self._exited_meanwhile(query)
            if dead is not None:
                raise dead from None
            raise PromQLError(subject, f"cannot reach prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            message = f"{body.get('errorType', 'error')}: {body.get('error', 'no message')}"
            raise PromQLError(subject, message)
        return body.get("data") or {}

    def _exited_meanwhile(self, query: str | None, grace: float = 1.0) -> PrometheusExited | None:
        """After a failed request: the exit error if the process died around it (a dying process may close
        its socket a moment before it can be reaped)."""
        proc = self.process
        if proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        return self.exit_error(query)


def _series(labels: Labels) -> str:
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
    return f"{name}{{{rest}}}"


def scraped_at(target: Mapping[str, Any]) -> float:
    """When Prometheus last scraped an active target (its `lastScrape`, RFC 3339 with nanoseconds) as a Unix time;
    0 for never (Go's zero time) or nothing."""
    text = str(target.get("lastScrape") or "")
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m or text.startswith("0001-"):
        return 0.0
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").timestamp()


def _regex_alternatives(values: Iterable[str]) -> str:
    return "|".join(re.escape(v).replace("\\", "\\\\").replace('"', '\\"') for v in sorted(set(values)))


def stored_up_query(targets: Iterable[Mapping[str, Any]]) -> str:
    """PromQL giving, per active target, the time of its latest *stored* successful scrape (`timestamp()` of its
    `up` sample where `up == 1`). Prometheus's targets page reports a scrape before the scrape's samples are
    committed; the `up` sample is committed with them, so this says what a query can already see."""
    labels = [t.get("labels") or {} for t in targets]
    selector = (f'up{{job=~"{_regex_alternatives(lb.get("job", "") for lb in labels)}",'
                f'instance=~"{_regex_alternatives(lb.get("instance", "") for lb in labels)}"}}')
    return f"timestamp({selector}) and on(job, instance) ({selector} == 1)"


def stored_scrapes(samples: Iterable[Sample]) -> dict[tuple[str, str], float]:
    """The answer to `stored_up_query`: (job, instance) -> Unix time of its latest stored successful scrape."""
    return {(labels.get("job", ""), labels.get("instance", "")): value for labels, value in samples}


def target_key(target: Mapping[str, Any]) -> tuple[str, str]:
    """An active target's (job, instance): the labels its `up` series carries."""
    labels = target.get("labels") or {}
    return labels.get("job", ""), labels.get("instance", "")


def instant_samples(promql: str, data: dict[str, Any]) -> list[Sample]:
    """The `data` of Prometheus's /api/v1/query answer as `(labels, value)` per series (a scalar: one sample without
    labels); a range vector or a string is a PromQLError that says what to write instead."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector":
        return [(dict(item.get("metric") or {}), float(item["value"][1])) for item in result or []]
    if kind == "scalar":
        return [({}, float(result[1]))]
    raise PromQLError(promql, f"it returns a {kind}, not an instant vector or a scalar "
                              "(a range selector like x[1m] needs a function such as rate() around it)")
