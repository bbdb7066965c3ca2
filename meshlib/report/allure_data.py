"""Allure results read back as typed records: scenarios, their steps, and the evidence attached to each.

    results = read_results(Path("reports/allure-results"))     # [ScenarioResult], in the order they started
    uids = report_uids(Path("reports/allure-report"))           # (feature, name) → the report's test-case uid
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Attachment:
    name: str
    mime: str
    path: Path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace") if self.path.is_file() else ""

    def data(self) -> bytes:
        return self.path.read_bytes() if self.path.is_file() else b""


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str
    message: str
    attachments: tuple[Attachment, ...]
    steps: tuple[StepResult, ...] = ()

    def all_attachments(self) -> list[Attachment]:
        return [*self.attachments, *(a for s in self.steps for a in s.all_attachments())]


@dataclass(frozen=True)
class ScenarioResult:
    name: str  # as allure-behave names it: an outline's row carries ` -- @1.1 Examples`
    feature: str
    status: str
    message: str
    history_id: str
    start: int
    stop: int
    steps: tuple[StepResult, ...]
    attachments: tuple[Attachment, ...]  # attached to the scenario itself (pictures drawn when it ended)
    parameters: tuple[tuple[str, str], ...] = field(default=())

    @property
    def base_name(self) -> str:
        return self.name.rsplit(" -- ", 1)[0]

    @property
    def seconds(self) -> float:
        return max(0, self.stop - self.start) / 1000


def _attachments(node: dict[str, Any], folder: Path) -> tuple[Attachment, ...]:
    return tuple(Attachment(str(a.get("name", "")), str(a.get("type", "text/plain")), folder / str(a.get("source", "")))
                 for a in node.get("attachments") or [] if isinstance(a, dict))


def _message(node: dict[str, Any]) -> str:
    details = node.get("statusDetails") or {}
    return str(details.get("message") or "").strip()


def _step(node: dict[str, Any], folder: Path) -> StepResult:
    return StepResult(str(node.get("name", "")), str(node.get("status", "unknown")), _message(node),
                      _attachments(node, folder), tuple(_step(s, folder) for s in node.get("steps") or []))


def _feature(result: dict[str, Any]) -> str:
    return next((str(lb.get("value")) for lb in result.get("labels") or [] if lb.get("name") == "feature"), "")


def read_results(folder: Path) -> list[ScenarioResult]:
    """Every scenario result in the folder; a file that is not a result (or not JSON) is passed over."""
    out = []
    for path in sorted(folder.glob("*-result.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        out.append(ScenarioResult(
            name=str(data.get("name", "")), feature=_feature(data), status=str(data.get("status", "unknown")),
            message=_message(data), history_id=str(data.get("historyId", "")), start=int(data.get("start") or 0),
            stop=int(data.get("stop") or 0), steps=tuple(_step(s, folder) for s in data.get("steps") or []),
            attachments=_attachments(data, folder),
            parameters=tuple((str(p.get("name")), str(p.get("value"))) for p in data.get("parameters") or [])))
    return sorted(out, key=lambda r: r.start)


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)")
_CONTROL = {"n": "\n", "r": "\r", "t": "\t"}


def _unescape(value: str) -> str:
    """Java .properties escapes read back (\\uXXXX as UTF-16, \\n, and any other escaped character as itself)."""
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else _CONTROL.get(m.group(2), m.group(2)),
                       value)
    return text.encode("utf-16", "surrogatepass").decode("utf-16")


def read_environment(folder: Path) -> list[tuple[str, str]]:
    """environment.properties as (key, value) pairs, Java escapes read back."""
    path = folder / "environment.properties"
    if not path.is_file():
        return []
    pairs = []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        pairs.append((key.strip(), _unescape(value)))
    return pairs


def report_uids(report: Path) -> dict[tuple[str, str], str]:
    """(feature, scenario name) → test-case uid in a generated Allure 2 report (its `#testresult/UID` pages);
    {} without a report."""
    out: dict[tuple[str, str], str] = {}
    for path in (report / "data" / "test-cases").glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("uid") and data.get("name"):
            out[(_feature(data), str(data["name"]))] = str(data["uid"])
    return out
