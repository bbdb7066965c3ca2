"""Response checks say what they looked at, and a check whose JSONPath can never match fails instead of passing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from meshlib.config.store import Workload
from meshlib.dsl import distribution, hidden, logs, responses, sending
from meshlib.dsl.world import World
from meshlib.errors import InputError
from meshlib.expect import ExpectationFailed
from meshlib.local.envoy.records import Served
from meshlib.local.metrics import Peer
from meshlib.traffic import Plan, Response

ITEMS = [{"id": 1, "name": "Elinor Glasses", "price": 2.0}, {"id": 2, "name": "Mustard Hat", "price": 7.5}]
JSON = {"Content-Type": "application/json"}


def world(*bodies: Any, headers: dict[str, str] | None = None) -> World:
    w = World(backend=None, namespace="istioinaction", manifests=Path("."))  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []
    w.evidence = lambda name, body, _kind: seen.append((name, body))
    w.responses = [Response(f"id-{i}", 200, dict(headers or JSON), b if isinstance(b, str) else json.dumps(b), 1.0)
                   for i, b in enumerate(bodies)]
    w.recorded = seen  # type: ignore[attr-defined]
    return w


def test_a_negative_check_passes_when_the_path_could_match_and_says_what_it_looked_at() -> None:
    w = world(ITEMS, ITEMS, "upstream connect error")
    responses.none_contain(w, "$[*].imageUrl")
    responses.none_contain(w, "$..imageUrl")
    responses.exactly_contain(w, 0, "$[*].imageUrl")
    assert ("JSONPath $[*].imageUrl", "looked at 3 responses (2 with a JSON body) for $[*].imageUrl: 0 matched") \
        in w.recorded  # type: ignore[attr-defined]


@pytest.mark.parametrize(("expr", "why"), [
    ("$.nmae", r"\$.nmae can never match: its last step reads a field, but \$ is a list in every body "
               r"\(for the field of each element write \$\[\*\]\.<field>\)"),
    ("$.items[*].imageUrl", r"its parent \$.items\[\*\] matched nothing in any of the 2 JSON bodies"),
    ("$[0][1]", r"its last step needs a list, but \$\[0\] is an object in every body"),
])
def test_a_negative_check_whose_path_can_never_match_fails_with_why(expr: str, why: str) -> None:
    with pytest.raises(ExpectationFailed, match=why):
        responses.none_contain(world(ITEMS, ITEMS), expr)
    with pytest.raises(ExpectationFailed, match=why):
        responses.exactly_contain(world(ITEMS, ITEMS), 0, expr)


def test_a_filter_pointed_at_an_object_fails_with_a_hint() -> None:
    w = world({"items": ITEMS}, {"items": ITEMS})
    responses.none_contain(w, "$.items[?(@.price > 100)]")  # at the list: a real "none"
    with pytest.raises(ExpectationFailed, match=r"needs a list, but \$ is an object in every body \(point it at a "
                                                r"list, for example \$\.items\[…\]\)"):
        responses.none_contain(w, "$[?(@.price > 100)]")


def test_a_negative_check_over_bodies_that_are_not_json_fails() -> None:
    w = world("<html>no</html>", "<html>no</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ExpectationFailed, match=r"none of the 2 responses had a JSON body \(2 × text/html\)"):
        responses.none_contain(w, "$..imageUrl")


def test_positive_checks_still_fail_on_misses_and_name_an_impossible_path() -> None:
    w = world(ITEMS, ITEMS)
    responses.all_contain(w, "$[*].name")
    with pytest.raises(ExpectationFailed, match=r"2 of 2 did not \(\$\.name can never match: its last step reads"):
        responses.all_contain(w, "$.name")
    with pytest.raises(ExpectationFailed, match="1 responses to contain"):
        responses.exactly_contain(w, 1, "$[*].name")


def test_every_check_over_no_responses_is_an_error_not_a_pass() -> None:
    empty = world()
    for check in (lambda: responses.none_contain(empty, "$..x"), lambda: responses.every_status(empty, 200),
                  lambda: responses.all_have_header(empty, "server")):
        with pytest.raises(ExpectationFailed, match="no requests have been sent"):
            check()


def test_an_invalid_jsonpath_is_one_clear_input_error() -> None:
    with pytest.raises(InputError, match=r"invalid JSONPath '\$\[\*': .* \(write it like"):
        responses.none_contain(world(ITEMS), "$[*")


def test_header_value_check_names_what_was_seen() -> None:
    w = world(ITEMS, headers={"Content-Type": "application/json; charset=utf-8"})
    responses.all_have_header(w, "content-type")
    with pytest.raises(ExpectationFailed, match=r"1 of 1 did not: 1 × application/json; charset=utf-8"):
        responses.all_have_header(w, "content-type", "application/json")


@pytest.mark.parametrize(("plan", "message"), [
    (dict(count=0), "0 requests: send between 1 and 100,000"),
    (dict(count=10, concurrency=0), "0 requests at a time: use 1 to 1000"),
    (dict(seconds=2, rate=0), "a rate of 0 per second: use more than 0"),
    (dict(seconds=0, rate=5), "sending for 0 s"),
])
def test_a_plan_that_sends_nothing_is_refused(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Plan(**plan)


def test_zero_at_a_time_is_refused_where_it_is_written() -> None:
    w = world()
    with pytest.raises(InputError, match="0 requests at a time"):
        sending.set_concurrency(w, 0)
    assert w.concurrency == 8


def _served(rid: str, workload: str, version: str, status: int, attempt: int, mirrored: bool = False) -> Served:
    peer = Peer.of(workload, "istioinaction", {"app": workload.split("-")[0], "version": version})
    return Served(rid, f"{workload}-1", peer,
                  f"{workload.split('-')[0]}:80", "/items", status, mirrored, 1.0 + attempt, attempt)


def test_a_retry_that_hid_a_503_is_shown_and_fails_no_request_was_retried() -> None:
    w = world(ITEMS, ITEMS, ITEMS)
    w.responses[0].served_by = [_served("id-0", "catalog", "v2", 503, 1), _served("id-0", "catalog", "v1", 200, 2)]
    w.responses[1].served_by = [_served("id-1", "catalog", "v1", 200, 1)]
    w.responses[2].served_by = [_served("id-2", "catalog", "v1", 200, 1)]
    what = hidden.of(w.responses)
    assert what.lines() == ["1 of 3 requests were retried (1 extra try)",
                            "failures a retry hid from the clients: catalog v2 answered 503 ×1"]
    responses.every_status(w, 200)  # the client saw 200 every time ...
    with pytest.raises(ExpectationFailed, match=r"expected no request to be retried\n\s+but 1 of 3 requests were "
                                                r"retried \(1 extra try\); failures a retry hid"):
        responses.at_most_retried(w, 0.0)  # ... and the ledger says what it cost
    responses.at_most_retried(w, 0.34)
    with pytest.raises(ExpectationFailed, match="at most 10% of requests to be retried"):
        responses.at_most_retried(w, 0.10)


def test_a_try_that_never_reached_a_pod_still_counts_and_failed_mirror_copies_show() -> None:
    w = world(ITEMS)
    w.responses[0].served_by = [_served("id-0", "catalog", "v1", 200, 3)]  # tries 1 and 2 were refused connections
    w.responses[0].mirror_copies = [_served("id-0", "catalog", "v2", 500, 1, mirrored=True)]
    what = hidden.of(w.responses)
    assert what.retried == 1 and what.extra_tries == 2
    assert "1 of 1 mirrored copies failed (their answers are dropped): catalog v2 answered 500 ×1" in what.lines()


def test_the_retry_check_fails_when_the_ledger_followed_no_request() -> None:
    with pytest.raises(ExpectationFailed, match="none of the 2 reached a pod of the mesh"):
        responses.at_most_retried(world(ITEMS, ITEMS), 0.0)


@pytest.mark.parametrize("labels", [
    {"app": "catalog", "version": "v2"},
    {"app.kubernetes.io/name": "catalog", "app.kubernetes.io/version": "v2"},
    {"service.istio.io/canonical-name": "catalog", "service.istio.io/canonical-revision": "v2", "app": "shop"},
])
def test_workload_and_version_come_from_the_labels_istio_reads(labels: dict[str, str]) -> None:
    w = world(ITEMS, ITEMS)
    for r in w.responses:
        r.served_by = [Served(r.request_id, "catalog-v2-1", Peer.of("catalog-v2", "istioinaction", labels),
                              "catalog:80", "/items", 200, False, 1.0)]
    responses.every_response_from(w, "catalog", "v2")
    assert responses.version_of(w.responses[0], "catalog") == "v2"


def test_a_workload_without_version_labels_is_latest_as_istio_names_it() -> None:
    assert Peer.of("simple-backend-1", "istioinaction", {"app": "simple-backend"}).canonical_revision == "latest"
    assert Peer.of("web", "istioinaction", {}).canonical_service == "web"


def test_an_underpowered_split_check_leaves_a_note_for_the_console() -> None:
    """The check passes, but it could not tell 50% from 40%: that reaches the console (World.note), not only an
    attachment."""
    w = world(*([ITEMS] * 20))
    for i, r in enumerate(w.responses):
        version = "v2" if i % 2 else "v1"
        r.served_by = [Served(r.request_id, f"catalog-{version}-1",
                              Peer.of(f"catalog-{version}", "istioinaction", {"app": "catalog", "version": version}),
                              "catalog:80", "/items", 200, False, 1.0)]
    distribution.about_share(w, 0.5, "catalog", "v2")
    assert len(w.notes) == 1 and w.notes[0].startswith("catalog v2 about 50%: with 20 requests this check cannot "
                                                       "reliably tell 50% from")
    assert "power" in w.notes[0] and "send at least" in w.notes[0]


class LedgerBackend:
    """The ledger a batch is tied to: v1 served every request; the first was a retry after v2's 503."""

    unsettled: list[str] = []

    def settle(self) -> list[str]:
        return self.unsettled

    def served(self, request_id: str) -> list[Served]:
        first = [_served(request_id, "catalog-v2", "v2", 503, 1)] if request_id == "id-0" else []
        return [*first, _served(request_id, "catalog-v1", "v1", 200, 2 if first else 1)]


