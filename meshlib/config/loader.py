"""Load multi-document YAML from files, folders, standard input and strings, keeping file:line for every field."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from meshlib.config.safeyaml import BoundedLoader, Path_, YamlProblem, check_characters, index_node, problem_of
from meshlib.errors import ConfigError, Source

YAML_SUFFIXES = (".yaml", ".yml")
STDIN = "<stdin>"
MAX_BYTES = 16 * 2**20  # per file, and for standard input
MAX_DOCUMENTS = 5000  # per apply (the whole of Istio's own install is a few hundred)


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


def parse_documents(text: str, filename: str = "<string>", max_documents: int = MAX_DOCUMENTS) -> list[Document]:
    """Parse every non-empty document in `text`; any problem is one ConfigError naming the file and line."""
    if len(text) > MAX_BYTES:
        raise ConfigError(Source(filename, 1), f"manifest is larger than {MAX_BYTES // 2**20} MiB",
                          "split it into smaller files")
    try:
        check_characters(text)
        return _parse(text, filename, max_documents)
    except YamlProblem as p:
        raise ConfigError(Source(filename, p.line), p.message, p.hint) from None
    except yaml.YAMLError as exc:
        p = problem_of(exc, text)
        raise ConfigError(Source(filename, p.line), p.message, p.hint) from None


def _parse(text: str, filename: str, max_documents: int) -> list[Document]:
    loader = BoundedLoader(str(text))  # libyaml takes a plain str only (behave's step text is a subclass)
    docs: list[Document] = []
    count = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            count += 1
            if count > max_documents:
                line = node.start_mark.line + 1 if node is not None else 1
                raise YamlProblem(line, f"more than {max_documents:,} YAML documents in one apply",
                                  "apply the manifests in several smaller batches")
            if node is None:
                continue
            lines, blocks = index_node(node)
            data = loader.construct_document(node)
            if data is None:
                continue
            docs.append(Document(data, Source(filename, node.start_mark.line + 1), lines, blocks))
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


def read_stdin(stream: BinaryIO | None = None) -> str:
    """Standard input (`-f -`) as text, bounded like a file."""
    raw = (stream or sys.stdin.buffer).read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ConfigError(Source(STDIN, 1), f"standard input is larger than {MAX_BYTES // 2**20} MiB",
                          "split the manifests into smaller batches")
    return _decode(raw, STDIN)


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(Source(name, line), f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                          "save the manifest as UTF-8") from None


def _read_file(f: Path) -> str:
    try:
        size = f.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(Source(str(f), 1), f"manifest is larger than {MAX_BYTES // 2**20} MiB",
                              "split it into smaller files")
        return _decode(f.read_bytes(), str(f))
    except OSError as exc:
        raise ConfigError(Source(str(f), 1), f"cannot read manifest: {exc.strerror or exc}",
                          "check the file's permissions") from None


def load_documents(paths: Iterable[str | Path], stdin: BinaryIO | None = None) -> list[Document]:
    """Every document of every file under `paths`, in order; `-` reads standard input (once)."""
    raw_paths = list(paths)
    if sum(1 for p in raw_paths if str(p) == "-") > 1:
        raise ConfigError(None, "-f - is given more than once", "standard input can be read only once")
    docs: list[Document] = []
    for raw in raw_paths:
        if str(raw) == "-":
            sources: Iterable[tuple[str, str]] = [(read_stdin(stdin), STDIN)]
        else:
            sources = ((_read_file(f), str(f)) for f in expand_paths([raw]))
        for text, name in sources:
            left = MAX_DOCUMENTS - len(docs)
            docs.extend(parse_documents(text, name, max(left, 0)))
    return docs
