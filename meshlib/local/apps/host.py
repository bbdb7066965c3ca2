"""Run one builtin image as its own process, as a container runs: `python -m meshlib.local.apps.host IMAGE`.

The embedded mesh starts every builtin container this way (`meshlib.local.process.ProcessContainer`), so a
busy or slow app has a core of its own and never stalls the mesh, the other apps or the load driver. The
process reads what a container would get from its environment: the container's env, `HOST` and `PORT` (where
to listen: the pod's loopback address), `HTTP_PROXY` (its sidecar), `MESHLIB_POD` / `MESHLIB_NAMESPACE` and
`MESHLIB_SEED` (the app's randomness, so a seeded mesh repeats). Its log lines go to stdout, the container log.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

import uvloop

from meshlib.errors import MeshlibError
from meshlib.local.apps import AppContext, lookup_image, start_app


def _log(line: str) -> None:
    sys.stdout.write(line.rstrip("\n") + "\n")
    sys.stdout.flush()


async def serve(image: str) -> None:
    env = dict(os.environ)
    ctx = AppContext(env=env, log=_log, proxy=env.get("HTTP_PROXY") or None,
                     namespace=env.get("MESHLIB_NAMESPACE", "default"), pod_name=env.get("MESHLIB_POD", ""),
                     rng=random.Random(env.get("MESHLIB_SEED")))
    running = await start_app(lookup_image(image)(ctx), env.get("HOST", "127.0.0.1"), int(env["PORT"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.close()


def main() -> int:
    if len(sys.argv) != 2:
        _log("usage: python -m meshlib.local.apps.host IMAGE")
        return 2
    try:
        uvloop.run(serve(sys.argv[1]))  # libuv's loop: about a quarter less CPU per request than asyncio's
    except MeshlibError as exc:  # a bad env value: one line in the container log, then the container exits
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
