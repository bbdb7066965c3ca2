"""Errors meant for people: each names where the problem is, what is wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass


class MeshlibError(Exception):
    """Base of every error meshlib reports to a user without a traceback."""


@dataclass(frozen=True)
class Source:
    """Where an object came from: a file (or `<string>`) and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ConfigError(MeshlibError):
    """Bad input in a manifest: carries the source location and a hint."""

    def __init__(self, source: Source | None, message: str, hint: str = "") -> None:
        self.source = source
        self.message = message
        self.hint = hint
        where = f"{source}: " if source else ""
        tail = f" ({hint})" if hint else ""
        super().__init__(f"{where}{message}{tail}")


class InputError(MeshlibError, ValueError):
    """A step or API argument that cannot be used as given (a count of 0, a bad JSONPath, a rate of 0)."""


class MissingExtra(MeshlibError, ImportError):
    """A part of meshlib needs a package that only one of its extras installs: one line saying which to install."""

    def __init__(self, what: str, module: str | None, *extras: str) -> None:
        module = (module or "a package").partition(".")[0]
        also = "".join(f" (or 'meshlib-bdd[{extra}]')" for extra in extras[1:])
        super().__init__(f"{what} needs {module}: pip install 'meshlib-bdd[{extras[0]}]'{also}", name=module)
