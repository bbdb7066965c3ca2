"""The living documentation: one self-contained HTML page with every feature and scenario in Gherkin as written,
its result, and its pictures and evidence inline (long excerpts folded), linking to the Allure report.

    python -m meshlib.report.living_doc reports/allure-results -o reports/living-doc/index.html \\
        [--features features] [--allure-report reports/allure-report]

The page loads nothing: pictures are data: URIs, styles are inline, and it opens from disk. Features are read with
behave's own parser; results, pictures and evidence come from the Allure results of the run.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape as _escape
from os.path import relpath
from pathlib import Path
from typing import Any

from meshlib.report.allure_data import (
    Attachment,
    ScenarioResult,
    StepResult,
    read_environment,
    read_results,
    report_uids,
)
from meshlib.report.tables import STYLE, fragment_of, paragraphs

TEXT_LINES_OPEN = 8  # text evidence up to this many lines shows open, longer folds
HTML_CHARS_OPEN = 6000  # HTML evidence (tables) shows open up to this size
PICTURE_TYPES = ("image/svg+xml", "image/png", "image/jpeg")
HIDDEN_ATTACHMENTS = (".text",)  # allure-behave's copy of a doc string: the Gherkin shows it already
STATUS_ORDER = ("failed", "broken", "skipped", "passed", "not run")

PAGE_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2933;
background:#f4f6f8}
header{background:#102a43;color:#f0f4f8;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header a{color:#9fb3c8}
main{max-width:1180px;margin:0 auto;padding:18px 24px 60px}
nav.toc{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:10px 16px;margin-bottom:18px}
nav.toc ol{margin:4px 0;padding-left:22px}
section.feature{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:14px 20px;margin:18px 0}
section.feature>h2{margin:4px 0 2px;font-size:19px}
.tags{color:#627d98;font-size:12px}
.prose p{margin:.35em 0;max-width:80em}
.background{border-left:3px solid #bcccdc;padding:2px 12px;margin:10px 0;background:#f8fafc}
article.scenario{border-top:1px solid #e4e7eb;padding:12px 0 6px;margin-top:10px}
article.scenario h3{margin:0 0 4px;font-size:16px}
.badge{display:inline-block;min-width:64px;text-align:center;border-radius:10px;padding:0 9px;font-size:12px;
font-weight:600;margin-right:8px;vertical-align:2px;color:#fff}
.badge.passed{background:#2e7d32}.badge.failed{background:#c62828}.badge.broken{background:#ef6c00}
.badge.skipped{background:#78909c}.badge.not-run{background:#b0bec5}
ol.steps{list-style:none;padding-left:4px;margin:6px 0}
ol.steps>li{margin:3px 0}
.kw{font-weight:700;color:#243b53;margin-right:4px}
.mark{display:inline-block;width:16px;font-weight:700}
li.passed>.mark{color:#2e7d32}li.failed>.mark{color:#c62828}li.broken>.mark{color:#ef6c00}
li.skipped>.mark,li.untested>.mark{color:#90a4ae}
pre.docstring{background:#f5f7fa;border-left:3px solid #bcccdc;margin:4px 0 4px 24px;padding:4px 8px;overflow:auto}
table.gherkin{border-collapse:collapse;margin:4px 0 4px 24px}
table.gherkin td,table.gherkin th{border:1px solid #d9e2ec;padding:1px 8px}
.evidence{margin:2px 0 6px 24px}
.evidence>details>summary,.evidence>.open>.label{color:#486581;font-size:12.5px}
.failure{background:#fff1f0;border:1px solid #ffa39e;border-radius:6px;padding:6px 10px;margin:6px 0 6px 24px}
.failure pre{margin:0;white-space:pre-wrap}
.reason{color:#52606d;font-style:italic;margin:4px 0}
.pictures{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.pictures figure{margin:0;background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:6px;max-width:100%}
.pictures img{display:block;max-width:100%;height:auto}
.pictures figcaption{font-size:12px;color:#52606d;margin-top:2px}
.meta{font-size:12px;color:#627d98}
.summary span{margin-right:14px}
"""


@dataclass(frozen=True)
class Summary:
    features: int
    scenarios: int
    statuses: dict[str, int]
    pictures: int


def escape(text: object) -> str:
    return _escape(str(text), quote=True)


def readable(message: str) -> str:
    """A failure message without the exception's module path allure-behave puts first."""
    head, sep, rest = message.partition(": ")
    return rest if sep and "." in head and " " not in head else message


