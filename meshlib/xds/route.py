"""Translate one VirtualService HTTP rule into Envoy routes (pure; istio-semantics.md §1.3–1.9)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshlib.config.hosts import fqdn
from meshlib.config.kinds import Resource
from meshlib.config.store import MeshSettings
from meshlib.profile import IstioProfile
from meshlib.units import format_duration, parse_duration
from meshlib.xds.model import Json
from meshlib.xds.naming import outbound_cluster

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts",
                  "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                                           "PreviousHostsPredicate"}}
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}
PSEUDO_MATCH_HEADERS = {"method": ":method", "authority": ":authority", "scheme": ":scheme"}

# Resolves a destination (fqdn, explicit port or None) to the port its cluster uses.
PortResolver = Callable[[str, int | None], int]


@dataclass(frozen=True)
class TranslateContext:
    profile: IstioProfile
    mesh: MeshSettings
    listener_port: int
    resolve_port: PortResolver
    hash_policy: Callable[[str], list[Json] | None] = lambda _cluster: None  # consistent hashing per cluster


def fraction(value: float) -> Json:
    """A percentage as Envoy's FractionalPercent: `{numerator: value*10000, denominator: MILLION}`."""
    return {"numerator": round(value * 10000), "denominator": "MILLION"}


def string_match(spec: dict[str, str]) -> Json:
    if "exact" in spec:
        return {"exact": spec["exact"]}
    if "prefix" in spec:
        return {"prefix": spec["prefix"]}
    return {"safeRegex": {"regex": spec["regex"]}}


def _is_presence(spec: dict[str, str]) -> bool:
    """`{}`, `regex: "*"` and `prefix: ""` all mean "present with any value" (Envoy rejects an empty prefix)."""
    return not spec or spec.get("regex") == "*" or spec.get("prefix") == ""


def header_matchers(match: dict[str, Any], profile: IstioProfile) -> list[Json]:
    """`headers` and `withoutHeaders` sorted together by name (as Istio does), then :method, :authority, :scheme."""
    out: list[Json] = []
    for name in match.get("headers") or {}:
        if name.lower() in ("uri", "scheme", "method", "authority"):
            continue  # ignored per the API
        spec = match["headers"][name] or {}
        out.append({"name": name, "presentMatch": True} if _is_presence(spec)
                   else {"name": name, "stringMatch": string_match(spec)})
    for name in match.get("withoutHeaders") or {}:
        spec = match["withoutHeaders"][name] or {}
        if _is_presence(spec):
            out.append({"name": name, "presentMatch": True, "invertMatch": True})
        else:
            inverted: Json = {"name": name, "stringMatch": string_match(spec), "invertMatch": True}
            if profile.missing_header_as_empty:  # ≤1.21: an absent header matches no inverted string matcher
                inverted["treatMissingHeaderAsEmpty"] = True
            out.append(inverted)
    out.sort(key=lambda h: h["name"])
    for key, pseudo in PSEUDO_MATCH_HEADERS.items():
        if match.get(key):
            out.append({"name": pseudo, "stringMatch": string_match(match[key])})
    return out


def route_match(match: dict[str, Any] | None, profile: IstioProfile) -> Json:
    if match is None:
        return {"prefix": "/"}
    uri = match.get("uri") or {}
    out: Json = {}
    if "exact" in uri:
        out["path"] = uri["exact"]
    elif "prefix" in uri:
        out["prefix"] = uri["prefix"]
    elif "regex" in uri:
        out["safeRegex"] = {"regex": uri["regex"]}
    else:
        out["prefix"] = "/"
    out["caseSensitive"] = not match.get("ignoreUriCase", False)
    headers = header_matchers(match, profile)
    if headers:
        out["headers"] = headers
    params = []
    for name in sorted(match.get("queryParams") or {}):
        spec = match["queryParams"][name] or {}
        presence = _is_presence(spec) or ("prefix" in spec and not profile.query_prefix_match)
        params.append({"name": name, "presentMatch": True} if presence
                      else {"name": name, "stringMatch": string_match(spec)})
    if params:
        out["queryParameters"] = params
    return out


