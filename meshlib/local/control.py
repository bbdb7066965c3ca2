"""The control channel of a running `meshlib up`: loopback only, and only for callers with the mesh's token.

The state file (`~/.meshlib/mesh.json`, or `$MESHLIB_STATE` ) tells CLI commands where the mesh listens and
which token to send. Commands are JSON over HTTP; errors come back as `{"error": "..."}` with status 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshlib.errors import MeshlibError
from meshlib.local.apps import RunningApp, start_app

Handler = Callable[[dict[str, Any]], Any]


def state_path() -> Path:
    return Path(os.environ.get("MESHLIB_STATE") or Path.home() / ".meshlib" / "mesh.json")


def write_state(data: dict[str, Any]) -> Path:
    """Write the state file atomically, readable by its owner only: a fresh temp file is created 0600
    (O_CREAT|O_EXCL, so never an existing file and never a wider mode, whatever the umask), filled, then
    renamed over the state file. The token is never in a file another user can read, not even for a moment."""
    path = state_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise MeshlibError(f"cannot write the mesh state file {path}: {exc.strerror}; "
                           "set MESHLIB_STATE to a file in a directory you own") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600 even under an umask that also takes the owner's bits
            f.write(json.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MeshlibError(f"cannot write the mesh state file {path}: {exc.strerror}") from None
    return path


def read_state() -> dict[str, Any]:
    path = state_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshlibError("no local mesh is running (start one with `meshlib up -f MANIFESTS`)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MeshlibError(f"cannot read {path}: {exc}; remove it and run `meshlib up` again") from None


def clear_state(pid: int) -> None:
    path = state_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, json.JSONDecodeError):
        pass


class ControlServer:
    """Serves `handlers` (name → blocking function of the JSON body) on 127.0.0.1:0."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.token = secrets.token_urlsafe(32)
        self.running: RunningApp | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{command}", self._handle)
        self.running = await start_app(app, "127.0.0.1", 0)
        return self.running.url

    async def close(self) -> None:
        if self.running is not None:
            await self.running.close()
            self.running = None

    async def _handle(self, request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(sent.encode(), self.token.encode()):
            return web.json_response({"error": "missing or wrong mesh token"}, status=401)
        handler = self.handlers.get(request.match_info["command"])
        if handler is None:
            return web.json_response({"error": f"unknown command {request.match_info['command']!r}"}, status=404)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, handler, body)
        except MeshlibError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"result": result})


def send(command: str, body: dict[str, Any], timeout: float = 120) -> Any:
    """Call the running mesh; MeshlibError with the server's message on failure."""
    state = read_state()
    req = urllib.request.Request(f"{state['control']}/{command}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {state['token']}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["result"]
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise MeshlibError(message) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise MeshlibError(f"the local mesh (pid {state.get('pid')}) does not answer at {state['control']}: "
                           f"{getattr(exc, 'reason', exc)}; if it is gone, remove {state_path()} "
                           "and run `meshlib up` again") from None