def _status_class(status: str) -> str:
    return status.replace(" ", "-")


def _worst(statuses: Iterable[str]) -> str:
    seen = set(statuses)
    return next((s for s in STATUS_ORDER if s in seen), "not run")


# --- evidence ---------------------------------------------------------------------------------------
def _data_uri(a: Attachment) -> str:
    return f"data:{a.mime};base64,{base64.b64encode(a.data()).decode()}"


def _is_picture(a: Attachment) -> bool:
    return a.mime in PICTURE_TYPES and a.path.is_file()


def pictures_html(attachments: Sequence[Attachment]) -> str:
    figures = [f'<figure class="picture"><img alt="{escape(a.name)}" src="{_data_uri(a)}">'
               f"<figcaption>{escape(a.name.removeprefix('picture: '))}</figcaption></figure>"
               for a in attachments if _is_picture(a)]
    return f'<div class="pictures">{"".join(figures)}</div>' if figures else ""


def _csv_html(text: str) -> str:
    import csv

    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def evidence_html(a: Attachment) -> str:
    """One piece of evidence: HTML tables open, short text open, anything long folded under its name."""
    if a.name in HIDDEN_ATTACHMENTS or _is_picture(a) or not a.path.is_file():
        return ""
    text = a.text()
    if a.mime == "text/html":
        inner, size = fragment_of(text), len(text)
        long = size > HTML_CHARS_OPEN
    elif a.mime == "text/csv":
        inner, long = _csv_html(text), text.count("\n") > 2 * TEXT_LINES_OPEN
    else:
        inner, long = f"<pre>{escape(text)}</pre>", text.count("\n") >= TEXT_LINES_OPEN
    if long:
        lines = text.count("\n") + 1
        what = f"{lines} lines" if a.mime.startswith("text/plain") or a.mime.endswith("json") else "folded"
        return (f'<div class="evidence ml-ev"><details><summary>{escape(a.name)} ({what})</summary>{inner}'
                "</details></div>")
    return f'<div class="evidence ml-ev"><div class="open"><div class="label">{escape(a.name)}</div>{inner}</div></div>'


# --- Gherkin ----------------------------------------------------------------------------------------
def _tags(tags: Sequence[str]) -> str:
    return f'<div class="tags">{" ".join(escape("@" + t) for t in tags)}</div>' if tags else ""


def _prose(lines: Sequence[str]) -> str:
    out = paragraphs(lines)
    return f'<div class="prose">{out}</div>' if out else ""


def _gherkin_extras(step: Any) -> str:
    out = ""
    if getattr(step, "text", None):
        out += f'<pre class="docstring">{escape(step.text)}</pre>'
    table = getattr(step, "table", None)
    if table is not None:
        head = "".join(f"<th>{escape(h)}</th>" for h in table.headings)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row.cells) + "</tr>" for row in table.rows)
        out += f'<table class="gherkin"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return out


MARKS = {"passed": "✓", "failed": "✗", "broken": "!", "skipped": "–", "untested": "–"}


def steps_html(steps: Sequence[Any], results: Sequence[StepResult] | None) -> str:
    """Steps as written; with results, each marked and followed by its evidence (and its failure)."""
    items = []
    for i, step in enumerate(steps):
        result = results[i] if results is not None and i < len(results) else None
        status = result.status if result else ("untested" if results is not None else "")
        mark = f'<span class="mark">{MARKS.get(status, "")}</span>' if status else ""
        line = (f'<li class="step {escape(status)}">{mark}<span class="kw">{escape(step.keyword)}</span>'
                f"{escape(step.name)}{_gherkin_extras(step)}")
        if result is not None:
            attachments = result.all_attachments()
            line += "".join(evidence_html(a) for a in attachments)
            line += pictures_html(attachments)
            if result.status in ("failed", "broken") and result.message:
                line += f'<div class="failure"><pre>{escape(readable(result.message))}</pre></div>'
        items.append(line + "</li>")
    return f'<ol class="steps">{"".join(items)}</ol>'


