"""Bounded YAML: libyaml (CSafeLoader) with JSON-like values only, no duplicate keys and limits on size.

Every refusal is a `YamlProblem` with the 1-based line, what is wrong and what to do; `loader` turns it into a
ConfigError naming the file. Limits (documented in docs/reliability.md):

- `MAX_DEPTH` levels of nesting (libyaml itself stops at 1000; meshlib's checks recurse, so it stops earlier);
- `MAX_NODES` values per document once aliases are expanded (an alias bomb of a few hundred bytes stands for
  billions of values; it is refused after counting that many, in milliseconds);
- no recursive aliases (`&a [*a]`), no tags beyond `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`,
  `!!seq`, and dates stay strings (`2026-02-31` is a string, as `kubectl` reads it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

MAX_DEPTH = 100
MAX_NODES = 250_000

Path_ = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
_REFUSED_TAGS = ("binary", "timestamp", "set", "omap", "pairs", "value", "yaml")
# YAML 1.1's printable set: tab, line breaks, and printable characters (libyaml refuses the rest)
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class YamlProblem(Exception):
    """Bad YAML at a 1-based line: what is wrong and what to do."""

    line: int
    message: str
    hint: str = ""


class _Refused(yaml.MarkedYAMLError):
    """Raised inside the constructor; carries our message and hint with libyaml's mark."""

    def __init__(self, node: yaml.Node, message: str, hint: str) -> None:
        super().__init__(problem=message, problem_mark=node.start_mark)
        self.hint = hint


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def _checked(construct: Callable[[Any, yaml.Node], Any], what: str) -> Callable[[Any, yaml.Node], Any]:
    """A scalar constructor whose bad values (`!!int abc`, `!!bool maybe`) are refused with the value's line."""

    def run(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            raise _Refused(node, f"{_short_tag(node.tag)} {node.value!r} is not {what}",
                           "fix the value or remove the tag") from None

    return run


def _refuse_tag(loader: Any, node: yaml.Node) -> Any:
    raise _Refused(node, f"the YAML tag {_short_tag(node.tag)} is not supported in manifests",
                   "manifests hold strings, numbers, booleans, lists and mappings: remove the tag or quote the value")


class BoundedLoader(yaml.CSafeLoader):
    """CSafeLoader without timestamps, odd tags or duplicate keys."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_CORE}timestamp"]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors = dict(yaml.CSafeLoader.yaml_constructors)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep)

    def construct_undefined(self, node: yaml.Node) -> Any:
        raise _Refused(node, f"unknown YAML tag {_short_tag(node.tag)}",
                       "remove the tag: manifests hold strings, numbers, booleans, lists and mappings")


for _name, _what in (("int", "an integer"), ("float", "a number"), ("bool", "true or false"),
                     ("null", "null"), ("str", "a string")):
    BoundedLoader.add_constructor(f"{_CORE}{_name}", _checked(BoundedLoader.yaml_constructors[f"{_CORE}{_name}"],
                                                              _what))
for _name in _REFUSED_TAGS:
    BoundedLoader.add_constructor(f"{_CORE}{_name}", _refuse_tag)
BoundedLoader.add_constructor(None, BoundedLoader.construct_undefined)


def _refuse_duplicate_keys(loader: BoundedLoader, node: yaml.MappingNode) -> None:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == f"{_CORE}merge":
            continue  # keys merged in with `<<` may be overridden: that is what merging is for
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable: the constructor reports it
        if first is not None:
            raise _Refused(key_node, f"duplicate key {key!r}, first on line {first}",
                           "keep one of them: YAML does not merge repeated keys, and the last one would win")
        seen[key] = key_node.start_mark.line + 1


def check_characters(text: str) -> None:
    """Refuse control characters with their line and column (libyaml only gives an offset)."""
    bad = _NOT_PRINTABLE.search(text)
    if bad is None:
        return
    line = text.count("\n", 0, bad.start()) + 1
    column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
    raise YamlProblem(line, f"control character U+{ord(bad.group()):04X} at column {column}",
                      "remove it, or write it as an escape (\"\\x07\") inside a double-quoted string")


def index_node(root: yaml.Node) -> tuple[dict[Path_, int], set[Path_]]:
    """The line of every mapping key and list item below `root`, and the keys written as `|`/`>` blocks.

    First the size the document has once aliases are expanded, in time linear in what was written: more than
    MAX_NODES values, or an alias inside itself, is refused before anything expands it. Then the walk, without
    recursion, refusing nesting deeper than MAX_DEPTH.
    """
    _check_expanded_size(root)
    lines: dict[Path_, int] = {}
    blocks: set[Path_] = set()
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise YamlProblem(node.start_mark.line + 1, f"nesting deeper than {MAX_DEPTH} levels",
                              "manifests are a few levels deep: check the indentation or brackets")
        stack.extend(reversed(list(_children(node, path, lines, blocks))))
    return lines, blocks


def _check_expanded_size(root: yaml.Node) -> None:
    """Post-order over distinct nodes: each node's size is 1 plus its children's, shared nodes counted once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    aliased = False
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        children = _child_nodes(node)
        if leaving:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_NODES:
                if aliased:
                    raise YamlProblem(root.start_mark.line + 1,
                                      f"aliases expand this document to more than {MAX_NODES:,} values",
                                      "write the values out or use fewer nested aliases: a few hundred bytes "
                                      "of aliases can stand for billions of values")
                raise YamlProblem(root.start_mark.line + 1, f"document has more than {MAX_NODES:,} values",
                                  "split it into smaller documents")
            continue
        if id(node) in on_path:
            raise YamlProblem(node.start_mark.line + 1, "an alias refers to a value that contains it",
                              "a manifest cannot contain itself: replace the alias by the values it should hold")
        if id(node) in sizes:
            aliased = True
            continue
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes or id(c) in on_path)
        aliased = aliased or any(id(c) in sizes for c in children)


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _children(node: yaml.Node, path: Path_, lines: dict[Path_, int],
              blocks: set[Path_]) -> Iterator[tuple[yaml.Node, Path_]]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(key_node.start_mark.line + 1, "a mapping key must be a plain name, not a "
                                  "list or mapping", "write the key as a string")
            child = (*path, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                blocks.add(child)
            yield value_node, child
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            yield item, child


def problem_of(exc: yaml.YAMLError, text: str) -> YamlProblem:
    """A libyaml or constructor error as one line: where, what, and what to do."""
    last_line = max(1, len(text.splitlines()))  # "end of stream" is reported past the last line
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = min(mark.line + 1, last_line) if mark else 1
        problem = " ".join((exc.problem or exc.context or "invalid YAML").split())
        if isinstance(exc, _Refused):
            return YamlProblem(line, problem, exc.hint)
        if "maximum nesting depth" in problem:
            return YamlProblem(line, f"nesting deeper than {MAX_DEPTH} levels",
                               "manifests are a few levels deep: check the indentation or brackets")
        found = _character_at(text, mark) if mark and problem.startswith("found character ") else None
        if found is not None:  # libyaml does not say which character
            problem = problem.replace("found character ", f"found character {found!r} ", 1)
            if found == "\t":
                return YamlProblem(line, f"invalid YAML: {problem}", "indent with spaces, not tabs")
        return YamlProblem(line, f"invalid YAML: {problem}", "fix the indentation or quoting on that line")
    if isinstance(exc, yaml.reader.ReaderError):
        position = max(0, min(exc.position, len(text)))
        return YamlProblem(text.count("\n", 0, position) + 1, f"invalid YAML: {' '.join(exc.reason.split())}",
                           "remove the character or write it as an escape inside a double-quoted string")
    return YamlProblem(1, f"invalid YAML: {' '.join(str(exc).split())}")


def _character_at(text: str, mark: yaml.Mark) -> str | None:
    lines = text.splitlines()
    if 0 <= mark.line < len(lines) and 0 <= mark.column < len(lines[mark.line]):
        return lines[mark.line][mark.column]
    return None