def test_a_batch_attaches_counts_latency_and_what_the_clients_did_not_see() -> None:
    w = world(ITEMS, ITEMS, ITEMS)
    w.backend = LedgerBackend()  # type: ignore[assignment]
    sending._record(w, None, w.responses, "3 requests through the ingress gateway")
    [body] = [b for n, b in w.recorded if n == "3 requests through the ingress gateway"]  # type: ignore[attr-defined]
    served = re.findall(r"<tr><td>([^<]*)</td><td class=\"n\">(\d+)</td><td[^>]*>[^<]*</td><td", body)
    assert served == [("catalog v1", "2"), ("catalog v2 → catalog v1", "1")], served
    assert "<th>p50</th>" in body and "1 of 3 requests were retried (1 extra try)" in body
    assert w.notes == ["3 requests through the ingress gateway: 1 of 3 requests were retried (1 extra try)",
                       "3 requests through the ingress gateway: failures a retry hid from the clients: catalog-v2 "
                       "answered 503 ×1"]


def test_a_batch_whose_records_had_not_all_arrived_is_noted_and_who_served_checks_refuse_it() -> None:
    """A request without its record would count as served by no pod: "every response from v1" or "no request was
    retried" would then be claimed over part of the batch. Status and body checks still read every response."""
    w = world(ITEMS, ITEMS, ITEMS)
    backend = LedgerBackend()
    backend.unsettled = ["pod catalog-v1-0: 2 records of the 3 requests its proxy began had arrived after 5 s"]
    w.backend = backend  # type: ignore[assignment]
    sending._record(w, None, w.responses, "3 requests through the ingress gateway")

    assert w.notes[0] == ("3 requests through the ingress gateway: not every record of who served them had arrived "
                          "(pod catalog-v1-0: 2 records of the 3 requests its proxy began had arrived after 5 s); "
                          "checks of who served this batch will fail")
    refused = r"(?s)a record of who served each of the last 3 requests\n.*pod catalog-v1-0: 2 records"
    for check in (lambda: responses.every_response_from(w, "catalog", "v1"),
                  lambda: responses.at_most_retried(w, 0.5),
                  lambda: distribution.about_share(w, 0.5, "catalog", "v2"),
                  lambda: distribution.split(w, "catalog", {"v1": 1.0})):
        with pytest.raises(ExpectationFailed, match=refused):
            check()
    responses.every_status(w, 200)
    responses.none_contain(w, "$[*].imageUrl")

    backend.unsettled = []
    sending._record(w, None, w.responses, "3 more requests")
    responses.every_response_from(w, "catalog", "v1")  # the next batch, fully recorded, is checked as usual


