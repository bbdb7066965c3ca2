"""Checks over the last batch of responses: status, JSONPath, headers, and which version answered."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from meshlib.dsl import hidden, jsonpath
from meshlib.dsl.sending import sample_table
from meshlib.dsl.world import World
from meshlib.expect import fail
from meshlib.traffic import Response


def matches(response: Response, expr: str) -> list[Any]:
    doc = response.json()
    return [] if doc is None else jsonpath.find(doc, expr)


def _need(world: World) -> list[Response]:
    if not world.responses:
        raise fail("responses to check", "no requests have been sent in this scenario yet")
    return world.responses


def traced(world: World) -> list[Response]:
    """The last batch, for a check that reads which pods served each request. Refused when the proxies' records of
    it had not all arrived: a request without its record would count as served by no pod, and a claim such as
    "none retried" or "about 10% from v2" would be made over part of the batch."""
    responses = _need(world)
    if world.unsettled:
        raise fail(f"a record of who served each of the last {len(responses)} requests",
                   "not all had arrived when the batch ended:\n  " + "\n  ".join(world.unsettled),
                   "  (without its record a request would count as served by no pod)")
    return responses


def every_status(world: World, status: int) -> None:
    responses = _need(world)
    counts = Counter(r.status for r in responses)
    if set(counts) != {status}:
        seen = ", ".join(f"{n} × {s or 'no response'}" for s, n in counts.most_common())
        raise fail(f"every response to have status {status}", f"saw {seen}", sample_table(
            [r for r in responses if r.status != status]))


@dataclass(frozen=True)
class Look:
    """What a JSONPath check looked at: the responses, how many had JSON bodies, which of those matched."""

    expr: str
    responses: list[Response]
    json: int
    hits: list[Response]
    reach: jsonpath.Reach

    def summary(self) -> str:
        return (f"looked at {len(self.responses)} responses ({self.json} with a JSON body) for {self.expr}: "
                f"{len(self.hits)} matched")


def look(world: World, expr: str) -> Look:
    responses = _need(world)
    docs = [(r, r.json()) for r in responses]
    json_docs = [d for _, d in docs if d is not None]
    hits = [r for r, d in docs if d is not None and jsonpath.find(d, expr)]
    result = Look(expr, responses, len(json_docs), hits, jsonpath.reach(json_docs, expr))
    world.attach(f"JSONPath {expr}", result.summary(), "text")
    return result


def _applies(result: Look, expected: str) -> None:
    """A check over a path that cannot match anything checks nothing: fail, and say why."""
    if result.json == 0:
        kinds = Counter(r.headers.get("Content-Type", r.headers.get("content-type", "no content type"))
                        for r in result.responses)
        seen = ", ".join(f"{n} × {k}" for k, n in kinds.most_common(3))
        raise fail(expected, f"none of the {len(result.responses)} responses had a JSON body ({seen})",
                   sample_table(result.responses))
    why = result.reach.why_never()
    if why:
        raise fail(expected, f"{result.expr} can never match: {why}; {result.summary()}")


def none_contain(world: World, expr: str) -> None:
    result = look(world, expr)
    _applies(result, f"no response to contain {expr}")
    if result.hits:
        raise fail(f"no response to contain {expr}", f"{len(result.hits)} of {len(result.responses)} did",
                   sample_table(result.hits))


def all_contain(world: World, expr: str) -> None:
    result = look(world, expr)
    hit = {id(r) for r in result.hits}
    misses = [r for r in result.responses if id(r) not in hit]
    if misses:
        why = result.reach.why_never()
        raise fail(f"every response to contain {expr}", f"{len(misses)} of {len(result.responses)} did not"
                   + (f" ({expr} can never match: {why})" if why else ""), sample_table(misses))


def exactly_contain(world: World, count: int, expr: str) -> None:
    result = look(world, expr)
    if count == 0:
        _applies(result, f"0 responses to contain {expr}")
    if len(result.hits) != count:
        raise fail(f"{count} responses to contain {expr}", f"{len(result.hits)} of {len(result.responses)} did")


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


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers.items() if k.lower() == name.lower()), None)


def all_have_header(world: World, name: str, value: str | None = None) -> None:
    responses = _need(world)
    bad = [r for r in responses if header(r, name) is None or (value is not None and header(r, name) != value)]
    if bad:
        want = f"header {name}" + (f": {value}" if value is not None else "")
        seen = Counter(header(r, name) or "(absent)" for r in bad)
        raise fail(f"every response to carry {want}", f"{len(bad)} of {len(responses)} did not: "
                   + ", ".join(f"{n} × {v}" for v, n in seen.most_common(5)))


def served_by(response: Response, app: str) -> list[str]:
    """Versions of `app` that served this request (not counting mirrored copies)."""
    return [s.peer.canonical_revision for s in response.served_by if s.peer.is_app(app)]


def version_of(response: Response, app: str) -> str:
    versions = served_by(response, app)
    return versions[-1] if versions else "none"


def every_response_from(world: World, app: str, version: str) -> None:
    responses = traced(world)
    counts = Counter(version_of(r, app) for r in responses)
    if set(counts) != {version}:
        seen = ", ".join(f"{n} from {v}" for v, n in counts.most_common())
        raise fail(f"every response to come from {app} {version}", f"saw {seen}")


def at_most_retried(world: World, share: float) -> hidden.Hidden:
    """At most `share` of the last batch's requests needed a retry anywhere on their path (0: none did).

    Read from the ledger; a batch the ledger knows nothing of fails, since it would pass by looking at nothing."""
    responses = traced(world)
    what = hidden.of(responses)
    if what.traced == 0:
        raise fail("requests the ledger can follow", f"none of the {len(responses)} reached a pod of the mesh "
                   "(only requests served by the mesh's pods show their tries)")
    allowed = share * len(responses)
    world.attach("retries", "\n".join(what.lines() or [f"no request of {len(responses)} was retried"]))
    if what.retried > allowed:
        expected = "no request to be retried" if share == 0 else f"at most {share:.0%} of requests to be retried"
        raise fail(expected, "; ".join(what.lines()), sample_table([r for r in responses if _retried(r)]))
    return what


def _retried(response: Response) -> bool:
    return any(s.attempt > 1 for s in response.served_by)
