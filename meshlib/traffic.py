"""The load driver: bounded batches of real HTTP requests over aiohttp, recorded one by one.

A batch is bounded in count and in time; requests go only to loopback addresses handed out by the backend.
`BackgroundTraffic` keeps a steady rate flowing in its own thread until stopped. A target that carries a `runner`
is sent by that runner instead (a backend's own way of sending a batch, e.g. one `curl` exec in a client pod).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from meshlib.errors import InputError

MAX_REQUESTS = 100_000
MAX_SECONDS = 600.0
MAX_CONCURRENCY = 1_000
MAX_RATE = 100_000


@dataclass(frozen=True)
class Target:
    """Where requests go: a URL on loopback, the Host to send, and an optional explicit proxy (a sidecar).

    `runner`, when set, sends a whole batch itself and returns its responses in plan order (one per request, each
    with the x-request-id it carried): for requests that must leave from somewhere aiohttp cannot reach, such as
    a client pod on a cluster.
    """

    url: str  # e.g. http://127.0.0.1:30000/api/catalog, or http://catalog.istioinaction/items with a proxy
    host: str | None = None
    proxy: str | None = None
    label: str = ""  # for people: "through the ingress gateway", "from webapp"
    runner: Callable[[Plan], list[Response]] | None = field(default=None, compare=False, repr=False)


@dataclass
class Response:
    """One request and what came back."""

    request_id: str
    status: int  # 0 when no HTTP response came back
    headers: dict[str, str]
    body: str
    elapsed_ms: float
    error: str = ""
    served_by: list[Any] = field(default_factory=list)  # filled by the backend when it knows
    sent_headers: dict[str, str] = field(default_factory=dict)  # what the request carried (besides Host)
    mirror_copies: list[Any] = field(default_factory=list)  # pods that got a mirrored copy (answers dropped)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Plan:
    count: int | None = None
    seconds: float | None = None
    concurrency: int = 8
    rate: float | None = None  # requests per second across the batch
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    rotate: tuple[str, tuple[str, ...]] | None = None  # a header whose value goes round these, request by request

    def headers_for(self, index: int) -> dict[str, str]:
        """The headers of the `index`-th request of the batch."""
        headers = dict(self.headers)
        if self.rotate and self.rotate[1]:
            name, values = self.rotate
            headers[name] = values[index % len(values)]
        return headers

    def __post_init__(self) -> None:
        if self.count is None and self.seconds is None:
            raise InputError("a traffic plan needs a request count or a duration")
        if self.count is not None and not 0 < self.count <= MAX_REQUESTS:
            raise InputError(f"{self.count} requests: send between 1 and {MAX_REQUESTS:,} (a check over no "
                             f"requests checks nothing)")
        if self.seconds is not None and not 0 < self.seconds <= MAX_SECONDS:
            raise InputError(f"sending for {self.seconds:g} s: give a duration above 0 and at most "
                             f"{MAX_SECONDS:g} s")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise InputError(f"{self.concurrency} requests at a time: use 1 to {MAX_CONCURRENCY} in flight")
        if self.rate is not None and not 0 < self.rate <= MAX_RATE:
            raise InputError(f"a rate of {self.rate:g} per second: use more than 0 and at most {MAX_RATE:,} "
                             f"(leave the rate out for as fast as possible)")


async def _one(session: aiohttp.ClientSession, target: Target, plan: Plan, index: int) -> Response:
    request_id = str(uuid.uuid4())
    sent = plan.headers_for(index)
    headers = {"x-request-id": request_id, **sent}
    if target.host:
        headers["Host"] = target.host
    started = time.perf_counter()
    try:
        async with session.request(plan.method, target.url, headers=headers, data=plan.body, proxy=target.proxy,
                                   allow_redirects=False) as resp:
            body = await resp.text(errors="replace")
            return Response(request_id, resp.status, dict(resp.headers), body,
                            (time.perf_counter() - started) * 1000, sent_headers=sent)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Response(request_id, 0, {}, "", (time.perf_counter() - started) * 1000,
                        f"{type(exc).__name__}: {exc or 'no response'}", sent_headers=sent)


async def run_batch(target: Target, plan: Plan, stop: threading.Event | None = None,
                    results: list[Response] | None = None) -> list[Response]:
    """Send the plan's requests; concurrency and rate are upper bounds, count and seconds hard limits.

    Responses are appended to `results` (a new list by default) as they arrive.
    """
    results = [] if results is None else results
    if target.runner is not None:
        results.extend(await asyncio.to_thread(target.runner, plan))
        return results
    deadline = time.monotonic() + (plan.seconds if plan.seconds is not None else MAX_SECONDS)
    limit = plan.count if plan.count is not None else MAX_REQUESTS
    issued = 0
    interval = 1.0 / plan.rate if plan.rate else 0.0
    next_at = time.monotonic()
    lock = asyncio.Lock()

    async def take() -> int | None:
        """The index of the next request to send, or None when the batch is done."""
        nonlocal issued, next_at
        async with lock:
            if issued >= limit or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return None
            index = issued
            issued += 1
            if interval:
                wait = next_at - time.monotonic()
                next_at = max(next_at, time.monotonic()) + interval
            else:
                wait = 0
        if wait > 0:
            await asyncio.sleep(wait)
        return index

    async def worker(session: aiohttp.ClientSession) -> None:
        while (index := await take()) is not None:
            results.append(await _one(session, target, plan, index))

    timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=True) as session:
        await asyncio.gather(*(worker(session) for _ in range(plan.concurrency)))
    return results


def send(target: Target, plan: Plan) -> list[Response]:
    """Blocking form of `run_batch`, for steps and scripts."""
    return asyncio.run(run_batch(target, plan))


class BackgroundTraffic:
    """Steady traffic in its own thread until `stop()`; responses are kept for later checks."""

    def __init__(self, target: Target, rate: float, headers: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.plan = Plan(seconds=MAX_SECONDS, rate=rate, concurrency=4, headers=dict(headers or {}))
        self.responses: list[Response] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshlib-background-traffic", daemon=True)

    def start(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.run(run_batch(self.target, self.plan, self._stop, self.responses))

    def stop(self, timeout: float = 30) -> list[Response]:
        self._stop.set()
        self._thread.join(timeout)
        return self.responses
