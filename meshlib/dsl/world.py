"""The state one scenario's steps share, independent of behave or pytest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from meshlib.backend import Backend
from meshlib.errors import MeshlibError
from meshlib.stats import DEFAULT_ALPHA
from meshlib.traffic import BackgroundTraffic, Response, Target

Evidence = Callable[[str, str, str], None]  # name, body, kind ("text", "json", "csv", "html", "svg", "png")


@dataclass(frozen=True)
class Batch:
    """One batch the scenario sent: where to, and what came back (with the pods that served each request)."""

    target: Target | None
    responses: list[Response]


def _no_evidence(_name: str, _body: str, _kind: str) -> None:
    return None


@dataclass
class World:
    backend: Backend
    namespace: str
    manifests: Path
    alpha: float = DEFAULT_ALPHA
    concurrency: int = 8
    headers: dict[str, str] = field(default_factory=dict)
    rotate: tuple[str, tuple[str, ...]] | None = None  # a header whose value goes round a list, request by request
    responses: list[Response] = field(default_factory=list)
    background: dict[str, BackgroundTraffic] = field(default_factory=dict)
    finished_background: list[Response] = field(default_factory=list)  # what the last stopped traffic got back
    evidence: Evidence = _no_evidence
    sent_at: datetime | None = None  # when the last batch started: log checks look from here on
    last_target: Target | None = None
    metrics: Any = None  # meshlib.dsl.metrics: the proxies' counters as they were when the last batch started
    notes: list[str] = field(default_factory=list)  # for the console: what a passing scenario should not hide
    allow_outside_manifests: bool = False  # manifest paths may leave the manifests folder
    batches: list[Batch] = field(default_factory=list)  # every batch of the scenario: its traffic picture
    decided: Any = None  # meshlib.dsl.distribution.Decided: the last claim a sequential check decided
    unsettled: tuple[str, ...] = ()  # the last batch's records that had not arrived (Backend.settle)

    def record(self, target: Target | None, responses: list[Response], unsettled: tuple[str, ...] = ()) -> None:
        """A batch sent to `target`: its answers become `responses` (the checks read the last batch), and it is kept
        in `batches` for the scenario's traffic graph. `unsettled`: what the backend could not read of who served
        it; the checks that read who served a request refuse such a batch."""
        self.batches.append(Batch(target, list(responses)))
        self.responses = responses
        self.unsettled = unsettled

    def manifest(self, name: str) -> Path:
        """A path as written in a feature, relative to the manifests folder. It must stay inside that folder
        (`../`, an absolute path or a symlink cannot lead out of it) unless the run allows others
        (`allow_outside_manifests`, behave's `-D allow_outside_manifests=true`)."""
        p = self.manifests / Path(name)  # an absolute `name` replaces the folder: checked below like any other
        if self.allow_outside_manifests:
            return p
        folder = self.manifests.resolve()
        if not p.resolve().is_relative_to(folder):
            raise MeshlibError(f"manifest path {name!r} leads outside the manifests folder {folder}; keep it "
                               "inside, or allow other paths for this run with -D allow_outside_manifests=true")
        return p

    def attach(self, name: str, body: str, kind: str = "text") -> None:
        self.evidence(name, body, kind)

    def note(self, text: str) -> None:
        """Something the reader must see even when the scenario passes (retries, an underpowered check):
        attached as evidence and printed on the console after the scenario."""
        if text not in self.notes:
            self.notes.append(text)
            self.evidence(f"note: {text[:80]}", text, "text")

    def stop_background(self) -> None:
        for traffic in self.background.values():
            traffic.stop()
        self.background.clear()
