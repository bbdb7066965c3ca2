"""A small structural schema language for manifests: unknown fields and wrong types are errors with a line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.config.loader import Document, Path_
from meshlib.errors import ConfigError


class Schema:
    """Checks one value at `path` of `doc`; raises ConfigError naming the field and line."""

    name = "value"

    def check(self, value: Any, doc: Document, path: Path_) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def normalized(self, value: Any) -> Any:
        """`value` (already checked) as Kubernetes reads it: a field set to null is a field not set."""
        return value


def fail(doc: Document, path: Path_, message: str, hint: str = "") -> ConfigError:
    dotted = dotted_path(path)
    prefix = f"{dotted}: " if dotted else ""
    return ConfigError(doc.where(path), prefix + message, hint)


def dotted_path(path: Path_) -> str:
    out = ""
    for part in path:
        text = part if isinstance(part, str) and len(part) <= 60 else short(part)
        out += f"[{part}]" if isinstance(part, int) else (f".{text}" if out else text)
    return out


@dataclass
class Scalar(Schema):
    types: tuple[type, ...]
    name: str
    check_value: Callable[[Any], str | None] | None = None

    def check(self, value: Any, doc: Document, path: Path_) -> None:
        if isinstance(value, bool) and bool not in self.types:
            raise fail(doc, path, f"expected {self.name}, got {value!r}")
        if not isinstance(value, self.types):
            raise fail(doc, path, f"expected {self.name}, got {type_name(value)} {short(value)}")
        if self.check_value:
            problem = self.check_value(value)
            if problem:
                raise fail(doc, path, problem)


def short(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: an error names the value, it does not print a whole subtree."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


Str = Scalar((str,), "a string")
Bool = Scalar((bool,), "true or false")
Int = Scalar((int,), "an integer")
Num = Scalar((int, float), "a number")
IntOrStr = Scalar((int, str), "a number or a name")
Anything = Scalar((object, bool), "anything")


def NonNegInt(name: str = "a non-negative integer") -> Scalar:
    return Scalar((int,), name, lambda v: None if v >= 0 else f"must not be negative, got {v}")


def IntRange(low: int, high: int, name: str = "an integer", why: str = "") -> Scalar:
    """An integer in [low, high]; `why` says where the bound comes from."""
    tail = f" ({why})" if why else ""

    def problem(v: int) -> str | None:
        if low == 0 and v < 0:
            return f"must not be negative, got {v:,}"
        return None if low <= v <= high else f"must be between {low} and {high:,}{tail}, got {v:,}"

    return Scalar((int,), name, problem)


def Enum(*choices: str) -> Scalar:
    allowed = ", ".join(choices)
    return Scalar((str,), f"one of {allowed}",
                  lambda v: None if v in choices else f"{short(v)} is not one of {allowed}")


@dataclass
class ListOf(Schema):
    item: Schema

    def check(self, value: Any, doc: Document, path: Path_) -> None:
        if not isinstance(value, list):
            raise fail(doc, path, f"expected a list, got {type_name(value)}",
                       "start each entry with '- '")
        for i, v in enumerate(value):
            self.item.check(v, doc, (*path, i))

    def normalized(self, value: Any) -> Any:
        return [self.item.normalized(v) for v in value]


@dataclass
class MapOf(Schema):
    item: Schema

    def check(self, value: Any, doc: Document, path: Path_) -> None:
        if not isinstance(value, dict):
            raise fail(doc, path, f"expected a mapping, got {type_name(value)}")
        for k, v in value.items():
            if not isinstance(k, str):
                raise fail(doc, (*path, k), f"keys must be strings, got {short(k)}", "quote the key")
            self.item.check(v, doc, (*path, k))

    def normalized(self, value: Any) -> Any:
        return {k: self.item.normalized(v) for k, v in value.items()}


@dataclass
class Obj(Schema):
    fields: Mapping[str, Schema]
    required: tuple[str, ...] = ()
    open: bool = False  # accept fields we do not model (Kubernetes core kinds have hundreds)
    one_of: tuple[str, ...] = ()  # at most one of these may be set
    extra: Callable[[dict, Document, Path_], None] | None = None
    doc_hint: str = field(default="")

    def check(self, value: Any, doc: Document, path: Path_) -> None:
        if not isinstance(value, dict):
            raise fail(doc, path, f"expected a mapping, got {type_name(value)} {short(value)}")
        for key, sub in value.items():
            schema = self.fields.get(key)
            if schema is None:
                if self.open:
                    continue
                known = ", ".join(sorted(self.fields))
                raise fail(doc, (*path, key), f"unknown field {short(key)}", f"known fields here: {known}")
            if sub is None:
                continue
            schema.check(sub, doc, (*path, key))
        for key in self.required:
            if value.get(key) in (None, "", [], {}):
                raise fail(doc, path, f"missing required field {key!r}")
        if self.one_of:
            present = [k for k in self.one_of if value.get(k) is not None]
            if len(present) > 1:
                raise fail(doc, path, f"set only one of {', '.join(self.one_of)}; found {', '.join(present)}")
        if self.extra:
            self.extra(value, doc, path)

    def normalized(self, value: Any) -> Any:
        out = {}
        for key, sub in value.items():
            if sub is None:
                continue
            schema = self.fields.get(key)
            out[key] = schema.normalized(sub) if schema is not None else sub
        return out


@dataclass
class Lazy(Schema):
    """A schema defined later (for recursive shapes)."""

    get: Callable[[], Schema]

    def check(self, value: Any, doc: Document, path: Path_) -> None:
        self.get().check(value, doc, path)

    def normalized(self, value: Any) -> Any:
        return self.get().normalized(value)
