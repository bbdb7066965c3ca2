"""Durations and percentages as Istio, Flagger and Kubernetes write them."""

from __future__ import annotations

import re
from fractions import Fraction

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


_GO_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
               "h": 3600 * 10**9}
_GO_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_GO_MAX_NS = 2**63 - 1


def go_duration_ns(text: str) -> int:
    """Nanoseconds in a duration as Go's `time.ParseDuration` reads it (`50ms`, `1m30s`, `-1.5h`, `0`); ValueError
    otherwise. istiod reads the Duration fields of an EnvoyFilter's patch value this way (golang/protobuf's jsonpb,
    unmarshalMessage case "Duration"), so `base_interval: 50ms` is 0.05 s there, though proto3 JSON wants `0.050s`."""
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    s, negative = text, False
    if s[:1] in ("-", "+"):
        negative, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"{shown} is not a duration")
    total, pos = Fraction(0), 0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        assert m is not None  # every part of the pattern is optional
        whole, fraction, unit = m.group(1).lstrip("0") or m.group(1)[:1], (m.group(2) or "")[:18], m.group(3)
        if not whole and not fraction:
            raise ValueError(f"{shown} is not a duration")
        if unit not in _GO_UNIT_NS:
            problem = f"unknown unit {unit[:12]!r}" if unit else "missing unit"
            raise ValueError(f"{shown} is not a duration: {problem}")
        if len(whole) > 20:  # past int64 nanoseconds whatever the unit, as Go's leadingInt overflows
            raise ValueError(f"{shown} is not a duration: out of range")
        total += (int(whole or 0) + Fraction(int(fraction or 0), 10 ** len(fraction))) * _GO_UNIT_NS[unit]
        pos = m.end()
    ns = int(total)
    if ns > _GO_MAX_NS + negative:
        raise ValueError(f"{shown} is not a duration: out of range")
    return -ns if negative else ns


def proto_duration(ns: int) -> str:
    """Nanoseconds in proto3 JSON form, as protobuf prints a Duration: `0.050s`, `90s`, `-1.000000001s`."""
    seconds, nanos = divmod(abs(ns), 10**9)
    sign = "-" if ns < 0 else ""
    if nanos == 0:
        return f"{sign}{seconds}s"
    digits = f"{nanos:09d}"
    fraction = digits[:3] if nanos % 10**6 == 0 else digits[:6] if nanos % 10**3 == 0 else digits
    return f"{sign}{seconds}.{fraction}s"
