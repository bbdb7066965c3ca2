"""Flagger's metric checks: the builtin Istio queries, MetricTemplate rendering, thresholds and their messages.

The values come from a `MetricProvider` the runtime supplies (Prometheus, or the embedded proxies' counters);
this module only decides pass/fail and words the result the way Flagger's events do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from meshlib.canary.spec import DEFAULT_METRIC_INTERVAL, Canary

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN = (SUCCESS_RATE, DURATION)

_SEL = ('reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"')
BUILTIN_QUERIES = {
    SUCCESS_RATE: (f'sum(rate(istio_requests_total{{{_SEL},response_code!~"5.*"}}[{{{{ interval }}}}])) / '
                   f'sum(rate(istio_requests_total{{{_SEL}}}[{{{{ interval }}}}])) * 100'),
    DURATION: (f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{_SEL}}}'
               f'[{{{{ interval }}}}])) by (le))'),
}


class MetricQueryError(Exception):
    """A provider could not run a query (not the same as "no values found", which is a `None` result)."""


class MetricProvider(Protocol):
    """Answers Flagger's metric queries. Return None for "no values found" (no traffic, NaN)."""

    def builtin(self, name: str, *, query: str, target: str, namespace: str, interval: str) -> float | None:
        """`request-success-rate` in percent or `request-duration` (p99) in milliseconds for `target`."""
        ...

    def query(self, query: str, *, provider: Mapping[str, Any]) -> float | None:
        """A rendered MetricTemplate (or inline) query against `provider` (the template's `spec.provider`)."""
        ...


class MetricRenderError(Exception):
    pass


_PLACEHOLDER = re.compile(r"{{\s*(.*?)\s*}}")


def render_query(query: str, canary: Canary, interval: str, variables: Mapping[str, str] | None = None) -> str:
    """Substitute Flagger's template functions: name, namespace, target, service, ingress, interval, variables.X."""
    ingress = (canary.spec.get("ingressRef") or {}).get("name") or canary.target_name
    values = {"name": canary.name, "namespace": canary.namespace, "target": canary.target_name,
              "service": canary.apex, "ingress": ingress, "interval": interval}

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr in values:
            return values[expr]
        if expr.startswith("variables."):
            key = expr.removeprefix("variables.")
            if variables and key in variables:
                return str(variables[key])
            raise MetricRenderError(f"template variable {key!r} is not set in templateVariables")
        raise MetricRenderError(f'function "{expr}" not defined')

    return _PLACEHOLDER.sub(sub, query)


