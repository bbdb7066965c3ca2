"""A short run summary from Allure results: `python -m meshlib.report.summary reports/allure-results`.

One row per scenario, then, for every scenario that did not pass, the step that failed and its message
(expected versus seen, as the step wrote it), the reason a scenario was skipped, and the notes a passing
scenario left (retries, underpowered checks): a reader of the console knows why without opening the report.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

NOTE = "note: "
MESSAGE_LINES = 14


def _attachments(node: dict[str, Any]) -> list[dict[str, Any]]:
    return list(node.get("attachments") or []) + [a for s in node.get("steps") or [] for a in _attachments(s)]


def _feature(result: dict[str, Any]) -> str:
    return next((lb["value"] for lb in result.get("labels") or [] if lb.get("name") == "feature"), "?")


def _failing_step(node: dict[str, Any]) -> dict[str, Any] | None:
    for step in node.get("steps") or []:
        if step.get("status") in ("failed", "broken"):
            return _failing_step(step) or step
    return None


def _indent(text: str, limit: int = MESSAGE_LINES) -> list[str]:
    lines = text.rstrip().splitlines() or ["(no message)"]
    more = [f"    … {len(lines) - limit} more lines in the report"] if len(lines) > limit else []
    return [f"    {line}" for line in lines[:limit]] + more


def _why(result: dict[str, Any], results_dir: Path) -> list[str]:
    """Lines that explain a scenario: why it failed or was skipped, and its notes."""
    status = result.get("status")
    lines: list[str] = []
    if status in ("failed", "broken"):
        step = _failing_step(result)
        details = (step or result).get("statusDetails") or {}
        lines.append(f"  failed at: {step['name'] if step else '(before any step)'}")
        lines += _indent(details.get("message") or details.get("trace") or "")
    elif status == "skipped":
        message = (result.get("statusDetails") or {}).get("message")
        if message:
            lines.append(f"  skipped: {message.strip().splitlines()[0].removeprefix('skipped: ')}")
    for attachment in _attachments(result):
        if str(attachment.get("name", "")).startswith(NOTE):
            source = results_dir / str(attachment.get("source", ""))
            text = source.read_text(errors="replace").strip() if source.is_file() else attachment["name"]
            lines.append(f"  note: {text}")
    return lines


def summarize(results_dir: Path) -> tuple[str, bool]:
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*-result.json"))]
    if not results:
        return f"no Allure results in {results_dir}", False
    results.sort(key=lambda r: (_feature(r), r.get("name", "?")))
    rows = [(_feature(r), r.get("name", "?"), r.get("status", "?"), len(_attachments(r))) for r in results]
    width = max(len(f) for f, *_ in rows)
    lines = [f"{'feature'.ljust(width)}  status   evidence  scenario"]
    lines += [f"{f.ljust(width)}  {s.ljust(7)}  {a:8d}  {n}" for f, n, s, a in rows]
    details = []
    for result in results:
        why = _why(result, results_dir)
        if why:
            details += ["", f"{_feature(result)}: {result.get('name', '?')} ({result.get('status', '?')})", *why]
    counts = Counter(s for *_, s, _ in rows)
    passed = counts.get("passed", 0)
    skipped = counts.get("skipped", 0)
    failed = len(rows) - passed - skipped
    lines += details
    lines.append("")
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped "
                 f"({len(rows)} scenarios, {sum(a for *_, a in rows)} evidence attachments)")
    return "\n".join(lines), failed == 0 and passed > 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    results_dir = Path(args[0] if args else "reports/allure-results")
    text, ok = summarize(results_dir)
    print(text)
    out = results_dir.parent / "summary.txt"
    out.write_text(text + "\n")
    print(f"\nreports: {results_dir}/ (Allure results), {out}; HTML with `make report`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
