"""A run's settings become a backend in one place (behave userdata and pytest options alike): bad ones are one line."""

from __future__ import annotations

import pytest

from meshlib.backend import open_backend
from meshlib.errors import MeshlibError


@pytest.mark.parametrize(("kind", "seed", "words"), [
    ("kind", None, "backend 'kind': use local (the embedded mesh) or kubernetes"),
    ("local", "abc", "seed 'abc': use a whole number, or 'random' for a fresh seed per run"),
    ("local", "-1", "seed '-1': use a whole number"),
    ("kubernetes", None, "needs an allowlist of contexts it may touch"),
])
def test_bad_settings_are_one_line(kind: str, seed: str | None, words: str) -> None:
    with pytest.raises(MeshlibError) as err:
        open_backend(kind, "default", seed=seed)
    assert words in str(err.value) and "\n" not in str(err.value)
