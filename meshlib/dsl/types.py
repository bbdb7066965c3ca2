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


@parse.with_pattern(r'[^"]+')
def parse_quoted(text: str) -> str:
    """Text between double quotes: anything but a quote, so a step cannot swallow the next quoted argument."""
    return text


@parse.with_pattern(r"[^`]+")
def parse_query(text: str) -> str:
    """A query between backticks (PromQL)."""
    return text


@parse.with_pattern(r"[A-Za-z0-9!#$%&'*+.^_|~\-]+")
def parse_header_name(text: str) -> str:
    """An HTTP header name (RFC 9110 token): `x-istio-cohort`"""
    return text


@parse.with_pattern(r"ingress gateway|[A-Za-z0-9_.\-]+ sidecar")
def parse_proxy(text: str) -> str:
    """Which proxy: `ingress gateway` or `WORKLOAD sidecar`"""
    return text


@parse.with_pattern(r"[A-Za-z0-9_.\-]+(?:(?:, | and | or )[A-Za-z0-9_.\-]+)*")
def parse_list(text: str) -> str:
    """Words separated by commas (and a final `and`): `10, 20, 30` or `alice, bob and carol`"""
    return text


TYPES = {"Percent": parse_percent, "Duration": parse_seconds, "Name": parse_word, "Method": parse_method,
         "Quoted": parse_quoted, "Query": parse_query, "HeaderName": parse_header_name, "Proxy": parse_proxy,
         "List": parse_list}
