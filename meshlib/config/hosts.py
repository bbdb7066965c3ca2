"""Host names as Istio resolves them (istio-semantics.md §1.1) and host/wildcard matching."""

from __future__ import annotations

import ipaddress

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """A name without a dot becomes `<name>.<namespace>.svc.cluster.local`; anything with a dot is literal."""
    h = host.strip().lower()
    if h == "*" or "." in h or is_ip(h):
        return h
    return f"{h}.{namespace}.{CLUSTER_DOMAIN}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_matches(pattern: str, host: str) -> bool:
    """Does `pattern` (`*`, `*.example.com`, or a literal) cover `host`?"""
    pattern, host = pattern.lower(), host.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def hosts_intersect(a: str, b: str) -> bool:
    """Wildcards in either direction, as Istio binds VirtualService hosts to Gateway server hosts."""
    return host_matches(a, b) or host_matches(b, a)


def short_aliases(service_fqdn: str, proxy_namespace: str) -> list[str]:
    """The extra domains a sidecar accepts for a Kubernetes service (istio-semantics.md §5)."""
    parts = service_fqdn.split(".")
    if len(parts) < 3 or not service_fqdn.endswith("." + CLUSTER_DOMAIN):
        return []
    name, ns = parts[0], parts[1]
    if ns == proxy_namespace:
        return [name, f"{name}.{ns}.svc", f"{name}.{ns}"]
    return [f"{name}.{ns}", f"{name}.{ns}.svc"]
