"""Step parameter types shared by the behave and pytest-bdd adapters (cfparse syntax: `{share:Percent}`)."""

from __future__ import annotations

import parse

from meshlib.units import parse_duration


@parse.with_pattern(r"\d+(?:\.\d+)?\s?%")
def parse_percent(text: str) -> float:
    """`10%` → 0.10"""
    return float(text.rstrip("%").strip()) / 100


@parse.with_pattern(r"\d+(?:\.\d+)?\s?(?:ms|s|m|h|seconds?|minutes?)")
def parse_seconds(text: str) -> float:
    """`30s`, `2 seconds`, `1m` → seconds"""
    t = text.replace(" ", "").replace("seconds", "s").replace("second", "s").replace("minutes", "m")
    return parse_duration(t.replace("minute", "m"))


@parse.with_pattern(r"[A-Za-z0-9_.:/\-]+")
def parse_word(text: str) -> str:
    """A host, workload, version or path: no spaces."""
    return text


@parse.with_pattern(r"GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS")
def parse_method(text: str) -> str:
    """An HTTP method in capitals: `POST`"""
    return text


TYPES = {"Percent": parse_percent, "Duration": parse_seconds, "Name": parse_word, "Method": parse_method}
