"""Hypothesis fuzzing of the loader and the translator: every input either works or is refused in one line.

Inputs: YAML text built from YAML's own syntax (anchors, aliases, tags, flow and block collections, control
characters, dates), the repo's manifests with their text or their values mutated, and objects generated from
meshlib's own schemas (so most of them pass validation and reach the translator). Each goes through the whole
pure pipeline (`pipeline.run_pipeline`: analyze, translate every proxy, bind, bootstrap, render, explain).
The only acceptable failure is a MeshlibError whose message is one line.

`make test` runs a few hundred examples, derandomized; `make fuzz` (MESHLIB_FUZZ=long) runs many more with fresh
randomness each time.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from helpers import CATALOG_DR, CATALOG_GATEWAY, MANIFESTS, NS, WORLD
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from pipeline import load_store, run_pipeline
from schema_strategies import EDGE_INTS, WORDS, resource

from meshlib.config import kinds
from meshlib.config.loader import parse_documents
from meshlib.errors import MeshlibError

LONG = os.environ.get("MESHLIB_FUZZ") == "long"
SCALE = int(os.environ.get("MESHLIB_FUZZ_SCALE", "20")) if LONG else 1


def fuzz(examples: int) -> settings:
    """`examples` in `make test` (derandomized: the same inputs every run); SCALE times more under `make fuzz`."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


def works_or_refused(action: Callable[[], Any]) -> None:
    """`action` succeeds, or fails with a MeshlibError of one non-empty line; anything else fails the test."""
    try:
        action()
        event("worked")
    except MeshlibError as exc:
        event("refused")
        message = str(exc)
        assert message.strip(), f"empty error message from {type(exc).__name__}"
        assert "\n" not in message, f"error spans several lines: {message!r}"


MANIFEST_FILES = sorted(p for p in MANIFESTS.rglob("*.yaml"))
TEXTS = {p: p.read_text() for p in MANIFEST_FILES}
BASE = "\n---\n".join([WORLD, CATALOG_DR, CATALOG_GATEWAY])


def run_text(text: str, version: str = "1.17") -> None:
    """`text` on top of the catalog/webapp world (its own file, so duplicates of world objects are allowed to
    replace them as a second `kubectl apply` would)."""
    store = load_store(BASE, version, NS, "world.yaml")
    store.apply_documents(parse_documents(text, "fuzz.yaml"), NS)
    run_pipeline(store)


# --- YAML text --------------------------------------------------------------------------------------------------
TOKENS = ["a", "b: ", "- ", ": ", "\n", "\n  ", "\n    ", "{", "}", "[", "]", ", ", "&x ", "*x", "&y ", "*y", "<<: ",
          "!!int ", "!!float ", "!!bool ", "!!binary ", "!!timestamp ", "!!set ", "!!str ", "!!python/object ",
          "!foo ", "? ", "|\n  ", ">-\n  ", "---\n", "...\n", "'", '"', "#", "%YAML 1.1\n", "2026-02-31",
          "2026-02-28T25:61:00Z", "0x1F", "0o17", "1_000", "190:20:30", ".inf", ".nan", "~", "null", "yes", "\t",
          "\x00", "\x07", "\x1b", "\x85", "\u2028", "\ufeff", "\\x07", "é", "kind: ", "apiVersion: v1\n",
          "metadata: {name: x}\n", "kind: Service\n", "spec:\n  ports:\n  - port: "]


@fuzz(400)
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=30).map("".join))
def test_yaml_text_loads_or_is_refused_in_one_line(text: str) -> None:
    def load() -> None:
        for doc in parse_documents(text, "fuzz.yaml"):
            yaml.safe_dump(doc.data)  # plain JSON-like values only
    works_or_refused(load)


@fuzz(150)
@given(st.sampled_from(MANIFEST_FILES), st.data())
def test_repo_manifests_with_text_edits_translate_or_are_refused(path: Path, data: st.DataObject) -> None:
    text = TEXTS[path]
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["insert", "delete", "duplicate-line"]))
        if edit == "insert":
            text = text[:at] + data.draw(st.sampled_from(TOKENS)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 12)):]
        else:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at) + 1 or len(text)
            text = text[:end] + text[start:end] + text[end:]
    works_or_refused(lambda: run_text(text))