# --- Go's formatting, for faithful messages ----------------------------------------------------------------------
def go_float(value: float) -> str:
    """Go's `%v` for a float64 (shortest digits; exponent form below 1e-4 and from 1e6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    d = Decimal(repr(float(value))).normalize()
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    x = len(digits) + exp - 1
    if x < -4 or x >= 6:
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    return format(d, "f")


def go_duration_ms(ms: int) -> str:
    """Go's `time.Duration.String()` for a whole number of milliseconds: `500ms`, `1.5s`, `1m0s`."""
    if ms == 0:
        return "0s"
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    if ms < 1000:
        return f"{sign}{ms}ms"
    hours, rem = divmod(ms, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    seconds, frac = divmod(rem, 1000)
    secs = f"{seconds}" + (("." + f"{frac:03d}".rstrip("0")) if frac else "")
    return f"{sign}{f'{hours}h' if hours else ''}{f'{minutes}m' if hours or minutes else ''}{secs}s"


# --- checks --------------------------------------------------------------------------------------------------------
@dataclass
class AnalysisResult:
    ok: bool
    values: dict[str, float | None] = field(default_factory=dict)
    message: str = ""  # the Flagger event of the first failed check
    level: str = "warning"


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _range(metric: Mapping[str, Any]) -> tuple[float | None, float | None] | None:
    tr = metric.get("thresholdRange")
    return None if tr is None else (tr.get("min"), tr.get("max"))


def _halt(ref: str, label: str, value: float, metric: Mapping[str, Any], show_value: Callable[[float], str],
          show_bound: Callable[[float], str], legacy_is_min: bool = False,
          limit: Callable[[float], float] = float) -> str | None:
    """Flagger's threshold check: `thresholdRange` min/max, else the legacy `threshold` (a minimum for the
    success rate, a maximum otherwise). The `show_*` functions print as Flagger's message does; `limit`
    normalises the bounds (request duration compares whole milliseconds)."""
    rng = _range(metric)
    if rng is None:
        legacy = metric.get("threshold") or 0
        rng = (legacy, None) if legacy_is_min else (None, legacy)
    lo, hi = (None if b is None else limit(b) for b in rng)
    if lo is not None and value < lo:
        return f"Halt {ref} advancement {label} {show_value(value)} < {show_bound(lo)}"
    if hi is not None and value > hi:
        return f"Halt {ref} advancement {label} {show_value(value)} > {show_bound(hi)}"
    return None


def _check_plain(ref: str, name: str, value: float, metric: Mapping[str, Any]) -> str | None:
    """Custom and inline metrics: `%.2f` value against min/max, or the legacy `threshold` as a maximum."""
    return _halt(ref, name, value, metric, lambda v: f"{v:.2f}", go_float)


def _check_success_rate(ref: str, value: float, metric: Mapping[str, Any]) -> str | None:
    return _halt(ref, "success rate", value, metric, lambda v: f"{v:.2f}%", lambda b: f"{go_float(b)}%",
                 legacy_is_min=True)


def _check_duration(ref: str, value: float, metric: Mapping[str, Any]) -> str | None:
    # Flagger: time.Duration(int64(value)) * time.Millisecond, bounds likewise in whole milliseconds
    show = lambda ms: go_duration_ms(int(ms))  # noqa: E731
    return _halt(ref, "request duration", int(value), metric, show, show, limit=int)


def run_metric_checks(canary: Canary, provider: MetricProvider,
                      templates: Mapping[tuple[str, str], Mapping[str, Any]]) -> AnalysisResult:
    """Flagger's `runBuiltinMetricChecks` then `runMetricChecks`: stop at the first failure.

    `templates` maps (namespace, name) to a MetricTemplate's spec ({provider, query}).
    """
    result = AnalysisResult(ok=True)
    ref, target = canary.ref, canary.target_ref

    def fail(message: str, level: str = "warning") -> AnalysisResult:
        result.ok, result.message, result.level = False, message, level
        return result

    for metric in canary.metrics:  # builtin and inline queries
        name = metric["name"]
        interval = metric.get("interval") or DEFAULT_METRIC_INTERVAL
        if name in BUILTIN:
            query = render_query(BUILTIN_QUERIES[name], canary, interval)
            try:
                value = _clean(provider.builtin(name, query=query, target=canary.target_name,
                                                namespace=canary.namespace, interval=interval))
            except MetricQueryError as exc:
                return fail(f"Prometheus query failed: {exc}", "error")
            result.values[name] = value
            if value is None:
                tail = ": running query failed: no values found" if name == SUCCESS_RATE else ""
                return fail(f"Halt advancement no values found for istio metric {name} probably {target} "
                            f"is not receiving traffic{tail}")
            problem = (_check_success_rate if name == SUCCESS_RATE else _check_duration)(ref, value, metric)
            if problem:
                return fail(problem)
        if metric.get("query"):  # inline PromQL, rendered like a template's (scheduler_metrics.go, RenderQuery)
            try:
                query = render_query(metric["query"], canary, interval, metric.get("templateVariables"))
            except MetricRenderError as exc:
                return fail(f"Metric query render error for {name}: {exc}", "error")
            try:
                value = _clean(provider.query(query, provider={"type": "prometheus"}))
            except MetricQueryError as exc:
                return fail(f"Prometheus query failed for {name}: {exc}", "error")
            result.values[name] = value
            if value is None:
                return fail(f"Halt advancement no values found for metric: {name}")
            problem = _check_plain(ref, name, value, metric)
            if problem:
                return fail(problem)

    for metric in canary.metrics:  # MetricTemplate references
        if not metric.get("templateRef"):
            continue
        name = metric["name"]
        interval = metric.get("interval") or DEFAULT_METRIC_INTERVAL
        tref = metric["templateRef"]
        tns = tref.get("namespace") or canary.namespace
        template = templates.get((tns, tref["name"]))
        if template is None:
            return fail(f'Metric template {tref["name"]}.{tns} error: metrictemplate.flagger.app '
                        f'"{tref["name"]}" not found', "error")
        try:
            query = render_query(template.get("query", ""), canary, interval, metric.get("templateVariables"))
        except MetricRenderError as exc:
            return fail(f"Metric template {tref['name']}.{tns} query render error: {exc}", "error")
        try:
            value = _clean(provider.query(query, provider=template.get("provider") or {"type": "prometheus"}))
        except MetricQueryError as exc:
            return fail(f"Metric query failed for {name}: {exc}", "error")
        result.values[name] = value
        if value is None:
            return fail(f"Halt advancement no values found for custom metric: {name}: no values found")
        problem = _check_plain(ref, name, value, metric)
        if problem:
            return fail(problem)
    return result