class LogBackend:
    """catalog v2's log with one matching line, and a proxy whose records had not all arrived."""

    def __init__(self, unsettled: list[str]) -> None:
        self.unsettled = unsettled
        self.store = self

    def workloads(self) -> list[Workload]:
        return [Workload("catalog-v2", "istioinaction", {"app": "catalog", "version": "v2"}, 1, (), None)]

    def settle(self) -> list[str]:
        return self.unsettled

    def logs(self, *_args: Any, **_kw: Any) -> list[str]:
        return ["GET catalog.istioinaction:80 /items 200"]


def test_no_log_line_is_not_claimed_while_records_are_missing() -> None:
    w = world()
    late = "pod catalog-v2-0: 0 records of the 1 requests its proxy began had arrived after 5 s"
    w.backend = LogBackend([late])  # type: ignore[assignment]
    refused = (r"(?s)expected no catalog v2 log line with '-shadow'\n\s+but that cannot be told: not every proxy "
               r"record had arrived\n\s+pod catalog-v2-0")
    with pytest.raises(ExpectationFailed, match=refused):
        logs.logs_show_none(w, "catalog", "v2", "-shadow")
    logs.logs_show_some(w, "catalog", "v2", "/items")  # what was found is found
    assert w.notes == [f"catalog logs: not every proxy record had arrived ({late})"]

    w.backend.unsettled = []  # type: ignore[attr-defined]
    logs.logs_show_none(w, "catalog", "v2", "-shadow")
    with pytest.raises(ExpectationFailed, match="1 lines have it"):
        logs.logs_show_none(w, "catalog", "v2", "/items")
