"""The mesh config (`meshlib.yaml`): what the embedded mesh runs that no manifest says.

Name it to use it: `meshlib up --mesh-config meshlib.yaml`, or `-D mesh_config=meshlib.yaml` for behave (or
`mesh_config` under `[behave.userdata]` in behave.ini). It is never read unasked from the current directory, since
it runs commands; the run prints what it maps.

    images:                    # user images as local commands (meshlib.local.process)
      example/orders:
        command: ["python", "-m", "orders"]
    externalHosts:             # who answers for a host outside the mesh (meshlib.local.external)
      api.payments.example.com:
        image: kennethreitz/httpbin
        env: {}                # optional: the builtin app's environment

On a cluster an external host is the real one; on the embedded mesh a stand-in answers for it. Without a declared
stand-in, a host gets meshlib's JSON echo (httpbin.org and jsonplaceholder.typicode.com have builtin ones), and
every batch that reached the echo says so in the run's notes.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlib.config.hosts import is_ip
from meshlib.config.loader import parse_documents
from meshlib.errors import ConfigError, MeshlibError, Source
from meshlib.local.apps import IMAGES, UnknownImageError, image_name, lookup_image
from meshlib.local.process import ImageCommand

KEYS = ("images", "externalHosts")


@dataclass(frozen=True)
class StandIn:
    """A builtin app that answers for an external host on the embedded mesh."""

    host: str
    image: str
    env: dict[str, str]
    source: Source | None


@dataclass(frozen=True)
class MeshConfig:
    images: dict[str, ImageCommand] = field(default_factory=dict)
    stand_ins: dict[str, StandIn] = field(default_factory=dict)


def load_mesh_config(path: str | Path) -> MeshConfig:
    """A meshlib.yaml, checked: ConfigError with file:line for a bad entry."""
    p = Path(path)
    try:
        docs = parse_documents(p.read_text(encoding="utf-8"), str(p))
    except OSError as exc:
        raise MeshlibError(f"cannot read mesh config {p}: {exc.strerror or exc}") from None
    images: dict[str, ImageCommand] = {}
    stand_ins: dict[str, StandIn] = {}
    for doc in docs:
        data = doc.data if isinstance(doc.data, dict) else {}
        unknown = [k for k in data if k not in KEYS]
        if not data or unknown:
            where = doc.where((unknown[0],)) if unknown else doc.source
            raise ConfigError(where, f"a mesh config holds {' and '.join(KEYS)}"
                              + (f", not {unknown[0]!r}" if unknown else ""),
                              "write images: {IMAGE: {command: [PROGRAM, ARG…]}} and/or "
                              "externalHosts: {HOST: {image: BUILTIN_IMAGE}}")
        images.update(_images(doc, data.get("images")))
        stand_ins.update(_stand_ins(doc, data.get("externalHosts")))
    return MeshConfig(images, stand_ins)


def _mapping(doc: Any, key: str, value: object) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(doc.where((key,)), f"{key} must be a mapping")
    return value


def _images(doc: Any, value: object) -> dict[str, ImageCommand]:
    out: dict[str, ImageCommand] = {}
    for image, spec in _mapping(doc, "images", value).items():
        cmd = spec.get("command") if isinstance(spec, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise ConfigError(doc.where(("images", image)), f"image {image!r} needs command: a list of strings")
        out[image_name(str(image))] = ImageCommand(tuple(cmd), doc.where(("images", image)))
    return out


def _stand_ins(doc: Any, value: object) -> dict[str, StandIn]:
    out: dict[str, StandIn] = {}
    for host, spec in _mapping(doc, "externalHosts", value).items():
        where = doc.where(("externalHosts", host))
        name = str(host).strip().lower().rstrip(".")
        if not name or "*" in name or "/" in name or ":" in name or is_ip(name):
            raise ConfigError(where, f"externalHosts: {host!r} is not a host name",
                              "write the host as a client names it, without scheme, port or wildcard")
        image = spec.get("image") if isinstance(spec, dict) else None
        env = (spec.get("env") if isinstance(spec, dict) else None) or {}
        if not isinstance(image, str) or not isinstance(env, dict) or set(spec) - {"image", "env"}:
            raise ConfigError(where, f"externalHosts: {host!r} needs image: a builtin image (and optional env)")
        try:
            lookup_image(image)
        except UnknownImageError:
            builtin = ", ".join(sorted(i for i in IMAGES if not i.startswith("docker.io/")))
            raise ConfigError(where, f"externalHosts: {image!r} is not a builtin image, so it cannot stand in "
                              f"for {name}", f"use one of {builtin}") from None
        out[name] = StandIn(name, image, {str(k): str(v) for k, v in env.items()}, where)
    return out


def read_mesh_config(path: str | Path | None, announce: Callable[[str], None] | None = None) -> MeshConfig:
    """The mesh config the run names; an empty one when it names none. Each mapping is announced, one line each,
    so a run shows what it will run and who answers for which external host."""
    if path is None or not str(path).strip():
        return MeshConfig()
    config = load_mesh_config(path)
    if announce is not None:
        for line in describe(path, config):
            announce(line)
    return config


def describe(path: str | Path, config: MeshConfig) -> list[str]:
    """`mesh config meshlib.yaml: image example/orders runs python -m orders`, one line per mapping."""
    lines = [f"mesh config {path}: image {image} runs {shlex.join(spec.command)}"
             for image, spec in sorted(config.images.items())]
    lines += [f"mesh config {path}: external host {s.host} is answered by a stand-in running {s.image}"
              for s in sorted(config.stand_ins.values(), key=lambda s: s.host)]
    return lines or [f"mesh config {path}: maps no image and no external host"]
