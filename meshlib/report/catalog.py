"""The step catalog, generated from the step docstrings: `python -m meshlib.report.catalog [--check]`.

Each step gets its pattern, the first line of its docstring and its example. `--check` exits 1 when the
checked-in catalog differs from what the code says (CI runs it).
"""

from __future__ import annotations

import argparse
import inspect
import runpy
import sys
from pathlib import Path

from meshlib.errors import MissingExtra

try:
    from behave.step_registry import registry
except ModuleNotFoundError as exc:
    raise MissingExtra("the step catalog", exc.name, "behave") from None

HEADER = """# Step catalog

Generated from the step docstrings by `python -m meshlib.report.catalog`; do not edit by hand.
Patterns use cfparse: `{count:d}` a whole number, `{bound:g}` any number (`99`, `0.5`), `{share:Percent}` like
`10%`, `{seconds:Duration}` like `30s` or `500 ms`, `{x:Name}` a word without spaces (host, path, workload, version),
`"{x:Quoted}"` text between double quotes (it cannot hold a quote), `{name:HeaderName}` an HTTP header name,
`{proxy:Proxy}` `ingress gateway` or `WORKLOAD sidecar`, `{x:List}` words separated by commas and a final `and`,
and PromQL between backticks. Each example below is checked to bind to exactly its own step.
"""


def _load(project_steps: Path | None) -> None:
    import meshlib.steps.all  # noqa: F401  (registers the library's steps)

    if project_steps and project_steps.is_dir():
        for f in sorted(project_steps.glob("*.py")):
            runpy.run_path(str(f))


def render(project_steps: Path | None = Path("steps")) -> str:
    _load(project_steps)
    sections: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for step_type in ("given", "when", "then", "step"):
        for matcher in registry.steps.get(step_type, []):
            key = (step_type, matcher.pattern)
            if key in seen:
                continue
            seen.add(key)
            func = matcher.func
            doc = inspect.getdoc(func) or ""
            module = func.__module__ if func.__module__ != "<run_path>" else Path(func.__code__.co_filename).stem
            summary = " ".join(doc.split("Example:")[0].split()) or "(no description)"
            example = next((line.split("Example:", 1)[1].strip() for line in doc.splitlines()
                            if "Example:" in line), "")
            entry = f"- **{step_type.capitalize()}** {_code(matcher.pattern)}  \n  {summary}"
            if example:
                entry += f"  \n  Example: {_code(example)}"
            sections.setdefault(_title(module), []).append(entry)
    parts = [HEADER]
    for title in sorted(sections):
        parts.append(f"\n## {title}\n")
        parts.extend(sections[title])
    return "\n".join(parts) + "\n"


def _code(text: str) -> str:
    """Inline code in Markdown, also for text that holds backticks (a PromQL step quotes its query in them)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _title(module: str) -> str:
    name = module.rsplit(".", 1)[-1]
    origin = "project" if not module.startswith("meshlib.") else "meshlib"
    return f"{name} ({origin})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", default="docs/steps.md")
    parser.add_argument("--check", action="store_true", help="fail when the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    out = Path(args.output)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out} is out of date: run `python -m meshlib.report.catalog` and commit it", file=sys.stderr)
            return 1
        print(f"{out} is current ({text.count('- **')} steps)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({text.count('- **')} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
