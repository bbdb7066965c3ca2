"""A short run summary from Allure results: `python -m meshlib.report.summary reports/allure-results`."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _attachments(node: dict[str, Any]) -> int:
    return len(node.get("attachments") or []) + sum(_attachments(s) for s in node.get("steps") or [])


def _feature(result: dict[str, Any]) -> str:
    return next((lb["value"] for lb in result.get("labels") or [] if lb.get("name") == "feature"), "?")


def summarize(results_dir: Path) -> tuple[str, bool]:
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*-result.json"))]
    if not results:
        return f"no Allure results in {results_dir}", False
    rows = sorted((_feature(r), r.get("name", "?"), r.get("status", "?"), _attachments(r)) for r in results)
    width = max(len(f) for f, *_ in rows)
    lines = [f"{'feature'.ljust(width)}  status   evidence  scenario"]
    lines += [f"{f.ljust(width)}  {s.ljust(7)}  {a:8d}  {n}" for f, n, s, a in rows]
    counts = Counter(s for *_, s, _ in rows)
    ok = counts.get("passed", 0) == len(rows)
    lines.append("")
    lines.append(f"{counts.get('passed', 0)} passed, {len(rows) - counts.get('passed', 0)} failed "
                 f"({len(rows)} scenarios, {sum(a for *_, a in rows)} evidence attachments)")
    return "\n".join(lines), ok


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
