"""Checks over the last batch of responses: status, JSONPath, headers, and which version answered."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext import parse as jsonpath_parse

from meshlib.dsl.sending import sample_table
from meshlib.dsl.world import World
from meshlib.expect import fail
from meshlib.traffic import Response


@lru_cache(maxsize=256)
def compile_path(expr: str) -> Any:
    try:
        return jsonpath_parse(expr)
    except (JsonPathParserError, Exception) as exc:  # jsonpath-ng raises several types for bad input
        raise ValueError(f"invalid JSONPath {expr!r}: {exc}") from None


def matches(response: Response, expr: str) -> list[Any]:
    doc = response.json()
    return [] if doc is None else [m.value for m in compile_path(expr).find(doc)]


def _need(world: World) -> list[Response]:
    if not world.responses:
        raise fail("responses to check", "no requests have been sent in this scenario yet")
    return world.responses


def every_status(world: World, status: int) -> None:
    responses = _need(world)
    counts = Counter(r.status for r in responses)
    if set(counts) != {status}:
        seen = ", ".join(f"{n} × {s or 'no response'}" for s, n in counts.most_common())
        raise fail(f"every response to have status {status}", f"saw {seen}", sample_table(
            [r for r in responses if r.status != status]))


def count_containing(world: World, expr: str) -> int:
    return sum(bool(matches(r, expr)) for r in _need(world))


def none_contain(world: World, expr: str) -> None:
    responses = _need(world)
    hits = [r for r in responses if matches(r, expr)]
    if hits:
        raise fail(f"no response to contain {expr}", f"{len(hits)} of {len(responses)} did",
                   sample_table(hits))


def all_contain(world: World, expr: str) -> None:
    responses = _need(world)
    misses = [r for r in responses if not matches(r, expr)]
    if misses:
        raise fail(f"every response to contain {expr}", f"{len(misses)} of {len(responses)} did not",
                   sample_table(misses))


def exactly_contain(world: World, count: int, expr: str) -> None:
    responses = _need(world)
    n = count_containing(world, expr)
    if n != count:
        raise fail(f"{count} responses to contain {expr}", f"{n} of {len(responses)} did")


def all_equal(world: World, expr: str, value: str) -> None:
    responses = _need(world)
    bad = [r for r in responses if not matches(r, expr) or any(str(v) != value for v in matches(r, expr))]
    if bad:
        seen = sorted({repr(v) for r in bad for v in matches(r, expr)} or {"nothing"})
        raise fail(f"{expr} to be {value!r} in every response", f"{len(bad)} responses had {', '.join(seen)}",
                   sample_table(bad))


def all_bodies_contain(world: World, text: str) -> None:
    responses = _need(world)
    bad = [r for r in responses if text not in r.body]
    if bad:
        raise fail(f"every response body to contain {text!r}", f"{len(bad)} of {len(responses)} did not "
                   f"(first body: {bad[0].body[:200]!r})")


def all_have_header(world: World, name: str, value: str | None = None) -> None:
    responses = _need(world)
    bad = [r for r in responses if name.lower() not in {k.lower() for k in r.headers}
           or (value is not None and {k.lower(): v for k, v in r.headers.items()}[name.lower()] != value)]
    if bad:
        want = f"header {name}" + (f": {value}" if value is not None else "")
        raise fail(f"every response to carry {want}", f"{len(bad)} of {len(responses)} did not")


def served_by(response: Response, app: str) -> list[str]:
    """Versions of `app` that served this request (not counting mirrored copies)."""
    return [s.peer.version for s in response.served_by if s.peer.app == app or s.peer.workload == app]


def version_of(response: Response, app: str) -> str:
    versions = served_by(response, app)
    return versions[-1] if versions else "none"


def every_response_from(world: World, app: str, version: str) -> None:
    responses = _need(world)
    counts = Counter(version_of(r, app) for r in responses)
    if set(counts) != {version}:
        seen = ", ".join(f"{n} from {v}" for v, n in counts.most_common())
        raise fail(f"every response to come from {app} {version}", f"saw {seen}")
