"""Hypothesis strategies derived from meshlib's own manifest schemas, so generated objects reach the translator.

Values are drawn mostly from what the schema accepts (a small vocabulary of hosts, subsets, durations, regexes
and edge numbers) and sometimes from outside it: the pipeline must either translate the object or refuse it
with a MeshlibError.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from meshlib.config import kinds
from meshlib.config.schema import Lazy, ListOf, MapOf, Obj, Scalar, Schema

WORDS = ["catalog", "webapp", "catalog.istioinaction.svc.cluster.local", "webapp.istioinaction.io", "*",
         "*.istioinaction.io", "version-v1", "version-v2", "mesh", "catalog-gateway", "istioinaction/catalog-gateway",
         "x-user", "/", "/items", "/api/catalog", "", " ", "a b", "ü", "\x07", "5xx,reset,503", "gateway-error",
         "http", "HTTP", "TCP", "GRPC", "https", "10.0.0.1", "::1", "istioinaction", "jsonplaceholder.typicode.com",
         "envoy", "/dev/stdout", "true", "0", "-1", "None", ":authority", "host", "a" * 300]
DURATIONS = ["0", "0s", "1ms", "500ms", "1.5s", "10s", "1m30s", "2h", "315576000000s", "0.0001ns", "999999h"]
REGEXES = [".*", "/items.*", "^a$", "(a|b)+", "[a-z]{2,5}", "\\d+", "é+", "a{0,1000}"]
EDGE_INTS = [0, 1, 2, 3, 9, 10, 50, 80, 99, 100, 101, 443, 503, 599, 8080, 30000, 65535, 65536, 2**31 - 1, 2**31,
             2**63, -1, -2**31]
LABELS = st.dictionaries(st.sampled_from(["app", "version", "istio", "zone"]),
                         st.sampled_from(["catalog", "webapp", "v1", "v2", "ingressgateway", ""]), max_size=3)
# rules that take one action: generating several at once would only exercise one error
ACTIONS = ("route", "redirect", "directResponse")


def scalar(schema: Scalar) -> st.SearchStrategy[Any]:
    name = schema.name
    if name.startswith("one of "):
        choices = name.removeprefix("one of ").split(", ")
        return st.one_of(st.sampled_from(choices), st.sampled_from(WORDS))
    if "duration" in name:
        return st.sampled_from(DURATIONS)
    if "regular expression" in name:
        return st.sampled_from(REGEXES)
    parts: list[st.SearchStrategy[Any]] = []
    if str in schema.types:
        parts.append(st.sampled_from(WORDS))
    if int in schema.types:
        ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-5, 70000))
        if schema.check_value is not None:
            check = schema.check_value
            ints = st.one_of(ints.filter(lambda v: check(v) is None), ints)
        parts.append(ints)
    if float in schema.types:
        parts.append(st.sampled_from([0.0, 0.5, 10.0, 99.9, 100.0, 100.5, float("nan"), float("inf")]))
    if bool in schema.types:
        parts.append(st.booleans())
    if not parts:  # Anything
        parts.append(st.one_of(st.sampled_from(WORDS), st.integers(), st.booleans()))
    return st.one_of(*parts)


def for_schema(schema: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    if isinstance(schema, Lazy):
        return for_schema(schema.get(), depth)
    if isinstance(schema, Scalar):
        return scalar(schema)
    if depth > 6:
        return st.just({})
    if isinstance(schema, ListOf):
        return st.lists(for_schema(schema.item, depth + 1), max_size=3)
    if isinstance(schema, MapOf):
        if schema.item is kinds.Str or (isinstance(schema.item, Scalar) and schema.item.types == (str,)):
            return LABELS if depth else st.dictionaries(st.sampled_from(WORDS), st.sampled_from(WORDS), max_size=2)
        return st.dictionaries(st.sampled_from(["x-user", "end-user", "v", "us-west/zone1/*"]),
                               for_schema(schema.item, depth + 1), max_size=2)
    if isinstance(schema, Obj):
        return obj(schema, depth)
    raise AssertionError(f"no strategy for {schema!r}")


def obj(schema: Obj, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    fields = {k: v for k, v in schema.fields.items() if k != "delegate"}
    if not fields:
        return st.just({})
    exclusive = [set(schema.one_of)] if schema.one_of else []
    if set(ACTIONS) <= set(fields):
        exclusive.append(set(ACTIONS))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=min(len(fields), 5)))
        names += [k for k in schema.required if k in fields and k not in names]
        for group in exclusive:
            chosen = [n for n in names if n in group]
            names = [n for n in names if n not in group or n == (chosen[0] if chosen else None)]
        return {k: draw(for_schema(fields[k], depth + 1)) for k in names}

    return build()


def resource(kind: str, spec_schema: Schema, api_version: str, name: str = "fuzzed") -> st.SearchStrategy[dict]:
    return for_schema(spec_schema).map(lambda spec: {"apiVersion": api_version, "kind": kind,
                                                     "metadata": {"name": name}, "spec": spec})
