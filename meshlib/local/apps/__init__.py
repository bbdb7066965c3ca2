"""The builtin container images of the embedded mesh, each an aiohttp app.

`lookup_image("istioinaction/catalog:latest")` gives the image's `AppFactory`; call it with an
`AppContext` to get the `aiohttp.web.Application` the pod's container serves (see `base.start_app`).
`default_port(image, env)` is the port the real image listens on, for a Deployment that names none.
"""

from __future__ import annotations

from meshlib.errors import MeshlibError
from meshlib.local.apps import catalog, fakeservice, forum, httpbin, sleep, webapp
from meshlib.local.apps.base import (
    AppConfigError,
    AppContext,
    AppFactory,
    RunningApp,
    UpstreamError,
    UpstreamResponse,
    call_upstream,
    start_app,
)

__all__ = [
    "IMAGES",
    "AppConfigError",
    "AppContext",
    "AppFactory",
    "RunningApp",
    "UnknownImageError",
    "UpstreamError",
    "UpstreamResponse",
    "call_upstream",
    "default_port",
    "image_name",
    "lookup_image",
    "start_app",
]

IMAGES: dict[str, AppFactory] = {
    "istioinaction/catalog": catalog.create_app,
    "istioinaction/webapp": webapp.create_app,
    "istioinaction/forum": forum.create_app,
    "nicholasjackson/fake-service": fakeservice.create_app,
    "kennethreitz/httpbin": httpbin.create_app,
    "docker.io/kennethreitz/httpbin": httpbin.create_app,
    "mccutchen/go-httpbin": httpbin.create_go_httpbin_app,
    "curlimages/curl": sleep.create_app,
    "governmentpaas/curl-ssl": sleep.create_app,
}

_PORTS: dict[str, int] = {
    "istioinaction/catalog": 3000,
    "istioinaction/webapp": 8080,
    "istioinaction/forum": 8080,
    "kennethreitz/httpbin": 80,
    "mccutchen/go-httpbin": 8080,
    "curlimages/curl": 80,
    "governmentpaas/curl-ssl": 80,
}

_REGISTRY_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


class UnknownImageError(MeshlibError):
    """A container image the embedded mesh has no builtin app for."""

    def __init__(self, image: str) -> None:
        self.image = image
        name = image_name(image) or image
        builtin = ", ".join(sorted(known for known in IMAGES if not known.startswith("docker.io/")))
        super().__init__(
            f"image {image!r} has no builtin app in the embedded mesh (builtin images: {builtin}); "
            f"map it to a local command in meshlib.yaml under images: {{{name}: {{command: [...]}}}} and name "
            "that file: `meshlib up --mesh-config meshlib.yaml`, or behave -D mesh_config=meshlib.yaml"
        )


def image_name(image: str) -> str:
    """The image without `:tag`, `@digest` and a leading `docker.io/` (and `library/` after it)."""
    name = image.strip()
    name = name.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    for prefix in _REGISTRY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            if name.startswith("library/"):
                name = name[len("library/") :]
            break
    return name


def lookup_image(image: str) -> AppFactory:
    """The builtin app of an image such as `istioinaction/catalog:latest`; UnknownImageError else."""
    name = image_name(image)
    factory = IMAGES.get(name) or IMAGES.get(image.strip())
    if factory is None:
        raise UnknownImageError(image)
    return factory


def default_port(image: str, env: dict[str, str]) -> int:
    """The port the real image listens on (fake-service: LISTEN_ADDR); UnknownImageError if not builtin."""
    name = image_name(image)
    if name not in IMAGES:
        raise UnknownImageError(image)
    if name == "nicholasjackson/fake-service":
        return fakeservice.listen_port(env)
    return _PORTS[name]
