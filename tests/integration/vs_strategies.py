"""Hypothesis strategies for the router-vs-Envoy differential test: DestinationRules, VirtualServices, requests.

Everything is drawn from small alphabets so that generated matches and generated requests meet often: a request
is built either to satisfy one match block of the VirtualService (its path, headers, query parameters and method
taken from that block, each sometimes spoiled) or freely. Names and values are chosen so that no header or query
parameter the proxies add themselves (x-forwarded-proto, x-request-id, …) is ever matched on.

The world these refer to (see test_router_vs_envoy.py): Service `catalog` (port 80) in front of three Deployments
labelled version v1/v2/v3 and track stable/stable/canary; label sets that select nothing (version v9) and subset
names a DestinationRule may leave undefined are drawn on purpose (Envoy answers 503 UH / NC for them).

Speed matters (every example also costs an xDS push), so the helpers below are plain functions over `draw` and
every strategy they draw from is built once, at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

NS = "istioinaction"
# Once disagreements between the router and Envoy (each kept as a regression case in test_router_vs_envoy.py):
# repeated headers (Envoy matches any one value), a delay before "no cluster"/"no healthy host" (DI,NC / DI,UH),
# header/query `prefix: ""` (a presence match), and what Envoy does to a request before it routes it: dot
# segments and percent-encoded letters in the path (the HCM normalizes paths) and encoded query values (matched
# undecoded). Not a probe: a fragment ("/a#b"), which Envoy answers with 400 before routing.
REPEATED_HEADERS = True
DELAY_FAULTS = True
EMPTY_PREFIX = True
PATH_PROBES: tuple[str, ...] = ("//", "/./", "/x1/../", "%61")
QUERY_PROBES: tuple[str, ...] = ("%41", "a+b", "a%2Cb")
AUTHORITY_PROBES = ("catalog.istioinaction.svc.cluster.local.",)
SUBSET_NAMES = ("a", "b", "c", "d")
SUBSET_LABELS: tuple[dict[str, str], ...] = (
    {"version": "v1"}, {"version": "v2"}, {"version": "v3"}, {"track": "stable"}, {"track": "canary"},
    {"app": "catalog"}, {"version": "v9"}, {"version": "v1", "track": "stable"}, {"version": "v2", "track": "canary"},
)
HEADER_NAMES = ("x-a", "x-b")
QUERY_NAMES = ("q", "r")
METHODS = ("GET", "POST", "PUT", "DELETE")
SEGMENTS = ("a", "b", "ab", "A", "x1")
VALUES = ("a", "b", "ab", "A", "a,b", "a-1", "")
PREFIX_VALUES = ("a", "A", "ab", *(("",) if EMPTY_PREFIX else ()))
# characters a regex-satisfying string may use: unreserved in paths, headers and query strings alike
SAFE = "abAB1x-"
AUTHORITIES = (
    "catalog", "catalog:80", "catalog.istioinaction", "catalog.istioinaction:80",
    "catalog.istioinaction.svc.cluster.local", "catalog.istioinaction.svc.cluster.local:80", "Catalog.IstioInAction:80",
)
DIRECT_STATUSES = (200, 403, 418, 503)
REDIRECT_CODES = (None, 301, 302, 307, 308)
ACTION_KINDS = ("route", "route", "route", "weighted", "weighted", "direct", "redirect")

# Regexes are built from these pieces, and so is every string drawn to match one (no `from_regex` needed):
# atom -> the strings it matches; quantifier -> how many repeats.
_ATOMS: dict[str, tuple[str, ...]] = {
    "a": ("a",), "b": ("b",), "A": ("A",), "1": ("1",), "-": ("-",), ".": tuple(SAFE), "[ab]": ("a", "b"),
    "[^/]": tuple(SAFE), "(a|b)": ("a", "b"), "(ab|x1)": ("ab", "x1"), r"\d": ("1", "7"),
}
_QUANTS: dict[str, tuple[int, ...]] = {"": (1,), "*": (0, 1, 2), "+": (1, 2), "?": (0, 1)}
_TAILS: dict[str, tuple[str, ...]] = {"": ("",), "/.*": ("/", "/a", "/b/x1"), ".*": ("", "a", "/b"),
                                      "(/.*)?": ("", "/", "/ab"), "/[^/]+": ("/a", "/x1-")}

_int = {n: st.integers(0, n) for n in (1, 2, 3, 4, 5, 9)}
_bool = st.booleans()
_atom = st.sampled_from(tuple(_ATOMS))
_quant = st.sampled_from(("", "", "*", "+", "?"))
_tail = st.sampled_from(tuple(_TAILS))
AUTHORITY_MATCHES: tuple[dict[str, str], ...] = (
    {"exact": "catalog"}, {"exact": "catalog:80"}, {"prefix": "catalog.istioinaction"},
    {"regex": "[Cc]atalog(:80)?"}, {"regex": "catalog[.].*"},
)
_PICKS: dict[str, tuple[Any, ...]] = {
    "segment": SEGMENTS, "value": VALUES, "prefix": PREFIX_VALUES, "header": HEADER_NAMES, "query": QUERY_NAMES,
    "method": METHODS, "authority": AUTHORITIES, "labels": SUBSET_LABELS, "subset_name": SUBSET_NAMES,
    "subset": (*SUBSET_NAMES, None), "kind": ACTION_KINDS, "status": DIRECT_STATUSES, "code": REDIRECT_CODES,
    "match_name": ("m0", "m1"), "scheme": ("http", "https"), "abort_status": (500, 503, 429),
    "authority_match": AUTHORITY_MATCHES,
    "fault": ("abort", "abort", "abort-off", *(("delay",) if DELAY_FAULTS else ())),
    "prefix_tail": ("", "a", "b/x1", "/", "A"), "value_tail": ("", "b", "-1"),
}
_pick = {name: st.sampled_from(values) for name, values in _PICKS.items()}
_weight = st.integers(0, 100)


def _meets(spec: dict[str, str], value: str) -> bool:
    if "exact" in spec:
        return value == spec["exact"]
    if "prefix" in spec:
        return value.startswith(spec["prefix"])
    return re.fullmatch(spec["regex"], value) is not None


# authorities that meet each authority match, so that requests can aim at them
_AUTHORITY_FOR = {repr(m): st.sampled_from(tuple(a for a in AUTHORITIES if _meets(m, a)) or AUTHORITIES)
                  for m in AUTHORITY_MATCHES}
_atom_sample = {atom: st.sampled_from(choices) for atom, choices in _ATOMS.items()}
_repeats = {quant: st.sampled_from(counts) for quant, counts in _QUANTS.items()}
_tail_sample = {tail: st.sampled_from(samples) for tail, samples in _TAILS.items()}

# the strings each generated regex matches, by construction (regex -> pieces); shared by equal regexes
_PIECES: dict[str, list[tuple[str, str]]] = {}


# --- requests --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Req:
    """One request as the client sends it to its sidecar: `headers` may repeat a name."""

    method: str
    path: str
    authority: str
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        hs = " ".join(f"-H '{k}: {v}'" for k, v in self.headers)
        return f"{self.method} {self.path} (Host: {self.authority}) {hs}".rstrip()


# --- regexes ---------------------------------------------------------------------------------------------------
def draw_regex(draw: st.DrawFn, *, path: bool) -> str:
    """A small RE2 pattern (also valid Python re): one to three quantified atoms, for paths `/…` with a tail."""
    pieces = [(draw(_atom), draw(_quant)) for _ in range(1 + draw(_int[2]))]
    if path:
        pieces = [("/", ""), *pieces, ("", draw(_tail))]
    pattern = "".join(a + q if a else q for a, q in pieces)
    _PIECES.setdefault(pattern, pieces)
    return pattern


def draw_matching(draw: st.DrawFn, pattern: str) -> str:
    out = []
    for atom, quant in _PIECES[pattern]:
        if not atom:  # a path tail
            out.append(draw(_tail_sample[quant]))
        elif atom == "/":
            out.append("/")
        else:
            out += [draw(_atom_sample[atom]) for _ in range(draw(_repeats[quant]))]
    return "".join(out)


# --- string matches --------------------------------------------------------------------------------------------
def draw_value_match(draw: st.DrawFn) -> dict[str, str]:
    """A StringMatch for a header or query value; `{}` is Istio's presence match."""
    kind = draw(_int[3])
    if kind == 0:
        return {"exact": draw(_pick["value"])}
    if kind == 1:
        return {"prefix": draw(_pick["prefix"])}
    if kind == 2:
        return {"regex": draw_regex(draw, path=False)}
    return {}


