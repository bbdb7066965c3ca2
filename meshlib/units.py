"""Durations and percentages as Istio, Flagger and Kubernetes write them."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go/protobuf duration such as `45s`, `1m30s`, `500ms`, `0.5s`; ValueError otherwise."""
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"{text!r} is not a duration (write e.g. 500ms, 10s, 1m30s)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return total


MAX_DURATION = 315_576_000_000  # seconds: protobuf's Duration (10,000 years), the largest Envoy takes


def duration_problem(text: str) -> str | None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        return str(exc)
    if not seconds <= MAX_DURATION:
        return f"{text!r} is longer than the largest duration Envoy takes ({MAX_DURATION:,}s)"
    return None


def format_duration(seconds: float) -> str:
    """Protobuf JSON form, as Envoy prints durations: `0s`, `10s`, `0.500s`."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"
