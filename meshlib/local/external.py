"""Stand-ins for hosts outside the mesh, so egress policy is observable without internet.

One loopback server answers for every external host by its Host header. `jsonplaceholder.typicode.com`
answers like the real API for the paths the walkthrough's forum uses; `httpbin.org` is the builtin httpbin
(so `/delay/5` behind a 3 s route timeout gives 504 UT, as Istio's egress tasks show); a host the mesh config
declares under `externalHosts` is answered by the builtin app it names; any other host gets a JSON echo that says it
came from a stand-in, and the echo counts what it answered so a run can say which answers were not the host's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from aiohttp import web

from meshlib.local.apps import lookup_image
from meshlib.local.apps.base import AppContext
from meshlib.local.meshconfig import StandIn

BUILTIN_STAND_INS = {host: StandIn(host, "kennethreitz/httpbin", {}, None)
                     for host in ("httpbin.org", "www.httpbin.org")}
JSONPLACEHOLDER = "jsonplaceholder.typicode.com"
ECHOED: web.AppKey[Counter[str]] = web.AppKey("echoed", Counter)

USERS = [
    {"id": i, "name": name, "username": user, "email": f"{user.lower()}@example.test"}
    for i, (name, user) in enumerate([("Leanne Graham", "Bret"), ("Ervin Howell", "Antonette"),
                                      ("Clementine Bauch", "Samantha"), ("Patricia Lebsack", "Karianne")], 1)
]


def _host(request: web.Request) -> str:
    return (request.headers.get("Host") or "").split(":")[0].lower().removesuffix("-shadow")


async def _jsonplaceholder(request: web.Request) -> web.Response:
    if request.path in ("/users", "/users/"):
        return web.json_response(USERS)
    if request.path.startswith("/users/"):
        uid = request.path.rsplit("/", 1)[1]
        user = next((u for u in USERS if str(u["id"]) == uid), None)
        return web.json_response(user or {}, status=200 if user else 404)
    return web.json_response({}, status=404)


async def _answer(request: web.Request) -> web.Response:
    host = _host(request)
    if host == JSONPLACEHOLDER:
        return await _jsonplaceholder(request)
    request.app[ECHOED][host] += 1
    return web.json_response({"host": host, "path": request.path_qs, "method": request.method,
                              "stand_in": "meshlib local stand-in for an external host"})


def create_app(stand_ins: Mapping[str, StandIn] | None = None) -> web.Application:
    """The stand-in server: declared hosts first (by exact Host), then the builtin ones, then the echo."""
    app = web.Application()
    app[ECHOED] = Counter()
    for host, stand_in in {**BUILTIN_STAND_INS, **(stand_ins or {})}.items():
        context = AppContext(env=dict(stand_in.env), log=lambda _line: None, proxy=None, namespace="",
                             pod_name=f"stand-in {host}")
        app.add_domain(host, lookup_image(stand_in.image)(context))
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app


def echoed(app: web.Application) -> dict[str, int]:
    """How many requests the echo answered so far, by host (a copy)."""
    return dict(app[ECHOED])