def is_catch_all(match: Json) -> bool:
    """Istio's IsCatchAllRoute: prefix `/` (or regex `.*`) and no header or query parameter matchers."""
    path_all = match.get("prefix") == "/" or (match.get("safeRegex") or {}).get("regex") == ".*"
    return path_all and not match.get("headers") and not match.get("queryParameters")


def builtin_retry_policy(ctx: TranslateContext) -> Json:
    """Istio's built-in default (retry.DefaultPolicy): 2 retries; `[503]` only up to 1.23."""
    policy: Json = {"retryOn": DEFAULT_RETRY_ON, "numRetries": 2, "retryHostPredicate": [PREVIOUS_HOSTS],
                    "hostSelectionRetryMaxAttempts": "5"}
    if ctx.profile.default_retriable_503:
        policy["retriableStatusCodes"] = [503]
    return policy


def default_retry_policy(ctx: TranslateContext) -> Json:
    mesh = ctx.mesh.default_retry_policy
    if mesh:
        return retry_policy(mesh, ctx) or {}
    return builtin_retry_policy(ctx)


def retry_policy(retries: dict[str, Any] | None, ctx: TranslateContext) -> Json | None:
    """None means "no retryPolicy at all" (attempts <= 0). A user policy starts from the built-in default and
    overrides what it sets (retry.ConvertPolicy)."""
    if retries is None:
        return default_retry_policy(ctx)
    attempts = retries.get("attempts", 0)
    if attempts <= 0:
        return None
    policy = builtin_retry_policy(ctx)
    policy["numRetries"] = attempts
    if retries.get("retryOn"):
        tokens = [t.strip() for t in retries["retryOn"].split(",") if t.strip()]
        names = [t for t in tokens if not _is_status_code(t)]
        codes = [int(t) for t in tokens if _is_status_code(t)]
        if codes and "retriable-status-codes" not in ",".join(names):
            names.append("retriable-status-codes")
        policy["retryOn"] = ",".join(names)
        policy.pop("retriableStatusCodes", None)
        if codes:
            policy["retriableStatusCodes"] = codes
    if retries.get("perTryTimeout"):
        policy["perTryTimeout"] = format_duration(parse_duration(retries["perTryTimeout"]))
    if retries.get("retryIgnorePreviousHosts") is False and ctx.profile.retry_host_and_backoff:
        policy.pop("retryHostPredicate")
    if retries.get("retryRemoteLocalities"):
        policy["retryPriority"] = {"name": "envoy.retry_priorities.previous_priorities", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                     "PreviousPrioritiesConfig", "updateFrequency": 2}}
    if retries.get("backoff") and ctx.profile.retry_host_and_backoff:
        policy["retryBackOff"] = {"baseInterval": format_duration(parse_duration(retries["backoff"]))}
    return policy


def _is_status_code(token: str) -> bool:
    return token.isdigit() and 100 <= int(token) <= 599


def mirror_percent(rule: dict[str, Any]) -> Json | None:
    """Envoy runtimeFraction.defaultValue for a rule's mirror; None when 0 (no mirror policy)."""
    if rule.get("mirrorPercentage") is not None:
        value = rule["mirrorPercentage"].get("value", 0)
        return fraction(value) if value > 0 else None
    if rule.get("mirrorPercent") is not None:
        value = rule["mirrorPercent"]
        return {"numerator": value} if value > 0 else None
    return {"numerator": 100}


def fault_config(fault: dict[str, Any]) -> Json | None:
    out: Json = {"@type": FAULT_TYPE}
    delay = fault.get("delay")
    if delay and delay.get("fixedDelay"):
        # no percentage: the deprecated integer `percent` (HUNDRED), 0 when absent ⇒ `{}` in JSON (nothing injected)
        pct = (fraction(delay["percentage"].get("value", 0)) if delay.get("percentage") is not None
               else {"numerator": delay["percent"]} if delay.get("percent") else {})
        out["delay"] = {"fixedDelay": format_duration(parse_duration(delay["fixedDelay"])), "percentage": pct}
    abort = fault.get("abort")
    if abort and abort.get("httpStatus"):
        out["abort"] = {"httpStatus": abort["httpStatus"]}
        if abort.get("percentage") is not None:  # absent ⇒ no percentage ⇒ nothing injected
            out["abort"]["percentage"] = fraction(abort["percentage"].get("value", 0))
    return out if len(out) > 1 else None


