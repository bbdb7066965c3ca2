"""Temp dirs that cannot be lost: each carries its owner's pid, so a later run removes what a killed one left.

SIGKILL runs no cleanup code; the kernel stops the children (`children.die_with_parent`), but their files stay.
Every meshlib temp dir is named `meshlib-…` and holds `owner.pid`; `owned_dir()` first sweeps the dirs whose
owner is no longer alive, then makes a new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "meshlib-"
OWNER_FILE = "owner.pid"


def sweep_stale_dirs() -> None:
    """Remove meshlib temp dirs whose owning process is gone (it was killed before it could clean up)."""
    for d in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = int((d / OWNER_FILE).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)  # the owner is gone, and its children died with it
        except (OSError, ValueError):
            continue  # not ours to judge (no owner file yet, another user's dir)


def owned_dir(kind: str) -> Path:
    """A new private temp dir `meshlib-<kind>-…` owned by this process (remove it with shutil.rmtree)."""
    sweep_stale_dirs()
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-"))
    (d / OWNER_FILE).write_text(str(os.getpid()))
    return d
