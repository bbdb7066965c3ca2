"""Bad input to a running mesh, through the real control channel on loopback (no Envoy needed): `apply` is all or
nothing, an error reaches the CLI as its one line (never a bare `HTTP Error 500`), `-f -` sends standard input,
and `get` lists every stored kind, as a table or as JSON/YAML.

The handlers are the real `meshlib.local.serve.Handlers`, over a stand-in for LocalMesh that keeps a real
ConfigStore; `LocalMesh.apply`'s own rollback is tested on an unstarted LocalMesh whose reconcile is replaced.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import NS, WORLD

from meshlib.cli import main
from meshlib.config.kinds import Resource
from meshlib.config.loader import load_documents, parse_documents
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.local import control
from meshlib.local.mesh import LocalMesh
from meshlib.local.serve import Handlers, guarded

HPA = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {maxReplicas: 3}\n"
GOOD = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec:\n  ports: [{port: 80}]\n"
BAD = "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  ports: [{port: 0}]\n"


class StoreMesh:
    """What `Handlers` needs of LocalMesh: a store, apply/delete that validate everything first, no pods."""

    namespace = NS

    def __init__(self) -> None:
        self.store = ConfigStore()
        self.store.apply_text(WORLD, NS, filename="world.yaml")

    def apply(self, paths: list[str], namespace: str | None, text: str | None = None,
              text_name: str = "<inline>") -> list[Resource]:
        docs = load_documents(paths) + (parse_documents(text, text_name) if text is not None else [])
        return self.store.apply_documents(docs, namespace or self.namespace)

    def pods(self, _namespace: str) -> list[Any]:
        return []


class Channel:
    """A ControlServer on 127.0.0.1 serving `handlers`, with the state file the CLI reads."""

    def __init__(self, handlers: dict[str, Any]) -> None:
        self.server = control.ControlServer({name: guarded(name, fn) for name, fn in handlers.items()})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Channel:
        self.thread.start()
        url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        control.write_state({"pid": 1, "control": url, "token": self.server.token, "namespace": NS})
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreMesh]:
    monkeypatch.setenv("MESHLIB_STATE", str(tmp_path / "state" / "mesh.json"))
    fake = StoreMesh()
    h = Handlers(fake, threading.Event())  # type: ignore[arg-type]
    with Channel({"apply": h.apply, "get": h.get, "boom": lambda body: body["missing"]}):
        yield fake


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def _error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and "HTTP Error" not in err, err
    [line] = err.splitlines()
    return line


def test_apply_is_all_or_nothing_and_the_cli_shows_the_error_text(mesh: StoreMesh, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    before = [r.key for r in mesh.store]
    line = _error_line(capsys, main(["apply", "-f", str(good), "-f", str(bad)]))
    assert line.startswith(f"error: {bad}:5: spec.ports[0].port: must be between 1 and 65,535"), line
    assert [r.key for r in mesh.store] == before  # the good Service was not stored either


def test_apply_from_stdin_names_stdin_and_reports_kinds_not_modelled(mesh: StoreMesh, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, GOOD + "---\n" + HPA)
    assert main(["apply", "-f", "-"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["service/ratings configured", "horizontalpodautoscaler/web configured"]
    assert out[2].startswith("not modelled: HorizontalPodAutoscaler/web (stored and listed")
    _stdin(monkeypatch, BAD)
    assert _error_line(capsys, main(["apply", "-f", "-"])).startswith("error: <stdin>:5: spec.ports[0].port")


def test_a_handler_failure_is_one_line_not_http_500(mesh: StoreMesh, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MeshlibError, match=r"^boom: the mesh could not handle this request \(KeyError: 'missing'\)"):
        control.send("boom", {})
    capsys.readouterr()  # the traceback went to the mesh's own output


def test_get_lists_every_stored_kind_as_table_json_or_yaml(mesh: StoreMesh, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, HPA)
    assert main(["apply", "-f", "-"]) == 0
    capsys.readouterr()
    assert main(["get", "hpa"]) == 0
    assert capsys.readouterr().out.splitlines() == ["NAME   SOURCE", "web    <stdin>:1  (not modelled)"]
    assert main(["get", "all", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v2", "namespace": NS, "name": "web",
            "modelled": False, "source": "<stdin>:1"} in rows
    assert {r["kind"] for r in rows} >= {"Service", "Deployment", "HorizontalPodAutoscaler"}
    assert main(["get", "svc", "-o", "yaml"]) == 0
    assert {r["name"] for r in yaml.safe_load(capsys.readouterr().out)} == {"catalog", "webapp"}
    line = _error_line(capsys, main(["get", "widgets"]))
    assert "unknown resource type 'widgets'" in line


def test_local_mesh_apply_restores_the_store_when_translation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value validation let through and the translator choked on: nothing of the change stays stored."""
    mesh = LocalMesh(namespace=NS)
    mesh.store.apply_text(WORLD, NS, filename="world.yaml")
    before = mesh.store.checkpoint()
    calls: list[str] = []

    def call(coro: Any, timeout: float | None = None) -> None:
        coro.close()
        calls.append("reconcile")
        if len(calls) == 1:
            raise TypeError("'<=' not supported between instances of 'NoneType' and 'int'")

    monkeypatch.setattr(mesh, "call", call)
    with pytest.raises(MeshlibError) as info:
        mesh.apply(text=GOOD)
    message = str(info.value)
    assert message.startswith("Service/ratings.istioinaction (<inline>:1) not applied: meshlib could not translate")
    assert "TypeError" in message and "\n" not in message
    assert mesh.store.checkpoint() is before and calls == ["reconcile", "reconcile"]  # restored, pushed again
