"""What a step applied, as evidence: one row per resource (kind, name, namespace), the YAML folded below."""

from __future__ import annotations

from meshlib.report.tables import folded, html_document, table_fragment


def split_ref(ref: str) -> tuple[str, str, str]:
    """`VirtualService/catalog.istioinaction` → ("VirtualService", "catalog", "istioinaction")."""
    kind, _, rest = ref.partition("/")
    name, _, namespace = rest.rpartition(".")  # a name may hold dots, a namespace cannot
    return kind, name, namespace


def applied_document(refs: list[str], yaml_text: str = "") -> str:
    rows = [split_ref(ref) for ref in refs]
    body = table_fragment(("kind", "name", "namespace"), rows) if rows else '<p class="note">nothing applied</p>'
    if yaml_text:
        body += folded(f"the YAML ({len(yaml_text.splitlines())} lines)", yaml_text)
    return html_document(body, "applied resources")
