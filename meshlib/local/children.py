"""Child processes that cannot outlive us: the kernel stops them when the thread that started them dies.

`close()` stops children in order; this covers the exits that run no Python code at all (SIGTERM or
SIGKILL to meshlib, a crash), so a Prometheus or a user's command is never left running.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for subprocesses: SIGTERM this child when its parent thread exits (Linux prctl)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
