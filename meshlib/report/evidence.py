"""The one helper through which steps attach evidence: Allure when its formatter runs, nothing otherwise."""

from __future__ import annotations

try:
    import allure
except ModuleNotFoundError:  # neither allure-behave nor allure-pytest installed (e.g. the pytest extra alone)
    allure = None

KINDS = {} if allure is None else {
    "text": allure.attachment_type.TEXT, "json": allure.attachment_type.JSON, "csv": allure.attachment_type.CSV,
    "html": allure.attachment_type.HTML, "png": allure.attachment_type.PNG, "svg": allure.attachment_type.SVG}


def attach(name: str, body: str | bytes, kind: str = "text") -> None:
    """Attach `body` to the current Allure step (a no-op when no Allure listener is registered, or no Allure)."""
    if allure is not None:
        allure.attach(body, name=name, attachment_type=KINDS.get(kind, allure.attachment_type.TEXT))