def header_ops(headers: dict[str, Any] | None, out: Json, prefix: str = "") -> None:
    for side, key in (("request", "request"), ("response", "response")):
        ops = (headers or {}).get(side) or {}
        adds: list[Json] = []
        for name in sorted(ops.get("set") or {}):
            if name.startswith(":") or name.lower() == "host":
                continue
            adds.append({"header": {"key": name, "value": ops["set"][name]},
                         "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"})
        for name in sorted(ops.get("add") or {}):
            if name.startswith(":") or name.lower() == "host":
                continue
            adds.append({"header": {"key": name, "value": ops["add"][name]},
                         "appendAction": "APPEND_IF_EXISTS_OR_ADD"})
        if adds:
            out.setdefault(f"{key}HeadersToAdd", []).extend(adds)
        removes = [n for n in ops.get("remove") or [] if not n.startswith(":") and n.lower() != "host"]
        if removes:
            out.setdefault(f"{key}HeadersToRemove", []).extend(removes)


def host_rewrite(rule: dict[str, Any]) -> str | None:
    if (rule.get("rewrite") or {}).get("authority"):
        return rule["rewrite"]["authority"]
    for op in ("set", "add"):
        hdrs = (((rule.get("headers") or {}).get("request") or {}).get(op) or {})
        for k, v in hdrs.items():
            if k.lower() in ("host", ":authority"):
                return v
    return None


def destination_cluster(dest: dict[str, Any], vs: Resource, ctx: TranslateContext) -> str:
    host = fqdn(dest["host"], vs.namespace)
    port = ctx.resolve_port(host, (dest.get("port") or {}).get("number"))
    return outbound_cluster(port, dest.get("subset", ""), host)


def translate_rule(rule: dict[str, Any], vs: Resource, ctx: TranslateContext,
                   matches: list[tuple[int | None, dict[str, Any] | None]]) -> list[Json]:
    """The Envoy routes for `rule`, one per kept match entry (or one catch-all when it has none)."""
    routes = []
    if rule.get("redirect") and (rule["redirect"].get("redirectCode") or 301) not in REDIRECT_CODES:
        return []  # Istio drops the action of a redirect with a code Envoy cannot send
    for _index, match in matches:
        envoy_match = route_match(match, ctx.profile)
        r: Json = {}
        name = ".".join(n for n in (rule.get("name"), (match or {}).get("name")) if n)
        if name:
            r["name"] = name
        r["match"] = envoy_match
        action = _action(rule, vs, ctx)
        r.update(action)
        r["metadata"] = {"filterMetadata": {"istio": {"config": _config_path(vs, ctx)}}}
        r["decorator"] = {"operation": _operation(r, vs, ctx)}
        if rule.get("fault"):
            fault = fault_config(rule["fault"])
            if fault:
                r["typedPerFilterConfig"] = {FAULT_FILTER: fault}
        routes.append(r)
    return routes


def _config_path(vs: Resource, ctx: TranslateContext) -> str:
    version = ctx.profile.route_config_api
    return f"/apis/networking.istio.io/{version}/namespaces/{vs.namespace}/virtual-service/{vs.name}"


def _operation(route: Json, vs: Resource, ctx: TranslateContext) -> str:
    m = route["match"]
    path = (m["prefix"] + "*" if "prefix" in m else m.get("path") or m.get("safeRegex", {}).get("regex", "/*"))
    cluster = (route.get("route") or {}).get("cluster")
    if cluster:  # route.go getRouteOperation: host and port of the one destination cluster
        _, port, _, host = cluster.split("|")
        return f"{host}:{port}{path}"
    return f"{vs.name}:{ctx.listener_port}{path}"