# --- page -------------------------------------------------------------------------------------------
class Page:
    def __init__(self, results: list[ScenarioResult], uids: dict[tuple[str, str], str],
                 report_href: str | None) -> None:
        self.by_scenario: dict[tuple[str, str], list[ScenarioResult]] = defaultdict(list)
        for r in results:
            self.by_scenario[(r.feature, r.base_name)].append(r)
        self.uids = uids
        self.report_href = report_href
        self.statuses: Counter[str] = Counter()
        self.pictures = 0
        self.scenarios = 0

    def _link(self, result: ScenarioResult) -> str:
        if not self.report_href:
            return ""
        uid = self.uids.get((result.feature, result.name))
        href = f"{self.report_href}#testresult/{uid}" if uid else self.report_href
        return f' · <a href="{escape(href)}">open in Allure</a>'

    def _result_block(self, result: ScenarioResult, steps: Sequence[Any], background: int) -> str:
        self.statuses[result.status] += 1
        self.scenarios += 1
        own = list(result.steps[background:])
        out = [f'<div class="meta">{result.seconds:.1f} s{self._link(result)}</div>']
        if result.status == "skipped" and result.message:
            out.append(f'<p class="reason">{escape(result.message)}</p>')
        if background:
            bg = list(result.steps[:background])
            bg_status = _worst(s.status for s in bg) if bg else "not run"
            evidence = "".join(evidence_html(a) for s in bg for a in s.all_attachments())
            failing = [s for s in bg if s.status in ("failed", "broken")]
            failure = "".join(f'<div class="failure"><pre>{escape(s.name)}\n{escape(readable(s.message))}</pre></div>'
                              for s in failing)
            out.append(f"<details><summary>Background: {len(bg)} steps {escape(bg_status)}</summary>{evidence}"
                       f"</details>{failure}")
        out.append(steps_html(steps, own))
        if result.status in ("failed", "broken") and result.message and not any(
                s.status in ("failed", "broken") for s in result.steps):
            out.append(f'<div class="failure"><pre>{escape(readable(result.message))}</pre></div>')  # a hook failed
        own_pictures = [a for a in result.attachments if _is_picture(a)]
        self.pictures += len(own_pictures) + sum(1 for s in result.steps for a in s.all_attachments()
                                                 if _is_picture(a))
        out.append(pictures_html(own_pictures))
        out += [evidence_html(a) for a in result.attachments]
        return "".join(out)

    def scenario(self, feature: Any, scenario: Any, background: int, anchor: str) -> tuple[str, str]:
        results = self.by_scenario.pop((feature.name, scenario.name), [])
        outline = hasattr(scenario, "examples") and scenario.examples
        status = _worst(r.status for r in results) if results else "not run"
        if not results:
            self.statuses["not run"] += 1
            self.scenarios += 1
        head = (f'<article class="scenario" id="{anchor}" data-status="{escape(status)}">'
                f'<h3><span class="badge {_status_class(status)}">{escape(status)}</span>'
                f"{escape(scenario.keyword)}: {escape(scenario.name)}</h3>{_tags(scenario.tags)}"
                f"{_prose(scenario.description)}")
        if not results:
            return head + steps_html(scenario.steps, None) + "</article>", status
        if not outline:
            return head + self._result_block(results[0], scenario.steps, background) + "</article>", status
        parts = [head, steps_html(scenario.steps, None)]
        for example in scenario.examples:
            parts.append(f"<h4>{escape(example.keyword)}: {escape(example.name)}</h4>{_gherkin_extras(example)}")
        by_row = {r.name: r for r in results}
        for row in scenario.scenarios:
            r = by_row.get(row.name)
            if r is not None:
                parts.append(f'<div class="example" data-status="{escape(r.status)}"><h4><span class="badge '
                             f'{_status_class(r.status)}">{escape(r.status)}</span>{escape(row.name)}</h4>'
                             + self._result_block(r, row.steps, background) + "</div>")
        return "".join(parts) + "</article>", status

    def feature(self, feature: Any, index: int) -> tuple[str, str]:
        background = len(feature.background.steps) if feature.background else 0
        items = []
        statuses = []
        scenarios = [*feature.scenarios, *(s for rule in getattr(feature, "rules", []) for s in rule.scenarios)]
        for n, scenario in enumerate(scenarios):
            html, status = self.scenario(feature, scenario, background, f"f{index}-s{n}")
            items.append(html)
            statuses.append(status)
        status = _worst(statuses)
        bg = ""
        if feature.background:
            bg = (f'<div class="background"><b>{escape(feature.background.keyword)}:</b>'
                  f"{steps_html(feature.background.steps, None)}</div>")
        html = (f'<section class="feature" id="f{index}" data-feature="{escape(feature.name)}" '
                f'data-status="{escape(status)}"><h2><span class="badge {_status_class(status)}">{escape(status)}'
                f"</span>{escape(feature.keyword)}: {escape(feature.name)}</h2>{_tags(feature.tags)}"
                f'{_prose(feature.description)}<div class="meta">{escape(str(feature.filename))}</div>'
                f"{bg}{''.join(items)}</section>")
        return html, status