# --- values -----------------------------------------------------------------------------------------------------
VALUES = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(EDGE_INTS), st.booleans(), st.none(),
    st.sampled_from([0.5, -1.5, 1e300, float("nan"), float("inf"), [], {}, [None], ["a"], [1, 2], {"a": 1},
                     {"number": 80}, {"host": "catalog"}, {"value": 50}, {"fieldPath": "metadata.name"},
                     ["ROUND_ROBIN"], "ROUND_ROBIN", "PASSTHROUGH", "10s", "-5s", "9" * 400 + "s", "regex[",
                     "metadata.namespace", {"attempts": 3}, {"attempts": None}, {"simple": ["RANDOM"]}]))


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


@fuzz(200)
@given(st.sampled_from(MANIFEST_FILES), st.data())
def test_repo_manifests_with_values_replaced_translate_or_are_refused(path: Path, data: st.DataObject) -> None:
    docs = [d for d in yaml.safe_load_all(TEXTS[path]) if d]
    for _ in range(data.draw(st.integers(1, 2))):
        doc = data.draw(st.sampled_from(docs))
        candidates = [p for p in _paths(doc) if len(p) >= 2] or [p for p in _paths(doc) if p]
        if not candidates:
            continue
        target = data.draw(st.sampled_from(candidates))
        parent = doc
        for key in target[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(target[-1])
        else:
            parent[target[-1]] = copy.deepcopy(data.draw(VALUES))
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    works_or_refused(lambda: run_text(text, data.draw(st.sampled_from(["1.13", "1.17", "1.24", "1.28"]))))


# --- objects generated from the schemas ---------------------------------------------------------------------------
NET = "networking.istio.io/v1beta1"
GENERATED = {
    "VirtualService": (kinds.VirtualService, NET), "DestinationRule": (kinds.DestinationRule, NET),
    "Gateway": (kinds.Gateway, NET), "ServiceEntry": (kinds.ServiceEntry, NET), "Sidecar": (kinds.Sidecar, NET),
    "Telemetry": (kinds.Telemetry, "telemetry.istio.io/v1"), "Service": (kinds.Service, "v1"),
    "Deployment": (kinds.Deployment, "apps/v1"), "IstioOperator": (kinds.IstioOperator, "install.istio.io/v1alpha1"),
    "Canary": (kinds.Canary, "flagger.app/v1beta1"),
}
OBJECTS = st.one_of(*(resource(kind, schema, api) for kind, (schema, api) in GENERATED.items()))


@fuzz(250)
@given(st.lists(OBJECTS, min_size=1, max_size=3), st.sampled_from(["1.13", "1.17", "1.22", "1.24", "1.28"]))
def test_objects_generated_from_the_schemas_translate_or_are_refused(objects: list[dict], version: str) -> None:
    for i, obj in enumerate(objects):
        obj["metadata"]["name"] = f"fuzzed-{i}"
    text = "\n---\n".join(yaml.safe_dump(o, allow_unicode=True) for o in objects)
    works_or_refused(lambda: run_text(text, version))


@fuzz(100)
@given(resource("VirtualService", kinds.VirtualService, NET), resource("DestinationRule", kinds.DestinationRule, NET))
def test_generated_catalog_routing_translates_or_is_refused(vs: dict, dr: dict) -> None:
    """The generated VirtualService and DestinationRule replace the catalog's own, so they meet the world's pods."""
    vs["metadata"]["name"], dr["metadata"]["name"] = "catalog", "catalog"
    vs["spec"]["hosts"] = ["catalog"]
    dr["spec"]["host"] = "catalog"
    text = "\n---\n".join(yaml.safe_dump(o, allow_unicode=True) for o in (vs, dr))
    works_or_refused(lambda: run_text(text))
