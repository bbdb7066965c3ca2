"""Table tests run first; the Envoy validation of everything they translated runs last."""

from __future__ import annotations

import pytest

LAST = "test_envoy_accepts_every_config_the_tables_translate"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.name == LAST)
