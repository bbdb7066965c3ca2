"""JSONPath over response bodies, and whether a path can apply at all.

A negative check ("no response contains $.nmae") passes trivially when its path can never match: a typo under
a list, a field under a parent that no response has, a filter pointed at an object. `reach()` tells those
apart from a real "absent": the path's parent (everything before its last segment) must exist in at least one
document with the shape the last segment needs (an object for a field, a list for an index, slice or filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse as jsonpath_parse
from jsonpath_ng.ext.filter import Filter
from jsonpath_ng.jsonpath import Child, Descendants, Fields, Index, Root, Slice, This, Wildcard

from meshlib.errors import InputError


@lru_cache(maxsize=256)
def compile_path(expr: str) -> JSONPath:
    try:
        return jsonpath_parse(expr)
    except Exception as exc:  # jsonpath-ng raises several types (its own, lexer errors, ValueError) for bad input
        raise InputError(f"invalid JSONPath {expr!r}: {exc} (write it like $[*].name or $..imageUrl)") from None


def find(doc: Any, expr: str) -> list[Any]:
    return [m.value for m in compile_path(expr).find(doc)]


def _split(path: JSONPath) -> tuple[JSONPath, JSONPath, bool]:
    """(parent, last segment, whether the last segment is searched at any depth)."""
    if isinstance(path, Child):
        return path.left, path.right, False
    if isinstance(path, Descendants):
        return path.left, path.right, True
    return Root(), path, False  # a bare `name` is relative to the document


def _needs(last: JSONPath) -> str:
    if isinstance(last, Fields):
        return "object"
    if isinstance(last, (Index, Slice, Filter)):
        return "list"
    return "any"


def _shape(value: Any) -> str:
    return "object" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"


def _fits(value: Any, needs: str, deep: bool) -> bool:
    if needs == "any" or _shape(value) == needs:
        return True
    if deep and isinstance(value, (dict, list)):
        children = value.values() if isinstance(value, dict) else value
        return any(_fits(v, needs, True) for v in children)
    return False


def _text(path: JSONPath) -> str:
    """A parsed path written back the way users write it (`$.items[*]`, not jsonpath-ng's `items.*`)."""
    if isinstance(path, Root):
        return "$"
    if isinstance(path, This):
        return "@"
    if isinstance(path, Descendants):
        return f"{_text(path.left)}..{_segment(path.right)}"
    if isinstance(path, Child):
        right = _segment(path.right)
        return _text(path.left) + (right if right.startswith("[") else f".{right}")
    return _segment(path)


def _segment(path: JSONPath) -> str:
    if isinstance(path, Fields):
        return ".".join(path.fields)
    if isinstance(path, Wildcard):
        return "[*]"
    if isinstance(path, Index):
        return "[" + ",".join(map(str, path.indices)) + "]"
    if isinstance(path, Slice):
        return f"[{'' if path.start is None else path.start}:{'' if path.end is None else path.end}]"
    if isinstance(path, Filter):
        return "[?…]"
    return str(path)


@dataclass(frozen=True)
class Reach:
    """How a path met a set of documents: where its parent was, and in what shape."""

    expr: str
    documents: int
    parent: str  # the parent path as text
    parent_found: int  # documents in which the parent matched something
    applicable: int  # documents in which the parent had the shape the last segment needs
    shapes: tuple[str, ...]  # the shapes the parent had, for the message
    needs: str

    def why_never(self) -> str | None:
        """None when the path can match in some document; else why it never can, with what to do."""
        if self.documents == 0:
            return None
        if self.parent_found == 0:
            return (f"its parent {self.parent} matched nothing in any of the {self.documents} JSON bodies "
                    f"(check the field names before the last one)")
        if self.applicable == 0:
            seen = " or ".join(self.shapes)
            if self.needs == "list":
                return (f"its last step needs a list, but {self.parent} is {_article(seen)} in every body "
                        f"(point it at a list, for example {self.parent}.items[…])")
            if self.needs == "object":
                hint = f"{self.parent}[*]" if "list" in self.shapes else self.parent
                return (f"its last step reads a field, but {self.parent} is {_article(seen)} in every body "
                        f"(for the field of each element write {hint}.<field>)")
        return None


def _article(shape: str) -> str:
    return ("an " if shape[:1] in "aeiou" else "a ") + shape


def reach(docs: list[Any], expr: str) -> Reach:
    parent, last, deep = _split(compile_path(expr))
    needs = _needs(last)
    found = applicable = 0
    shapes: set[str] = set()
    for doc in docs:
        values = [m.value for m in parent.find(doc)]
        found += bool(values)
        shapes.update(_shape(v) for v in values)
        applicable += any(_fits(v, needs, deep) for v in values)
    return Reach(expr, len(docs), _text(parent), found, applicable, tuple(sorted(shapes)), needs)
