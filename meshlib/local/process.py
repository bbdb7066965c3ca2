"""User images as local commands: a container that is a subprocess, restarted like `restartPolicy: Always`.

Map an image in the mesh config (`meshlib.yaml`, read by `meshlib.local.meshconfig`):

    images:
      example/orders:
        command: ["python", "-m", "orders"]

The command gets the container's env plus `PORT` (where to listen, on 127.0.0.1) and `HTTP_PROXY` (the
pod's sidecar, which stands in for Istio's traffic capture). Its stdout and stderr are the container log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlib.errors import MeshlibError, Source
from meshlib.local.children import die_with_parent
from meshlib.local.logs import LogBuffer

MAX_BACKOFF = 5.0
READY_TIMEOUT = 15.0


@dataclass(frozen=True)
class ImageCommand:
    command: tuple[str, ...]
    source: Source | None  # where meshlib.yaml maps the image; None for a builtin image

    @classmethod
    def builtin(cls, image: str) -> ImageCommand:
        """A builtin image, run as its own process (`meshlib.local.apps.host`)."""
        return cls((sys.executable, "-m", "meshlib.local.apps.host", image), None)


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000  # free ports are chosen from here up to the ephemeral range


def ephemeral_low() -> int | None:
    """The first port the kernel hands to outgoing connections (Linux), None where it cannot be read."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a process that binds it soon after. Chosen at random below the kernel's
    ephemeral range where that is known: the kernel gives ports of that range to every outgoing connection, and one
    could take the port between this check and the bind (it did, in CI: the gateway's Envoy listener could not bind,
    "Address already in use")."""
    low = ephemeral_low()
    if low is not None and low - LOWEST_PORT >= 1000:
        for _ in range(64):
            port = LOWEST_PORT + secrets.randbelow(low - LOWEST_PORT)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue  # in use (or lingering): another
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProcessContainer:
    """Runs the command, feeds its output to the log, restarts it when it exits, stops it on close()."""

    def __init__(self, image: str, spec: ImageCommand, env: dict[str, str], proxy: str, log: LogBuffer,
                 host: str = "127.0.0.1") -> None:
        self.image, self.spec, self.log, self.host = image, spec, log, host
        self.port = free_port(host)
        self.env = {**os.environ, **env, "HOST": host, "PORT": str(self.port), "HTTP_PROXY": proxy,
                    "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        self.restarts = 0
        self.ready = asyncio.Event()
        self.exited_early: int | None = None  # the exit code when the first run ended before it listened
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def pid(self) -> int | None:
        """The running command's pid (None between restarts)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._supervise())
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while not self.ready.is_set() and self.exited_early is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), min(left, 0.05))
        if self.ready.is_set():
            return
        await self.close()
        tail = "; ".join(self.log.read(tail=3)) or "no output"
        mapped = f" (mapped at {self.spec.source})" if self.spec.source else ""
        why = (f"exited with code {self.exited_early} before it listened" if self.exited_early is not None
               else f"did not listen on {self.host}:{self.port} ($HOST:$PORT) within {READY_TIMEOUT:g}s")
        raise MeshlibError(f"{self.image}: `{' '.join(self.spec.command)}` {why}{mapped}; last output: {tail}")

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.spec.command, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent)  # the mesh thread started it: it ends with the mesh
            except OSError as exc:
                self.log.write(f"meshlib: cannot start {self.spec.command[0]!r}: {exc.strerror}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            waiter = asyncio.ensure_future(self._wait_listening())
            assert self._proc.stdout is not None
            async for line in self._proc.stdout:
                self.log.write(line.decode(errors="replace"))
            code = await self._proc.wait()
            waiter.cancel()
            if not self.ready.is_set() and self.restarts == 0:
                self.exited_early = code
            self.ready.clear()
            self.restarts += 1
            self.log.write(f"meshlib: container exited with code {code}; restarting in {backoff:g}s "
                           "(restartPolicy Always)")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _wait_listening(self) -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                self.ready.set()
                return
            except OSError:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
