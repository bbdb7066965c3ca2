"""The files that make an Allure report more than a list of tests: the run's environment, categories that tell a
broken release from a broken test from broken infrastructure, the CI executor, and the previous report's history
(so Trend shows every run, not just this one).

    write_environment(results, facts)        # behave's after_all does this for every run with the Allure formatter
    prepare(results, previous_report)        # before `allure generate`: categories, history, the executor

As a command (the Makefile's `report` target):

    python -m meshlib.report.allure_run reports/allure-results --previous reports/allure-report
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshlib.settings import RunSettings

ENVIRONMENT = "environment.properties"
CATEGORIES = "categories.json"
EXECUTOR = "executor.json"
HISTORY = "history"

# Messages of failures that are the machine's, not the release's nor the test's: the mesh, Envoy or Prometheus
# would not start or stopped answering (meshlib.local's own wording), or a hook could not set the scenario up.
INFRASTRUCTURE = "(?:" + "|".join((
    "the scenario could not run: before_", "no Envoy found", "MESHLIB_ENVOY=\\S*: ",
    "envoy \\S+ (?:did not answer|exited|cannot run|is not running)", "Envoy of \\S+ did not take its config",
    "prometheus (?:exited|did not become ready|on \\S+ did not scrape)", "cannot reach prometheus",
    "the mesh's Prometheus \\(pid", "the local mesh is not running", "[Aa]ddress already in use",
    "port \\d+ is (?:busy|in use)")) + ")"


NOT_RUN = "could not run the step: "  # meshlib's step adapter: bad input or a step error, reported in one line


def categories() -> list[dict[str, object]]:
    """Allure categories, first match wins: infrastructure, then the test itself (bad input, a step error, an
    undefined step), then a release check that did not hold; skips apart by why."""
    infra = f"(?s).*{INFRASTRUCTURE}.*"
    return [
        {"name": "Infrastructure: the mesh or Prometheus would not start", "matchedStatuses": ["broken", "failed"],
         "messageRegex": infra},
        {"name": "Broken test: bad input or a step error", "matchedStatuses": ["broken"],
         "messageRegex": f"(?s)(?!.*{INFRASTRUCTURE}).*"},
        {"name": "Broken test: bad input or a step error", "matchedStatuses": ["failed"],
         "messageRegex": f"(?s)(?!.*{INFRASTRUCTURE})(?:[\\w.]+: )?{NOT_RUN}.*"},
        {"name": "Broken release: a release check failed", "matchedStatuses": ["failed"],
         "messageRegex": f"(?s)(?!.*{INFRASTRUCTURE})(?!(?:[\\w.]+: )?{NOT_RUN}).*"},
        {"name": "Skipped: needs a tool this machine lacks", "matchedStatuses": ["skipped"],
         "messageRegex": "(?s).*needs (?:Prometheus|Graphviz).*"},
        {"name": "Skipped: not for this Istio profile", "matchedStatuses": ["skipped"],
         "messageRegex": "(?s).*(?:[Ii]stio|profile).*"},
    ]


@dataclass(frozen=True)
class RunFacts:
    """What a reviewer needs to know about where the checks ran."""

    backend: str
    istio_profile: str
    envoy: str
    seed: str
    alpha: str
    time_scale: str
    meshlib: str
    python: str
    runner: str

    def properties(self) -> dict[str, str]:
        return {"backend": self.backend, "istio.profile": self.istio_profile, "envoy.version": self.envoy,
                "mesh.seed": self.seed, "alpha": self.alpha, "time.scale": self.time_scale,
                "meshlib.version": self.meshlib, "python.version": self.python, "runner": self.runner}


def envoy_of(backend: str) -> str:
    """The Envoy that ran the checks: the embedded mesh's binary, or a cluster's sidecars."""
    if backend != "local":
        return "the cluster's (istio-proxy)"
    from meshlib.errors import MeshlibError
    from meshlib.local.envoy.binary import find_envoy

    try:
        return find_envoy().version_text
    except MeshlibError as exc:
        return f"none ({exc})"


def run_facts(settings: RunSettings, pinned: Iterable[str], runner: str) -> RunFacts:
    """The facts of a run from its settings (meshlib.settings: behave's userdata or pytest's options) and the
    profiles its scenarios were pinned to."""
    import platform

    from meshlib import __version__
    from meshlib.profile import DEFAULT_VERSION

    backend = settings.text("backend") or "local"
    base = settings.text("istio_version") or DEFAULT_VERSION
    others = sorted({p for p in pinned if p and p != base})
    return RunFacts(backend=backend, istio_profile=base + (f" (pinned scenarios: {', '.join(others)})" if others
                                                             else ""),
                    envoy=envoy_of(backend), seed=settings.text("seed") or "random",
                    alpha=settings.text("alpha") or "0.01", time_scale=settings.text("time_scale") or "1",
                    meshlib=__version__, python=f"{platform.python_implementation()} {platform.python_version()}",
                    runner=f"{runner} on {sys.platform}")


def _escape(value: str) -> str:
    """A value for a Java .properties line (Allure reads the file with java.util.Properties)."""
    special = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "=": "\\=", ":": "\\:"}
    out = []
    for ch in value:
        if ch in special:
            out.append(special[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:  # outside printable ASCII: UTF-16 code units as \uXXXX
            units = ch.encode("utf-16-be")
            out += [f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)]
    return "".join(out)


def properties_text(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={_escape(value)}\n" for key, value in values.items())


def write_environment(results: Path, facts: RunFacts) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / ENVIRONMENT
    path.write_text(properties_text(facts.properties()), encoding="ascii")
    return path


def write_categories(results: Path) -> Path:
    path = results / CATEGORIES
    path.write_text(json.dumps(categories(), indent=2))
    return path


def carry_history(previous_report: Path, results: Path) -> int:
    """The previous report's history, in place of any the results hold (Trend, retries, flaky marks); how many
    files."""
    source = previous_report / HISTORY
    target = results / HISTORY
    shutil.rmtree(target, ignore_errors=True)  # only the previous report's history, never an older copy's
    if not source.is_dir():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
            copied += 1
    return copied


def previous_runs(previous_report: Path) -> int:
    """How many runs the previous report's Trend holds (0: no previous report)."""
    trend = previous_report / HISTORY / "history-trend.json"
    try:
        data = json.loads(trend.read_text())
    except (OSError, ValueError):
        return 0
    return len(data) if isinstance(data, list) else 0


