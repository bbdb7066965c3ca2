"""Tables as evidence a reviewer reads at a glance: HTML (Allure shows it in its pane, the living doc inline) or CSV
(Allure renders it as a grid). Numbers are rounded for people: `4.859999999999999` reads `4.86`.

    html_table(("status", "requests"), [(200, 95), (503, 5)], title="statuses")   # a whole HTML document
    csv_table(("status", "requests"), [(200, 95), (503, 5)])

Every HTML evidence document carries the same small stylesheet (`STYLE`) and keeps its content between `<body>`
tags, so the living doc can take the fragment (`fragment_of`) and style it once.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from html import escape as _escape

Cell = str | int | float | None

STYLE = """
.ml-ev{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2933}
.ml-ev h4{margin:.2em 0 .4em;font-size:13px;color:#334e68}
.ml-ev table{border-collapse:collapse;margin:.2em 0 .6em;font-variant-numeric:tabular-nums}
.ml-ev th{background:#eef2f7;text-align:left;font-weight:600}
.ml-ev th,.ml-ev td{border:1px solid #d9e2ec;padding:3px 9px;white-space:nowrap}
.ml-ev td.n{text-align:right}
.ml-ev tr.bad td{background:#fff1f0}
.ml-ev p.note{margin:.2em 0;color:#52606d}
.ml-ev pre{background:#f5f7fa;border:1px solid #e4e7eb;padding:6px 8px;overflow:auto;max-height:28em;margin:.2em 0}
.ml-ev details{margin:.3em 0}
.ml-ev summary{cursor:pointer;color:#2f5d8a}
.ml-ev .pill{display:inline-block;border-radius:9px;padding:0 7px;font-size:12px;background:#e3f8e9;color:#146c2e}
.ml-ev .pill.bad{background:#ffe3e3;color:#a61b1b}
"""
def escape(text: str) -> str:
    """Text for an HTML text node (quotes stay as written: PromQL and JSON read better that way)."""
    return _escape(text, quote=False)


_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S)


def number(value: float, digits: int = 4) -> str:
    """A number for people: whole numbers as they are, others to `digits` significant digits without float noise."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def tidy(value: float, digits: int = 6) -> float:
    """`value` rounded to `digits` significant digits, for JSON evidence (`4.859999999999999` → `4.86`)."""
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def cell_text(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return number(value)
    return str(value)


def _is_number(value: Cell) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_fragment(header: Sequence[str], rows: Iterable[Sequence[Cell]], *,
                   bad: Iterable[int] = ()) -> str:
    """An HTML `<table>`; numbers right-aligned, rows whose index is in `bad` shaded."""
    marked = set(bad)
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        out.append('<tr class="bad">' if i in marked else "<tr>")
        out += [f'<td class="n">{escape(cell_text(c))}</td>' if _is_number(c) else f"<td>{escape(cell_text(c))}</td>"
                for c in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def paragraphs(lines: Sequence[str]) -> str:
    """Prose as written in a feature (lines, blank lines between paragraphs) as HTML paragraphs."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(f"<p>{escape(' '.join(current))}</p>")
            current = []
    return "".join(out)


def html_document(fragment: str, title: str = "") -> str:
    """A whole HTML document around an evidence fragment, with the evidence stylesheet."""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><div class="ml-ev">{fragment}</div></body></html>')


def fragment_of(document: str) -> str:
    """The content of an evidence document's `<body>` (the whole text when it has none)."""
    found = _BODY.search(document)
    return found.group(1) if found else document


def html_table(header: Sequence[str], rows: Iterable[Sequence[Cell]], *, title: str = "",
               notes: Sequence[str] = (), bad: Iterable[int] = ()) -> str:
    """A table as a whole HTML evidence document, with an optional heading and notes below it."""
    heading = f"<h4>{escape(title)}</h4>" if title else ""
    tail = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return html_document(heading + table_fragment(header, rows, bad=bad) + tail, title)


def folded(summary: str, body: str, *, pre: bool = True) -> str:
    """A long excerpt folded under a one-line summary (`<details>`); `body` is text unless `pre` is False."""
    inner = f"<pre>{escape(body)}</pre>" if pre else body
    return f"<details><summary>{escape(summary)}</summary>{inner}</details>"


def csv_table(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """The same table as CSV, numbers rounded like the HTML."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell_text(c) for c in row] for row in rows)
    return buffer.getvalue()
