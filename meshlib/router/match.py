"""Envoy route matching over the translated config: virtual host domains, path, headers, query (RE2)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from meshlib.router.request import Request

Json = dict[str, Any]


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern)


def full_match(pattern: str, value: str) -> bool:
    """RE2 semantics, whole value (Envoy's safe_regex)."""
    return _regex(pattern).fullmatch(value) is not None


def string_match(spec: Json, value: str, ignore_case: bool = False) -> bool:
    if "exact" in spec:
        return value.lower() == spec["exact"].lower() if ignore_case else value == spec["exact"]
    if "prefix" in spec:
        return value.lower().startswith(spec["prefix"].lower()) if ignore_case else value.startswith(spec["prefix"])
    if "suffix" in spec:
        return value.endswith(spec["suffix"])
    if "contains" in spec:
        return spec["contains"] in value
    if "safeRegex" in spec:
        return full_match(spec["safeRegex"]["regex"], value)
    return False


def header_matches(matcher: Json, request: Request) -> bool:
    values = request.header_values(matcher["name"])
    if matcher.get("presentMatch"):
        result = bool(values)
    elif not values:
        if matcher.get("treatMissingHeaderAsEmpty"):
            result = string_match(matcher.get("stringMatch") or {}, "")
        else:
            return False  # Envoy: an absent header matches no string matcher, inverted or not (only presentMatch)
    else:  # a repeated header matches when any one of its values does
        result = any(string_match(matcher.get("stringMatch") or {}, v) for v in values)
    return not result if matcher.get("invertMatch") else result


def query_matches(matcher: Json, request: Request) -> bool:
    values = [v for k, v in request.query if k == matcher["name"]]
    if matcher.get("presentMatch"):
        return bool(values)
    if not values:
        return False
    return string_match(matcher.get("stringMatch") or {}, values[0])


def route_matches(match: Json, request: Request) -> bool:
    case_sensitive = match.get("caseSensitive", True)
    path = request.normalized_path  # with the query: prefix matching sees it, exact and regex do not
    path_only = path.split("?", 1)[0]
    if "prefix" in match:
        if not string_match({"prefix": match["prefix"]}, path, ignore_case=not case_sensitive):
            return False
    elif "path" in match:
        if not string_match({"exact": match["path"]}, path_only, ignore_case=not case_sensitive):
            return False
    elif "safeRegex" in match:
        if not full_match(match["safeRegex"]["regex"], path_only):
            return False
    return (all(header_matches(h, request) for h in match.get("headers") or [])
            and all(query_matches(q, request) for q in match.get("queryParameters") or []))


def domain_matches(domain: str, host: str) -> int:
    """Envoy's order: exact (3) > suffix wildcard `*.x` (2, longer first) > prefix `x.*` (1) > `*` (0); -1 none."""
    domain = domain.lower()
    if domain == host:
        return 3
    if domain.startswith("*") and domain != "*" and host.endswith(domain[1:]):
        return 2
    if domain.endswith("*") and domain != "*" and host.startswith(domain[:-1]):
        return 1
    if domain == "*":
        return 0
    return -1


def select_virtual_host(route_config: Json, request: Request) -> Json | None:
    host = request.host if route_config.get("ignorePortInHostMatching") else request.authority.lower()
    best, best_rank = None, (-1, 0)
    for vh in route_config.get("virtualHosts") or []:
        for domain in vh.get("domains") or []:
            kind = domain_matches(domain, host)
            rank = (kind, len(domain))
            if kind >= 0 and rank > best_rank:
                best, best_rank = vh, rank
    return best