def draw_path_literal(draw: st.DrawFn) -> str:
    segments = [draw(_pick["segment"]) for _ in range(draw(_int[2]))]
    return "/" + "/".join(segments) + ("/" if segments and draw(_bool) else "")


def draw_uri_match(draw: st.DrawFn) -> dict[str, str]:
    kind = draw(_int[2])
    if kind == 0:
        return {"exact": draw_path_literal(draw)}
    if kind == 1:
        return {"prefix": draw_path_literal(draw)}
    return {"regex": draw_regex(draw, path=True)}


def _names(draw: st.DrawFn, pool: str) -> list[str]:
    first = draw(_pick[pool])
    return [first] if draw(_bool) else sorted({first, draw(_pick[pool])})


def draw_match_block(draw: st.DrawFn) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if draw(_int[9]) < 7:
        block["uri"] = draw_uri_match(draw)
    if draw(_int[9]) < 4:
        block["headers"] = {name: draw_value_match(draw) for name in _names(draw, "header")}
    if draw(_int[9]) < 3:  # often on "" too: a missing header counts as "" here (treatMissingHeaderAsEmpty)
        spec = {"exact": ""} if draw(_int[3]) == 0 else draw_value_match(draw)
        block["withoutHeaders"] = {draw(_pick["header"]): spec}
    if draw(_int[9]) < 3:
        block["queryParams"] = {name: draw_value_match(draw) for name in _names(draw, "query")}
    if draw(_int[9]) < 2:
        block["ignoreUriCase"] = True
    if draw(_int[9]) < 2:
        block["method"] = {"exact": draw(_pick["method"])}
    if draw(_int[9]) == 0:
        block["authority"] = draw(_pick["authority_match"])
    if draw(_int[9]) == 0:
        block["scheme"] = {"exact": draw(_pick["scheme"])}
    if draw(_int[4]) == 0:
        block["name"] = draw(_pick["match_name"])
    return block