def render(features: Sequence[Any], results: list[ScenarioResult], environment: list[tuple[str, str]],
           uids: dict[tuple[str, str], str], report_href: str | None, generated: str) -> tuple[str, Summary]:
    page = Page(results, uids, report_href)
    sections, toc = [], []
    for i, feature in enumerate(features):
        html, status = page.feature(feature, i)
        sections.append(html)
        toc.append(f'<li><span class="badge {_status_class(status)}">{escape(status)}</span>'
                   f'<a href="#f{i}">{escape(feature.name)}</a></li>')
    others = [r for rs in page.by_scenario.values() for r in rs]  # results of scenarios not in these files
    if others:
        rows = "".join(f'<article class="scenario" data-status="{escape(r.status)}"><h3><span class="badge '
                       f'{_status_class(r.status)}">{escape(r.status)}</span>{escape(r.feature)}: {escape(r.name)}'
                       f"</h3>{page._result_block(r, [], 0)}</article>" for r in others)
        sections.append(f'<section class="feature" id="others" data-feature="(not in these feature files)">'
                        f"<h2>Results of scenarios not in these feature files</h2>{rows}</section>")
    counts = " ".join(f"<span><b>{n}</b> {escape(s)}</span>" for s, n in sorted(page.statuses.items(),
                                                                            key=lambda kv: STATUS_ORDER.index(kv[0])))
    env = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in environment)
    link = (f' · <a href="{escape(report_href)}">the Allure report</a> (serve it over HTTP: python3 -m http.server'
            f" -d reports/allure-report -b 127.0.0.1)") if report_href else ""
    head = (f'<header><h1>Release review: living documentation</h1><div class="summary">{counts} · '
            f"{len(features)} features, {page.scenarios} scenarios, {page.pictures} pictures</div>"
            f'<div class="meta" style="color:#9fb3c8">generated {escape(generated)}{link}</div></header>')
    body = (f'<nav class="toc"><b>Features</b><ol>{"".join(toc)}</ol>'
            + (f'<details><summary>where the checks ran</summary><div class="ml-ev"><table>{env}</table></div>'
               "</details>" if env else "")
            + "</nav>" + "".join(sections))
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>Release review: living documentation</title><style>{PAGE_STYLE}{STYLE}</style></head>"
                f"<body>{head}<main>{body}</main></body></html>")
    return document, Summary(len(features), page.scenarios, dict(page.statuses), page.pictures)


class LivingDocError(Exception):
    """Bad input for the living doc: one line for the user."""


def read_features(folder: Path) -> list[Any]:
    from behave.parser import ParserError, parse_file

    files = sorted(folder.glob("**/*.feature"))
    if not files:
        raise LivingDocError(f"no .feature files under {folder}")
    out = []
    for path in files:
        try:
            feature = parse_file(str(path))
        except ParserError as exc:
            raise LivingDocError(f"{path}: {str(exc).splitlines()[0]}") from None
        if feature is not None:
            out.append(feature)
    return out


def build(results_dir: Path, output: Path, features_dir: Path = Path("features"),
          allure_report: Path | None = None) -> Summary:
    if not results_dir.is_dir():
        raise LivingDocError(f"no Allure results folder {results_dir}: run the features first (make demo)")
    results = read_results(results_dir)
    if not results:
        raise LivingDocError(f"no Allure results in {results_dir}: run the features first (make demo)")
    features = read_features(features_dir)
    report_href = None
    uids: dict[tuple[str, str], str] = {}
    if allure_report is not None:
        report_href = Path(relpath(allure_report / "index.html", output.parent)).as_posix()
        uids = report_uids(allure_report)
    html, summary = render(features, results, read_environment(results_dir), uids, report_href,
                           time.strftime("%Y-%m-%d %H:%M %Z"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlib.report.living_doc", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the Allure results folder of the run")
    parser.add_argument("-o", "--output", type=Path, default=Path("reports/living-doc/index.html"))
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--allure-report", type=Path, default=None,
                        help="the generated Allure report to link to (its test cases get direct links)")
    args = parser.parse_args(argv)
    try:
        summary = build(args.results, args.output, args.features, args.allure_report)
    except (LivingDocError, OSError) as exc:
        print(f"living doc: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
    print(f"living doc: {args.output} ({summary.features} features, {summary.scenarios} scenarios: {counts}; "
          f"{summary.pictures} pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
