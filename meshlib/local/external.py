"""Stand-ins for hosts outside the mesh, so egress policy is observable without internet.

One loopback server answers for every external host by its Host header. `jsonplaceholder.typicode.com`
answers like the real API for the paths the walkthrough's forum uses; `httpbin.org` is the builtin httpbin
(so `/delay/5` behind a 3 s route timeout gives 504 UT, as Istio's egress tasks show); other hosts get a JSON
echo that says it came from a stand-in.
"""

from __future__ import annotations

from aiohttp import web

from meshlib.local.apps.base import AppContext
from meshlib.local.apps.httpbin import create_app as create_httpbin_app

HTTPBIN_HOSTS = ("httpbin.org", "www.httpbin.org")

USERS = [
    {"id": i, "name": name, "username": user, "email": f"{user.lower()}@example.test"}
    for i, (name, user) in enumerate([("Leanne Graham", "Bret"), ("Ervin Howell", "Antonette"),
                                      ("Clementine Bauch", "Samantha"), ("Patricia Lebsack", "Karianne")], 1)
]


async def _answer(request: web.Request) -> web.Response:
    host = (request.headers.get("Host") or "").split(":")[0].lower().removesuffix("-shadow")
    if host == "jsonplaceholder.typicode.com":
        if request.path in ("/users", "/users/"):
            return web.json_response(USERS)
        if request.path.startswith("/users/"):
            uid = request.path.rsplit("/", 1)[1]
            user = next((u for u in USERS if str(u["id"]) == uid), None)
            return web.json_response(user or {}, status=200 if user else 404)
        return web.json_response({}, status=404)
    return web.json_response({"host": host, "path": request.path_qs, "method": request.method,
                              "stand_in": "meshlib local stand-in for an external host"})


def create_app() -> web.Application:
    app = web.Application()
    for host in HTTPBIN_HOSTS:  # matched on the Host header before the catch-all
        app.add_domain(host, create_httpbin_app(AppContext(env={}, log=lambda _line: None, proxy=None,
                                                           namespace="", pod_name=f"stand-in {host}")))
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app
