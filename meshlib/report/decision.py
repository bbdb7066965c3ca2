"""A route decision as evidence: `meshlib explain`'s few lines first, the raw Envoy route folded below them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from meshlib.report.tables import escape, folded, html_document


def decision_document(explained: str, raw: Mapping[str, Any]) -> str:
    lines = explained.strip().splitlines()
    outcome = next((line for line in lines if line.startswith("outcome")), "")
    fragment = (f"<pre>{escape(explained.strip())}</pre>"
                + folded(f"raw Envoy route ({len(json.dumps(raw, indent=2, default=str).splitlines())} lines of "
                         "JSON)", json.dumps(raw, indent=2, default=str)))
    return html_document(fragment, outcome or "route decision")