def executor(environ: Mapping[str, str], build_order: int, report_url: str = "") -> dict[str, object]:
    """Allure's executor.json: CI's under CI, else this machine's (its build order labels the run in Trend)."""
    name = environ.get("CI_NAME") or ("meshlib CI (.ci/run)" if environ.get("CI") else "make report (this machine)")
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    build = environ.get("CI_BUILD_NAME") or f"run {build_order} at {when} UTC"
    return {"name": name, "type": "ci", "buildOrder": build_order, "buildName": build,
            "reportName": "meshlib release review", "reportUrl": report_url,
            "buildUrl": environ.get("CI_BUILD_URL", "")}


def prepare(results: Path, previous_report: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """Ready the results for `allure generate`: what was written, as sentences."""
    env = os.environ if environ is None else environ
    if not results.is_dir() or not any(results.glob("*-result.json")):
        raise FileNotFoundError(f"no Allure results in {results}: run the features first (make demo)")
    done = [f"categories: {write_categories(results)}"]
    copied = carry_history(previous_report, results)
    runs = previous_runs(previous_report)
    done.append(f"history: {copied} files from {previous_report / HISTORY} ({runs} earlier runs)" if copied
                else f"history: none yet ({previous_report / HISTORY} does not exist): Trend starts with this run")
    path = results / EXECUTOR  # CI's name under CI; either way its build order labels the run in Trend (#1, #2…)
    path.write_text(json.dumps(executor(env, runs + 1), indent=2))
    done.append(f"executor: {path} (run {runs + 1})")
    if not (results / ENVIRONMENT).is_file():
        done.append(f"environment: none ({ENVIRONMENT} is written by meshlib's behave hooks)")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlib.report.allure_run", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the Allure results folder")
    parser.add_argument("--previous", type=Path, default=Path("reports/allure-report"),
                        help="the previous generated report, whose history/ the new one carries on")
    args = parser.parse_args(argv)
    try:
        for line in prepare(args.results, args.previous):
            print(line)
    except (FileNotFoundError, OSError) as exc:
        print(f"meshlib.report.allure_run: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
