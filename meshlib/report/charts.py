"""Charts drawn with matplotlib (its object API and SVG backend: no pyplot state, no display), as SVG text.

    split_chart({"v1": 903, "v2": 97}, {"v1": 0.9, "v2": 0.1}, "catalog: observed split vs routes")

SVG text stays text (`svg.fonttype: none`), so a chart is searchable and small; it refers to no file or font URL.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OBSERVED, EXPECTED = "#1e88e5", "#90a4ae"
RC = {"svg.fonttype": "none", "svg.hashsalt": "meshlib", "font.family": "DejaVu Sans", "font.size": 10,
      "axes.spines.top": False, "axes.spines.right": False}


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def svg_of(figure: Figure) -> str:
    """The figure as one SVG document (no metadata date, so the same chart gives the same text)."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context(RC):
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": "meshlib"})
    return out.getvalue()


def split_chart(observed: Mapping[str, int], expected: Mapping[str, float] | None, title: str) -> str:
    """Observed shares per version as bars, the expected shares (0..1) beside them; counts on the bars."""
    import matplotlib

    with matplotlib.rc_context(RC):
        versions = list(dict.fromkeys([*(expected or {}), *observed]))
        total = sum(observed.values()) or 1
        fig = new_figure(max(4.0, 1.3 * len(versions) + 2), 3.2)
        ax = fig.add_subplot()
        xs = range(len(versions))
        width = 0.38 if expected else 0.6
        shift = width / 2 if expected else 0.0
        bars = ax.bar([x - shift for x in xs], [100 * observed.get(v, 0) / total for v in versions], width,
                      color=OBSERVED, label=f"observed ({total} requests)")
        ax.bar_label(bars, labels=[f"{100 * observed.get(v, 0) / total:.1f}%\n({observed.get(v, 0)})"
                                   for v in versions], fontsize=9)
        if expected:
            ebars = ax.bar([x + shift for x in xs], [100 * expected.get(v, 0) for v in versions], width,
                           color=EXPECTED, label="expected")
            ax.bar_label(ebars, labels=[f"{100 * expected.get(v, 0):g}%" for v in versions], fontsize=9)
        ax.set_xticks(list(xs), versions)
        ax.set_ylim(0, 118)
        ax.set_ylabel("share of requests (%)")
        ax.set_title(title, loc="left", fontsize=11)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
        return svg_of(fig)
