"""The control state file holds the mesh's token: it is created 0600 atomically, never readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshlib.errors import MeshlibError
from meshlib.local import control


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home" / "mesh.json"
    monkeypatch.setenv("MESHLIB_STATE", str(path))
    return path


@pytest.fixture
def open_umask():
    old = os.umask(0)  # the worst case: files are created with exactly the mode asked for
    try:
        yield
    finally:
        os.umask(old)


def test_state_file_is_0600_under_an_open_umask(state: Path, open_umask: None) -> None:
    written = control.write_state({"pid": 1, "token": "secret"})
    assert written == state and mode(state) == 0o600
    assert control.read_state() == {"pid": 1, "token": "secret"}
    assert [p.name for p in state.parent.iterdir()] == ["mesh.json"]  # no temp file left behind


def test_state_file_is_never_on_disk_with_another_mode(state: Path, open_umask: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file the write creates is 0600 from the moment it exists, and is created new (O_EXCL), then
    renamed over the state file: no window where the token sits in a 0644 file."""
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    os.chmod(state, 0o644)  # an old state file with a wide mode: replaced, not rewritten in place
    created: list[tuple[str, int, int]] = []
    renamed: list[tuple[str, int]] = []
    real_open, real_replace = os.open, os.replace

    def spy_open(path, flags, mode_=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode_, *args, **kwargs)
        created.append((str(path), flags, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    def spy_replace(src, dst, *args, **kwargs):
        renamed.append((str(src), mode(src)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "replace", spy_replace)
    control.write_state({"pid": 2, "token": "t"})
    assert len(created) == 1
    tmp, flags, created_mode = created[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL and created_mode == 0o600
    assert renamed == [(tmp, 0o600)] and mode(state) == 0o600
    assert control.read_state()["token"] == "t"


def test_unwritable_state_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MESHLIB_STATE", str(blocker / "mesh.json"))  # its "directory" is a file
    with pytest.raises(MeshlibError) as err:
        control.write_state({"pid": 3})
    message = str(err.value)
    assert "\n" not in message and str(blocker / "mesh.json") in message and "MESHLIB_STATE" in message
