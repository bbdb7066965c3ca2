"""Evidence for a canary run: the per-tick table and a chart of weights and metrics over time (matplotlib).

Both take the history a backend reports (`canary_history`): one dict per analysis tick with `time` (seconds
on the analysis clock), `phase`, `canaryWeight`, `failedChecks`, `primaryWeight`, `routeCanaryWeight` and
`metrics` ({name: value or None for "no values found"}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshlib.expect import table
from meshlib.report.charts import RC, new_figure, svg_of
from meshlib.report.tables import html_table

History = Sequence[Mapping[str, Any]]

PHASE_COLOURS = {
    "Initializing": "#9e9e9e", "Initialized": "#607d8b", "Waiting": "#bcaaa4", "Progressing": "#1e88e5",
    "WaitingPromotion": "#8d6e63", "Promoting": "#7cb342", "Finalising": "#43a047", "Succeeded": "#2e7d32",
    "Failed": "#e53935",
}
CANARY_COLOUR = "#fb8c00"
PRIMARY_COLOUR = "#3949ab"


def metric_names(history: History) -> list[str]:
    names: list[str] = []
    for point in history:
        for name in point.get("metrics") or {}:
            if name not in names:
                names.append(name)
    return names


def _value(value: float | None) -> str:
    return "no values" if value is None else f"{value:.2f}"


def history_table(history: History) -> str:
    """One row per tick: time since the first tick, phase, weights, failed checks and the metric values read."""
    if not history:
        return "  (no analysis tick yet)"
    start = history[0]["time"]
    names = metric_names(history)
    rows = []
    for i, p in enumerate(history):
        metrics = p.get("metrics") or {}
        rows.append((i, f"+{p['time'] - start:.0f}s", p["phase"], p["canaryWeight"],
                     f"{p.get('primaryWeight', '')}/{p.get('routeCanaryWeight', '')}", p["failedChecks"],
                     *(_value(metrics[n]) if n in metrics else "-" for n in names)))
    header = ("tick", "time", "phase", "canaryWeight", "routes primary/canary", "failedChecks", *names)
    return table(header, rows)


def weights_svg(history: History, title: str) -> str:
    """Canary and primary weights as steps over analysis time, phases as coloured bands, failed checks marked,
    and below them the metric values each tick read (gaps where a query found no values). Drawn with matplotlib."""
    import matplotlib

    with matplotlib.rc_context(RC):
        names = metric_names(history)
        fig = new_figure(8.2, 3.6 + 1.5 * len(names))
        axes = fig.subplots(1 + len(names), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": [3] + [1.4] * len(names)})[:, 0]
        top = axes[0]
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
        if not history:
            top.text(0.5, 0.5, "no analysis tick yet", ha="center", va="center", transform=top.transAxes)
            top.set_axis_off()
            return svg_of(fig)
        start = history[0]["time"]
        times = [p["time"] - start for p in history]
        step = (times[-1] / (len(times) - 1)) if len(times) > 1 and times[-1] > 0 else 1.0
        ends = [*times[1:], times[-1] + step]
        for phase, x0, x1 in _phase_spans(history, times, ends):
            top.axvspan(x0, x1, color=PHASE_COLOURS.get(phase, "#9e9e9e"), alpha=0.13, lw=0, label=phase)
        canary = [p["canaryWeight"] or 0 for p in history]
        primary = [p.get("primaryWeight") or 0 for p in history]
        top.step([*times, ends[-1]], [*canary, canary[-1]], where="post", color=CANARY_COLOUR, lw=2.4,
                 label="canary weight")
        top.step([*times, ends[-1]], [*primary, primary[-1]], where="post", color=PRIMARY_COLOUR, lw=1.8,
                 ls="--", label="primary weight")
        failed = [(t, w) for t, w, p, q in zip(times, canary, history, [{"failedChecks": 0}, *history[:-1]],
                                                     strict=True)
                  if p["failedChecks"] > q["failedChecks"]]
        if failed:
            top.scatter([t for t, _ in failed], [w + 4 for _, w in failed], marker="X", s=70, color="#e53935",
                        zorder=5, label="failed check")
        top.set_ylim(-3, 108)
        top.set_ylabel("weight (%)")
        top.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        for low, name in zip(axes[1:], names, strict=True):  # one panel per metric: each has its own unit
            values = [(p.get("metrics") or {}).get(name) for p in history]
            low.plot(times, [float("nan") if v is None else v for v in values], marker="o", ms=4, color="#00897b")
            missing = [t for t, v, p in zip(times, values, history, strict=True)
                       if v is None and name in (p.get("metrics") or {})]
            if missing:
                low.scatter(missing, [0] * len(missing), marker="x", s=40, color="#e53935", label="no values")
                low.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
            low.set_ylabel(name, fontsize=8)
        axes[-1].set_xlabel("analysis time (s, on the canary's clock)")
        return svg_of(fig)


def _phase_spans(history: History, times: list[float], ends: list[float]) -> list[tuple[str, float, float]]:
    spans: list[tuple[str, float, float]] = []
    for p, t, end in zip(history, times, ends, strict=True):
        phase = str(p["phase"])
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], end)
        else:
            spans.append((phase, t, end))
    return spans


def history_document(history: History, title: str) -> str:
    """The per-tick table as an HTML evidence document."""
    if not history:
        return html_table(("tick",), [], title=title, notes=["no analysis tick yet"])
    start = history[0]["time"]
    names = metric_names(history)
    rows = []
    for i, p in enumerate(history):
        metrics = p.get("metrics") or {}
        rows.append((i, f"+{p['time'] - start:.0f}s", p["phase"], p["canaryWeight"], p.get("primaryWeight"),
                     p["failedChecks"], *(_cell(metrics[n]) if n in metrics else "-" for n in names)))
    bad = [i for i, p in enumerate(history) if p["phase"] == "Failed"
           or (i and p["failedChecks"] > history[i - 1]["failedChecks"])]
    header = ("tick", "time", "phase", "canary weight", "primary weight", "failed checks", *names)
    return html_table(header, rows, title=title, bad=bad)


def _cell(value: float | None) -> str | float:
    return "no values" if value is None else round(value, 2)