# --- actions ---------------------------------------------------------------------------------------------------
def destination(subset: str | None) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": "catalog"}
    if subset is not None:
        dest["subset"] = subset
    return {"destination": dest}


def draw_action(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(_pick["kind"])
    rule: dict[str, Any] = {}
    if kind == "route":
        rule["route"] = [destination(draw(_pick["subset"]))]
    elif kind == "weighted":
        subsets = list(dict.fromkeys(draw(_pick["subset"]) for _ in range(2 + draw(_int[1]))))
        weights = [draw(_weight) for _ in subsets]
        if sum(weights) == 0:
            weights[0] = 1 + draw(_weight)
        rule["route"] = [{**destination(s), "weight": w} for s, w in zip(subsets, weights, strict=True)]
    elif kind == "direct":
        rule["directResponse"] = {"status": draw(_pick["status"]), "body": {"string": f"direct-{index}"}}
    else:
        redirect: dict[str, Any] = {"uri": f"/moved/{index}"}
        if draw(_bool):
            redirect["authority"] = "elsewhere.example"
        code = draw(_pick["code"])
        if code is not None:
            redirect["redirectCode"] = code
        rule["redirect"] = redirect
    if kind != "redirect" and draw(_int[3]) > 0:
        rule["headers"] = {"response": {"set": {"x-rule": f"r{index}"}}}
    if kind in ("route", "weighted") and draw(_int[3]) == 0:
        rule["fault"] = draw_fault(draw)
    return rule


def draw_fault(draw: st.DrawFn) -> dict[str, Any]:
    """Fault injection that is deterministic: abort always or never (no percentage: never), or a 1 ms delay."""
    kind = draw(_pick["fault"])
    if kind == "delay":
        return {"delay": {"fixedDelay": "0.001s", "percentage": {"value": 100}}}
    abort: dict[str, Any] = {"httpStatus": draw(_pick["abort_status"])}
    if kind == "abort":
        abort["percentage"] = {"value": 100}
    elif draw(_bool):
        abort["percentage"] = {"value": 0}
    return {"abort": abort}


def draw_rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = 1 + draw(_int[3])
    rules = []
    for i in range(count):
        rule: dict[str, Any] = {}
        if draw(_int[2]) == 0:
            rule["name"] = f"rule{i}"
        if i < count - 1 or draw(_bool):  # the last rule is a catch-all half of the time
            rule["match"] = [draw_match_block(draw) for _ in range(1 + draw(_int[1]))]
        rule.update(draw_action(draw, i))
        rules.append(rule)
    return rules


def draw_destination_rule(draw: st.DrawFn) -> dict[str, Any]:
    names = sorted({draw(_pick["subset_name"]) for _ in range(2 + draw(_int[2]))})
    return {"host": "catalog", "subsets": [{"name": n, "labels": dict(draw(_pick["labels"]))} for n in names]}


# --- requests aimed at a VirtualService -------------------------------------------------------------------------
def _swapcase_some(draw: st.DrawFn, text: str) -> str:
    return "".join(c.swapcase() if draw(_bool) else c for c in text)


def _satisfy(draw: st.DrawFn, spec: dict[str, str]) -> str:
    """A value for a header or query parameter that meets `spec` (presence: any value)."""
    if "exact" in spec:
        return spec["exact"]
    if "prefix" in spec:
        return spec["prefix"] + draw(_pick["value_tail"])
    if "regex" in spec:
        return draw_matching(draw, spec["regex"])
    return draw(_pick["value"])


def draw_request(draw: st.DrawFn, rules: list[dict[str, Any]]) -> Req:
    blocks = [m for r in rules for m in r.get("match") or []]
    target = blocks[draw(st.integers(0, len(blocks) - 1))] if blocks and draw(_int[4]) > 0 else {}
    spoil = draw(_int[3]) == 0  # then the path is drawn freely

    uri = target.get("uri")
    if uri is None or spoil:
        segments = [draw(_pick["segment"]) for _ in range(draw(_int[3]))]
        path = "/" + "/".join(segments) + ("/" if segments and draw(_bool) else "")
    elif "exact" in uri:
        path = uri["exact"]
    elif "prefix" in uri:
        path = uri["prefix"] + draw(_pick["prefix_tail"])
    else:
        path = draw_matching(draw, uri["regex"])
    if target.get("ignoreUriCase") and draw(_int[3]) > 0:
        path = path.upper() if draw(_bool) else _swapcase_some(draw, path)

    query: list[tuple[str, str]] = []
    for name, spec in (target.get("queryParams") or {}).items():
        if draw(_int[4]) > 0:
            query.append((name, _satisfy(draw, spec)))
    query += [(draw(_pick["query"]), draw(_pick["value"])) for _ in range(draw(_int[2]))]
    if QUERY_PROBES and draw(_int[9]) == 0:
        query.append((draw(_pick["query"]), draw(st.sampled_from(QUERY_PROBES))))
    if query:
        if draw(_bool):
            query.reverse()
        parts = [f"{k}={v}" if v or draw(_bool) else k for k, v in query]  # `?q` is q present, empty
        path += "?" + "&".join(parts)
    if PATH_PROBES and draw(_int[9]) == 0:
        path = _probe_path(path, draw(st.sampled_from(PATH_PROBES)))

    headers: list[tuple[str, str]] = []
    for name, spec in (target.get("headers") or {}).items():
        if draw(_int[4]) > 0:
            headers.append((name, _satisfy(draw, spec)))
    for name, spec in (target.get("withoutHeaders") or {}).items():
        if draw(_bool):
            headers.append((name, _satisfy(draw, spec)))
    headers += [(draw(_pick["header"]), draw(_pick["value"])) for _ in range(draw(_int[2]))]
    if draw(_bool):
        headers.reverse()
    if not REPEATED_HEADERS:  # keep the first of each name
        headers = list({k: (k, v) for k, v in reversed(headers)}.values())[::-1]
    headers = [(k.upper() if draw(_int[5]) == 0 else k, v) for k, v in headers]

    method_spec = target.get("method")
    method = method_spec["exact"] if method_spec and draw(_int[3]) > 0 else draw(_pick["method"])
    authority = draw(_pick["authority"])
    if "authority" in target and draw(_int[3]) > 0:
        authority = draw(_AUTHORITY_FOR[repr(target["authority"])])
    if AUTHORITY_PROBES and draw(_int[9]) == 0:
        authority = draw(st.sampled_from(AUTHORITY_PROBES))
    return Req(method, path, authority, tuple(headers))


def _probe_path(path: str, probe: str) -> str:
    """`path` with a dot segment, a doubled slash or a percent-encoded letter worked in."""
    path, mark, query = path.partition("?")
    if probe == "%61":
        path = path.replace("a", "%61", 1) if "a" in path else path + "%61"
    else:
        cut = path.find("/", 1)
        path = path[:cut] + probe + path[cut + 1:] if cut > 0 else probe + path[1:]
    return path + mark + query


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# --- whole cases -----------------------------------------------------------------------------------------------
@dataclass
class Case:
    destination_rule: dict[str, Any]
    rules: list[dict[str, Any]]
    requests: list[Req] = field(default_factory=list)

    def yaml(self) -> str:
        """The DestinationRule and VirtualService as one multi-document YAML text (what `mesh.apply` gets)."""
        dr = {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
              "metadata": {"name": "catalog", "namespace": NS}, "spec": self.destination_rule}
        vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
              "metadata": {"name": "catalog", "namespace": NS},
              "spec": {"hosts": ["catalog"], "gateways": ["mesh"], "http": self.rules}}
        return yaml.dump_all([dr, vs], Dumper=_DUMPER, sort_keys=False)


@st.composite
def cases(draw: st.DrawFn, min_requests: int = 2, max_requests: int = 5) -> Case:
    dr = draw_destination_rule(draw)
    rules = draw_rules(draw)
    count = min_requests + draw(st.integers(0, max_requests - min_requests))
    return Case(dr, rules, [draw_request(draw, rules) for _ in range(count)])
