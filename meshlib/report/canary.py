"""Evidence for a canary run: the per-tick table and a weights-over-time chart (hand-written SVG, no dependencies).

Both take the history a backend reports (`canary_history`): one dict per analysis tick with `time` (seconds
on the analysis clock), `phase`, `canaryWeight`, `failedChecks`, `primaryWeight`, `routeCanaryWeight` and
`metrics` ({name: value or None for "no values found"}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from meshlib.expect import table

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
    """Canary and primary weights as steps over analysis time, ticks coloured by phase, failed checks marked."""
    width, height = 760, 340
    left, right, top, bottom = 56, 150, 44, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    if not history:
        out.append(f'<text x="{left}" y="{top + 20}">no analysis tick yet</text></svg>')
        return "\n".join(out)
    start = history[0]["time"]
    times = [p["time"] - start for p in history]
    step = (times[-1] / (len(times) - 1)) if len(times) > 1 and times[-1] > 0 else 1.0
    span = (times[-1] + step) or 1.0

    def x(t: float) -> float:
        return round(left + plot_w * t / span, 1)

    def y(weight: float) -> float:
        return round(top + plot_h * (1 - weight / 100), 1)

    for w in (0, 25, 50, 75, 100):  # grid and y axis
        out.append(f'<line x1="{left}" y1="{y(w)}" x2="{left + plot_w}" y2="{y(w)}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{y(w) + 4}" text-anchor="end">{w}%</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#616161"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#616161"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
               "analysis time (s, on the canary's clock)</text>")
    for t in times:  # x ticks
        out.append(f'<line x1="{x(t)}" y1="{top + plot_h}" x2="{x(t)}" y2="{top + plot_h + 4}" stroke="#616161"/>')
    labels = max(1, len(times) // 8)
    for t in times[::labels]:
        out.append(f'<text x="{x(t)}" y="{top + plot_h + 16}" text-anchor="middle">{t:.0f}</text>')

    # phase bands along the bottom
    band_y = top + plot_h + 22
    i = 0
    while i < len(history):
        j = i
        while j + 1 < len(history) and history[j + 1]["phase"] == history[i]["phase"]:
            j += 1
        x0, x1 = x(times[i]), x(times[j + 1] if j + 1 < len(times) else times[j] + step)
        phase = str(history[i]["phase"])
        out.append(f'<rect x="{x0}" y="{band_y}" width="{max(x1 - x0, 1):.1f}" height="12" '
                   f'fill="{PHASE_COLOURS.get(phase, "#9e9e9e")}" opacity="0.8"><title>{escape(phase)}</title></rect>')
        i = j + 1

    def steps(key: str) -> str:
        pts = []
        for k, p in enumerate(history):
            w = p.get(key)
            w = 0 if w is None else w
            end = times[k + 1] if k + 1 < len(times) else times[k] + step
            pts += [f"{x(times[k])},{y(w)}", f"{x(end)},{y(w)}"]
        return " ".join(pts)

    out.append(f'<polyline points="{steps("primaryWeight")}" fill="none" stroke="{PRIMARY_COLOUR}" '
               'stroke-width="2" stroke-dasharray="5,3"/>')
    out.append(f'<polyline points="{steps("canaryWeight")}" fill="none" stroke="{CANARY_COLOUR}" stroke-width="2.5"/>')
    previous_failed = 0
    for k, p in enumerate(history):
        phase = str(p["phase"])
        cx, cy = x(times[k]), y(p["canaryWeight"])
        tip = f"+{times[k]:.0f}s {phase} weight {p['canaryWeight']} failedChecks {p['failedChecks']}"
        out.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="{PHASE_COLOURS.get(phase, "#9e9e9e")}" '
                   f'stroke="white"><title>{escape(tip)}</title></circle>')
        if p["failedChecks"] > previous_failed:
            out.append(f'<text x="{cx}" y="{cy - 8}" text-anchor="middle" fill="#e53935" font-size="13" '
                       f'font-weight="bold">✕<title>failed check {p["failedChecks"]}</title></text>')
        previous_failed = p["failedChecks"]

    lx, ly = left + plot_w + 16, top + 6  # legend
    out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{CANARY_COLOUR}" stroke-width="2.5"/>')
    out.append(f'<text x="{lx + 28}" y="{ly + 4}">canary weight</text>')
    out.append(f'<line x1="{lx}" y1="{ly + 18}" x2="{lx + 22}" y2="{ly + 18}" stroke="{PRIMARY_COLOUR}" '
               'stroke-width="2" stroke-dasharray="5,3"/>')
    out.append(f'<text x="{lx + 28}" y="{ly + 22}">primary weight</text>')
    out.append(f'<text x="{lx + 6}" y="{ly + 42}" fill="#e53935" font-weight="bold" text-anchor="middle">✕</text>')
    out.append(f'<text x="{lx + 28}" y="{ly + 42}">failed check</text>')
    seen = list(dict.fromkeys(str(p["phase"]) for p in history))
    for n, phase in enumerate(seen):
        py = ly + 62 + 16 * n
        out.append(f'<rect x="{lx}" y="{py - 9}" width="22" height="11" fill="{PHASE_COLOURS.get(phase, "#9e9e9e")}"/>')
        out.append(f'<text x="{lx + 28}" y="{py}">{escape(phase)}</text>')
    out.append("</svg>")
    return "\n".join(out)
