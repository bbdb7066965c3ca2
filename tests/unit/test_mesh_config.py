"""The mesh config (meshlib.yaml): user images and external stand-ins, each bad entry one line with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.errors import ConfigError
from meshlib.local.meshconfig import MeshConfig, describe, load_mesh_config, read_mesh_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshlib.yaml"
    path.write_text(text)
    return path


def test_external_hosts_name_builtin_stand_ins(tmp_path: Path) -> None:
    path = write(tmp_path, "externalHosts:\n  API.Payments.example.com.:\n    image: kennethreitz/httpbin:latest\n"
                           "    env: {X: 1}\n  ledger.example.com: {image: nicholasjackson/fake-service}\n")
    config = load_mesh_config(path)
    assert config.images == {}
    assert sorted(config.stand_ins) == ["api.payments.example.com", "ledger.example.com"]
    payments = config.stand_ins["api.payments.example.com"]
    assert (payments.image, payments.env, payments.source.line) == ("kennethreitz/httpbin:latest", {"X": "1"}, 2)
    assert describe(path, config) == [
        f"mesh config {path}: external host api.payments.example.com is answered by a stand-in running "
        "kennethreitz/httpbin:latest",
        f"mesh config {path}: external host ledger.example.com is answered by a stand-in running "
        "nicholasjackson/fake-service"]


def test_images_and_external_hosts_together(tmp_path: Path) -> None:
    path = write(tmp_path, 'images:\n  example/orders:\n    command: ["python", "-m", "orders"]\n'
                           "externalHosts:\n  api.example.com: {image: kennethreitz/httpbin}\n")
    config = load_mesh_config(path)
    assert list(config.images) == ["example/orders"] and list(config.stand_ins) == ["api.example.com"]
    seen: list[str] = []
    assert read_mesh_config(path, announce=seen.append) == config and len(seen) == 2
    assert read_mesh_config(None) == MeshConfig()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("externalHosts:\n  api.example.com: {image: example/payments}\n", 2,
     ["'example/payments' is not a builtin image", "use one of", "kennethreitz/httpbin"]),
    ("externalHosts:\n  api.example.com: kennethreitz/httpbin\n", 2, ["needs image: a builtin image"]),
    ("externalHosts:\n  api.example.com: {image: kennethreitz/httpbin, port: 80}\n", 2, ["needs image"]),
    ("externalHosts:\n  '*.example.com': {image: kennethreitz/httpbin}\n", 2, ["is not a host name", "wildcard"]),
    ("externalHosts:\n  'https://api.example.com': {image: kennethreitz/httpbin}\n", 2, ["is not a host name"]),
    ("externalHosts:\n  10.0.0.1: {image: kennethreitz/httpbin}\n", 2, ["is not a host name"]),
    ("externalHosts: [api.example.com]\n", 1, ["externalHosts must be a mapping"]),
    ("images: {}\nstandIns: {}\n", 2, ["holds images and externalHosts, not 'standIns'"]),
    ("{}\n", 1, ["holds images and externalHosts"]),
    ("images:\n  example/orders:\n    command: python app.py\n", 2, ["needs command: a list of strings"]),
])
def test_a_bad_entry_is_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_mesh_config(path)
    message = str(err.value)
    assert f"{path}:{line}" in message and "\n" not in message, message
    for word in words:
        assert word in message, message
