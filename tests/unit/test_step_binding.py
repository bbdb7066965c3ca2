"""Every example in the step catalog binds to exactly the step that documents it, and quoted arguments cannot
swallow a neighbouring quote (the wrong binding that made a header-value check a header-presence check)."""

from __future__ import annotations

import inspect
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest
from behave.step_registry import registry

import meshlib.steps.all  # noqa: F401  (registers the library's steps)

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = ("given", "when", "then")


def _load_project_steps() -> None:
    if not any("walkthrough" in m.func.__module__ or m.func.__module__ == "<run_path>"
               for t in KEYWORDS for m in registry.steps.get(t, [])):
        for f in sorted((ROOT / "steps").glob("*.py")):
            runpy.run_path(str(f))


_load_project_steps()


def _examples() -> Iterator[tuple[str, str, object]]:
    for step_type in KEYWORDS:
        for matcher in registry.steps.get(step_type, []):
            doc = inspect.getdoc(matcher.func) or ""
            for line in doc.splitlines():
                if "Example:" in line:
                    text = line.split("Example:", 1)[1].split(" (followed by", 1)[0].strip()
                    keyword, _, rest = text.partition(" ")
                    yield keyword.lower(), rest, matcher


EXAMPLES = list(_examples())


def _binding(step_type: str, text: str) -> list[object]:
    candidates = registry.steps.get(step_type, []) + registry.steps.get("step", [])
    return [m for m in candidates if m.match(text) is not None]


def test_every_step_documents_an_example() -> None:
    documented = {id(m) for _, _, m in EXAMPLES}
    undocumented = [m.pattern for t in KEYWORDS for m in registry.steps.get(t, []) if id(m) not in documented]
    assert len(EXAMPLES) >= 70 and not undocumented, undocumented


@pytest.mark.parametrize(("keyword", "text", "matcher"), EXAMPLES, ids=[f"{k} {t}" for k, t, _ in EXAMPLES])
def test_each_example_binds_to_exactly_its_own_step(keyword: str, text: str, matcher: object) -> None:
    assert keyword in KEYWORDS, f"the example must start with Given, When or Then: {keyword} {text}"
    bound = _binding(keyword, text)
    assert bound == [matcher], [m.pattern for m in bound]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "pattern", "arguments"), [
    ('every response has the header "content-type" equal to "application/json"',
     'every response has the header "{name:HeaderName}" equal to "{value:Quoted}"',
     {"name": "content-type", "value": "application/json"}),
    ('every response has the header "x-envoy-upstream-service-time"',
     'every response has the header "{name:HeaderName}"', {"name": "x-envoy-upstream-service-time"}),
    ('the catalog v2 logs show no "-shadow"', 'the {app:Name} {version:Name} logs show no "{text:Quoted}"',
     {"app": "catalog", "version": "v2", "text": "-shadow"}),
])
def test_quoted_arguments_bind_to_the_step_they_read_as(text: str, pattern: str, arguments: dict) -> None:
    bound = _binding("then", text)
    assert [m.pattern for m in bound] == [pattern]  # type: ignore[attr-defined]
    match = bound[0].match(text)  # type: ignore[attr-defined]
    assert {a.name: a.value for a in match.arguments} == arguments


@pytest.mark.parametrize("text", [
    'no response contains "$.a" and "$.b"',  # one quoted argument cannot hold a quote
    'every response has the header "content type"',  # not a header name
    'the Flagger log of catalog-release shows ""',  # empty quotes check nothing
])
def test_text_that_is_no_step_binds_to_none(text: str) -> None:
    assert _binding("then", text) == []
