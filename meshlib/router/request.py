"""A request as a proxy sees it: the inputs of route selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit


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
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.path).query, keep_blank_values=True)

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
        """Envoy joins repeated headers with ','; pseudo-headers come from the request line."""
        name = name.lower()
        pseudo = {":authority": self.authority, ":method": self.method, ":path": self.path, ":scheme": self.scheme}
        if name in pseudo:
            return pseudo[name]
        if name == "host":
            return self.authority
        values = [v for k, v in self.headers if k == name]
        return ",".join(values) if values else None
