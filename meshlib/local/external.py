"""Stand-ins for hosts outside the mesh, so egress policy is observable without internet.

One loopback server answers for every external host by its Host header. `jsonplaceholder.typicode.com`
answers like the real API for the paths the walkthrough's forum uses; other hosts get a JSON echo that
says it came from a stand-in.
"""

from __future__ import annotations

from aiohttp import web

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
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app
