"""Command-line argument types and a parser whose usage errors are one line, like every other meshlib error."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

USAGE_ERROR = 2  # argparse's own code, and meshlib's for bad input
MAX_TIME_SCALE = 100.0
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class OneLineParser(argparse.ArgumentParser):
    """`error: …` on one line naming the command and pointing at its --help (no usage block, no traceback)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {' '.join(message.split())} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def port(text: str) -> int:
    """A TCP port on 127.0.0.1: 1-65535, or 0 for any free one."""
    value = _int(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range: use 1-65535, or 0 for any free port")
    return value


def time_scale(text: str) -> float:
    """Pace of the analysis clock: above 0 (0 would stop time), at most MAX_TIME_SCALE."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.05)") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TIME_SCALE:
        raise argparse.ArgumentTypeError(f"time scale {text} is out of range: use a number above 0 and at most "
                                         f"{MAX_TIME_SCALE:g} (0.05 runs a 45 s interval in 2.25 s)")
    return value


def line_count(text: str) -> int:
    value = _int(text, "a number of lines")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} lines: use 0 or more")
    return value


def namespace(text: str) -> str:
    if not _NAMESPACE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace name: lower-case letters, digits and '-', "
                                         "at most 63")
    return text


def _int(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
