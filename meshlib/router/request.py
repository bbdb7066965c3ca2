"""A request as a proxy sees it: the inputs of route selection."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Request:
    """`authority` is the raw Host header (may include `:port`); `path` includes the query string."""

    authority: str
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = field(default=())
    scheme: str = "http"

    @classmethod
    def of(cls, authority: str, path: str = "/", method: str = "GET",
           headers: Mapping[str, str] | Iterable[tuple[str, str]] = (), scheme: str = "http") -> Request:
        items = headers.items() if isinstance(headers, Mapping) else headers
        return cls(authority, path or "/", method.upper(), tuple((k.lower(), v) for k, v in items), scheme)

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def normalized_path(self) -> str:
        """The path as Envoy routes it with `normalize_path` (istiod sets it): percent-encoded unreserved
        characters decoded, dot segments removed (RFC 3986 §6.2.2); the query string kept as sent."""
        path, sep, query = self.path.partition("?")
        return _remove_dot_segments(UNRESERVED.sub(_decode_unreserved, path)) + sep + query

    @property
    def query(self) -> list[tuple[str, str]]:
        """Query parameters as Envoy matches them: split on `&` and `=`, values as sent (no decoding)."""
        query = self.path.partition("?")[2].partition("#")[0]
        out = []
        for part in query.split("&"):
            if part:
                name, _, value = part.partition("=")
                out.append((name, value))
        return out

    @property
    def host(self) -> str:
        """The authority without a port, lower-cased."""
        a = self.authority.lower()
        if a.startswith("["):
            return a.split("]")[0] + "]"
        return a.rsplit(":", 1)[0] if a.count(":") == 1 else a

    @property
    def port(self) -> int | None:
        a = self.authority
        if a.count(":") == 1 and a.rsplit(":", 1)[1].isdigit():
            return int(a.rsplit(":", 1)[1])
        return None

    def header(self, name: str) -> str | None:
        """One value: repeated headers joined with ','; pseudo-headers come from the request line."""
        values = self.header_values(name)
        return ",".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in order (Envoy 1.40 matches a repeated header if any one value matches)."""
        name = name.lower()
        pseudo = {":authority": self.authority, ":method": self.method, ":path": self.path, ":scheme": self.scheme}
        if name in pseudo:
            return [pseudo[name]]
        if name == "host":
            return [self.authority]
        return [v for k, v in self.headers if k == name]


def _decode_unreserved(m: re.Match[str]) -> str:
    char = chr(int(m.group(1), 16))
    return char if char.isascii() and (char.isalnum() or char in "-._~") else "%" + m.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == len(segments) - 1:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out) or "/"
