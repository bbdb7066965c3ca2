"""Load multi-document YAML from files, folders and strings, keeping file:line for every object and field."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshlib.errors import ConfigError, Source

Path_ = tuple[str | int, ...]

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Document:
    """One YAML document: its data and the line of every mapping key and list item below it."""

    data: Any
    source: Source
    lines: dict[Path_, int] = field(default_factory=dict)
    block_scalars: set[Path_] = field(default_factory=set)  # values written as `|` or `>` blocks

    def where(self, path: Path_ = ()) -> Source:
        """The source of `path`, or of its nearest ancestor that has a recorded line."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return Source(self.source.file, self.lines[p])
            p = p[:-1]
        return self.source


def _index_lines(node: yaml.Node, path: Path_, out: dict[Path_, int], blocks: set[Path_]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            out[child] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                blocks.add(child)
            _index_lines(value_node, child, out, blocks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            out[child] = item.start_mark.line + 1
            _index_lines(item, child, out, blocks)


def parse_documents(text: str, filename: str = "<string>") -> list[Document]:
    """Parse every non-empty document in `text`; a YAML syntax error names the file and line."""
    loader = yaml.SafeLoader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            lines: dict[Path_, int] = {}
            blocks: set[Path_] = set()
            _index_lines(node, (), lines, blocks)
            docs.append(Document(data, Source(filename, node.start_mark.line + 1), lines, blocks))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        last_line = max(1, len(text.splitlines()))  # "end of stream" is reported past the last line
        line = min(mark.line + 1, last_line) if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(Source(filename, line), f"invalid YAML: {problem}",
                          "fix the indentation or quoting on that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(Source(filename, 1), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return docs


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; folders recursively, YAML files in sorted order (like `kubectl apply -f DIR -R`)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in YAML_SUFFIXES)
            if not files:
                raise ConfigError(None, f"{p}: folder has no .yaml or .yml files",
                                  "point -f at a manifest file or a folder of manifests")
            yield from files
        elif p.is_file():
            yield p
        else:
            raise ConfigError(None, f"{p}: no such file or folder", "check the path given to -f")


def load_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Every document of every file under `paths`, in order."""
    docs: list[Document] = []
    for f in expand_paths(paths):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(Source(str(f), 1), f"cannot read manifest: {exc}") from None
        docs.extend(parse_documents(text, str(f)))
    return docs
