"""The run settings table (meshlib.settings): one reading for behave's userdata and pytest's options, one-line
errors that name the setting as the user wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.errors import InputError
from meshlib.settings import BY_KEY, SETTINGS, from_mapping


def test_every_setting_has_a_behave_key_an_ini_key_and_a_flag() -> None:
    assert len({s.key for s in SETTINGS}) == len({s.ini for s in SETTINGS}) == len({s.flag for s in SETTINGS})
    assert BY_KEY["backend"].flag == "--mesh-backend" and BY_KEY["context"].flag == "--kube-context"


def test_unset_and_blank_values_take_the_default() -> None:
    settings = from_mapping({"namespace": "  ", "seed": None})
    assert settings.text("namespace") == "default" and settings.text("seed") == "random"
    assert settings.alpha() == 0.01 and settings.time_scale() == 1.0
    assert settings.flag("allow_outside_manifests") is False


def test_values_are_checked_and_converted() -> None:
    settings = from_mapping({"alpha": "0.05", "time_scale": "0.05", "allow_outside_manifests": "yes",
                             "manifests": "m"})
    assert settings.alpha() == 0.05 and settings.time_scale() == 0.05
    assert settings.flag("allow_outside_manifests") is True
    assert settings.manifests(Path("/x")) == Path("/x/m")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("alpha", "2", "-D alpha='2': use a false-failure rate above 0 and below 1"),
    ("alpha", "one percent", "-D alpha='one percent': use a false-failure rate"),
    ("alpha", "nan", "-D alpha='nan': use a false-failure rate"),
    ("time_scale", "0", "-D time_scale: time scale 0 is out of range"),
    ("time_scale", "fast", "-D time_scale: 'fast' is not a number"),
    ("allow_outside_manifests", "maybe", "-D allow_outside_manifests='maybe': use true or false"),
])
def test_a_bad_value_is_one_line_naming_the_setting(key: str, value: str, message: str) -> None:
    settings = from_mapping({key: value})
    read = {"alpha": settings.alpha, "time_scale": settings.time_scale,
            "allow_outside_manifests": lambda: settings.flag("allow_outside_manifests")}[key]
    with pytest.raises(InputError) as caught:
        read()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_pytest_spelling_names_the_option() -> None:
    settings = from_mapping({"alpha": "0"}, spell=lambda key: BY_KEY[key].flag)
    with pytest.raises(InputError, match=r"^--mesh-alpha='0': "):
        settings.alpha()