def _action(rule: dict[str, Any], vs: Resource, ctx: TranslateContext) -> Json:
    out: Json = {}
    if rule.get("directResponse"):
        dr = rule["directResponse"]
        resp: Json = {"status": dr["status"]}
        body = dr.get("body") or {}
        if body.get("string") is not None:
            resp["body"] = {"inlineString": body["string"]}
        elif body.get("bytes") is not None:
            resp["body"] = {"inlineBytes": body["bytes"]}
        out["directResponse"] = resp
        header_ops(rule.get("headers"), out)
        return out
    if rule.get("redirect"):
        rd = rule["redirect"]
        red: Json = {}
        if rd.get("uri"):
            red["pathRedirect"] = rd["uri"]
        if rd.get("authority"):
            red["hostRedirect"] = rd["authority"]
        if rd.get("scheme"):
            red["schemeRedirect"] = rd["scheme"]
        port = rd.get("port") or (ctx.listener_port if rd.get("derivePort") == "FROM_REQUEST_PORT" else 0)
        if port and (port, rd.get("scheme") or "http") not in ((80, "http"), (443, "https")):
            red["portRedirect"] = port  # no explicit :80 for http or :443 for https
        red["responseCode"] = REDIRECT_CODES[rd.get("redirectCode") or 301]
        out["redirect"] = red
        return out
    action: Json = {}
    dests = rule.get("route") or []
    weighted_dests = [d for d in dests if (d.get("weight") or 0) != 0]
    if len(dests) > 1 and len(weighted_dests) == 1 and ctx.profile.single_weight_collapses:
        dests = weighted_dests  # up to 1.18 a lone non-zero weight is a plain cluster route
    if len(dests) == 1:
        action["cluster"] = destination_cluster(dests[0]["destination"], vs, ctx)
        header_ops(dests[0].get("headers"), out)
        hashing = ctx.hash_policy(action["cluster"])
        if hashing:
            action["hashPolicy"] = hashing
    else:
        clusters = []
        for d in dests:
            if (d.get("weight") or 0) == 0:
                continue
            entry: Json = {"name": destination_cluster(d["destination"], vs, ctx), "weight": d["weight"]}
            header_ops(d.get("headers"), entry)
            clusters.append(entry)
        weighted: Json = {"clusters": clusters}
        if ctx.profile.emit_total_weight:
            weighted["totalWeight"] = sum(c["weight"] for c in clusters)
        action["weightedClusters"] = weighted
    timeout = rule.get("timeout")
    action["timeout"] = format_duration(parse_duration(timeout)) if timeout else "0s"
    retry = retry_policy(rule.get("retries"), ctx)
    if retry and action.get("hashPolicy") and ctx.profile.hash_drops_previous_hosts:
        retry.pop("retryHostPredicate", None)  # a retry stays on the hashed host
    if retry:
        action["retryPolicy"] = retry
    rewrite = rule.get("rewrite") or {}
    if rewrite.get("uri") is not None:
        action["prefixRewrite"] = rewrite["uri"]
    if rewrite.get("uriRegexRewrite"):
        action["regexRewrite"] = {"pattern": {"regex": rewrite["uriRegexRewrite"]["match"]},
                                  "substitution": rewrite["uriRegexRewrite"]["rewrite"]}
    authority = host_rewrite(rule)
    if authority:
        action["hostRewriteLiteral"] = authority
    mirrors = _mirror_policies(rule, vs, ctx)
    if mirrors:
        action["requestMirrorPolicies"] = mirrors
    action["maxGrpcTimeout"] = action["timeout"]
    out["route"] = action
    header_ops(rule.get("headers"), out)
    return out


def _mirror_policies(rule: dict[str, Any], vs: Resource, ctx: TranslateContext) -> list[Json]:
    policies = []
    targets: list[tuple[dict[str, Any], Json | None]] = []
    if rule.get("mirror"):
        targets.append((rule["mirror"], mirror_percent(rule)))
    for m in (rule.get("mirrors") or []) if ctx.profile.mirrors_list else []:
        pct = m.get("percentage")
        targets.append((m["destination"], {"numerator": 100} if pct is None
                        else (fraction(pct.get("value", 0)) if pct.get("value", 0) > 0 else None)))
    for dest, pct in targets:
        if pct is None:
            continue
        policy: Json = {"cluster": destination_cluster(dest, vs, ctx), "runtimeFraction": {"defaultValue": pct},
                        "traceSampled": False}
        if not ctx.profile.shadow_host_suffix:
            policy["disableShadowHostSuffixAppend"] = True
        policies.append(policy)
    return policies
