"""What allure-behave leaves out of a scenario's result, put back before the result is written.

allure-behave (2.16) drops a scenario that a hook skipped when behave runs with `show_skipped = false`, and gives
a skipped scenario no reason; a scenario whose `before_scenario` failed (the mesh would not start) comes out
"skipped" too, its steps untested, and one whose `after_scenario` failed comes out "passed". `ScenarioResults`, an
allure_commons plugin, keeps a skipped scenario in the results with its reason as the status message, and marks
a scenario whose hook failed "broken" with the hook's error, so the report's categories can sort it; and it
files every scenario under its feature in the Suites tab.

    results = start_scenario_results(behave_config)   # None when no Allure formatter runs
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import allure_commons
from allure_behave.utils import TEST_PLAN_SKIP_REASON, scenario_history_id
from allure_commons.logger import AllureFileLogger
from allure_commons.model2 import Label, Status, StatusDetails

HOOK_ERROR = "HOOK-ERROR in "
COULD_NOT_RUN = "the scenario could not run: "
EXCEPTION_NAME = re.compile(r"(?:\w+\.)*[A-Z]\w*")  # MeshlibError, meshlib.errors.InputError


@dataclass(frozen=True)
class Amendment:
    status: str | None  # None: keep allure-behave's
    message: str
    trace: str = ""


def hook_message(error_message: str) -> str:
    """behave's `HOOK-ERROR in before_scenario: MeshlibError: envoy x exited` → `before_scenario: envoy x exited`."""
    text = error_message.strip().removeprefix(HOOK_ERROR)
    hook, _, rest = text.partition(": ")
    kind, sep, message = rest.partition(": ")
    if sep and EXCEPTION_NAME.fullmatch(kind):
        rest = message  # the exception's class name adds nothing for a reader
    return f"{hook}: {rest}" if rest else text


def amendment_for(scenario: Any) -> Amendment | None:
    """What to add to this behave scenario's result, if anything."""
    if getattr(scenario, "hook_failed", False):
        message = hook_message(getattr(scenario, "error_message", "") or "a hook failed")
        trace = getattr(scenario, "exc_traceback", None)
        return Amendment(Status.BROKEN, COULD_NOT_RUN + message,
                         "\n".join(trace) if isinstance(trace, list) else "")
    reason = getattr(scenario, "skip_reason", None)
    if str(getattr(scenario, "status", "")).endswith("skipped") and reason and reason != TEST_PLAN_SKIP_REASON:
        return Amendment(None, f"skipped: {reason}")
    return None


class ScenarioResults:
    """The allure_commons plugin (see the module's docstring). Registered after allure-behave's formatter."""

    def __init__(self, behave_config: Any) -> None:
        self.config = behave_config
        self.pending: dict[str, Amendment] = {}  # by historyId

    @allure_commons.hookimpl(hookwrapper=True)
    def stop_test(self, parent_uuid: str, uuid: str, name: str, context: dict[str, Any], exc_type: Any,
                  exc_val: Any, exc_tb: Any) -> Generator[None, None, None]:
        scenario = context.get("scenario") if isinstance(context, dict) else None
        amendment = amendment_for(scenario) if scenario is not None else None
        shown = self.config.show_skipped
        if amendment is not None:
            self.pending[scenario_history_id(scenario)] = amendment
            self.config.show_skipped = True  # allure-behave keeps the result only when skipped ones are shown
        try:
            yield
        finally:
            self.config.show_skipped = shown

    @allure_commons.hookimpl(hookwrapper=True)
    def report_result(self, result: Any) -> Generator[None, None, None]:
        add_suites(result)
        amendment = self.pending.pop(getattr(result, "historyId", None) or "", None)
        if amendment is not None:
            if amendment.status is not None:
                result.status = amendment.status
            details = result.statusDetails or StatusDetails()
            details.message = amendment.message
            if amendment.trace and not details.trace:
                details.trace = amendment.trace
            result.statusDetails = details
        yield


def add_suites(result: Any) -> None:
    """Suites by feature: `suite` is the feature (and `parentSuite` its epic, when tagged with one), unless the
    scenario's tags set them. Allure's Suites tab is a flat list of scenarios without them."""
    labels = getattr(result, "labels", None)
    if labels is None:
        return
    have = {label.name: label.value for label in labels}
    if "suite" not in have and have.get("feature"):
        labels.append(Label(name="suite", value=have["feature"]))
        if "parentSuite" not in have and have.get("epic"):
            labels.append(Label(name="parentSuite", value=have["epic"]))


def results_dir() -> Path | None:
    """Where the running Allure formatter writes its results (None when none runs)."""
    for plugin in allure_commons.plugin_manager.get_plugins():
        if isinstance(plugin, AllureFileLogger):
            return Path(plugin._report_dir)  # the one place allure-python keeps it
    return None


def start_scenario_results(behave_config: Any) -> ScenarioResults | None:
    """Register the plugin when an Allure formatter runs; None otherwise."""
    if results_dir() is None:
        return None
    plugin = ScenarioResults(behave_config)
    allure_commons.plugin_manager.register(plugin)
    return plugin


def stop_scenario_results(plugin: ScenarioResults | None) -> None:
    if plugin is not None and allure_commons.plugin_manager.is_registered(plugin):
        allure_commons.plugin_manager.unregister(plugin)
