"""A batch of requests at a glance: who served it (per version), with what status, how fast, then a sample.

    batch_document("100 requests through the ingress gateway", responses)   # an HTML evidence document

The per-version table counts the pods each request went through (`webapp → catalog v1`), mirrored copies apart;
latency percentiles are nearest-rank over the client's own timings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshlib.report.names import chain_label, peer_label
from meshlib.report.tables import escape, folded, html_document, number, table_fragment

if TYPE_CHECKING:
    from meshlib.traffic import Response

SAMPLE = 20
QUANTILES = (0.5, 0.9, 0.99)


def served_label(response: Response) -> str:
    return chain_label([s.peer for s in response.served_by])


def status_label(response: Response) -> str:
    return str(response.status) if response.status else "no response"


def failed(response: Response) -> bool:
    return response.status == 0 or response.status >= 500


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%"


def version_rows(responses: Sequence[Response]) -> list[tuple[str, int, str, int]]:
    """(served by, requests, share, of which failed), most requests first."""
    total = len(responses)
    served = Counter(served_label(r) for r in responses)
    bad = Counter(served_label(r) for r in responses if failed(r))
    return [(name, n, _share(n, total), bad[name]) for name, n in served.most_common()]


def status_rows(responses: Sequence[Response]) -> list[tuple[str, int, str]]:
    total = len(responses)
    counts = Counter(status_label(r) for r in responses)
    return [(status, n, _share(n, total)) for status, n in sorted(counts.items())]


def mirror_rows(responses: Sequence[Response]) -> list[tuple[str, int]]:
    copies = Counter(peer_label(c.peer) for r in responses for c in r.mirror_copies)
    return sorted(copies.items())


def latency_row(responses: Sequence[Response]) -> tuple[str, ...]:
    elapsed = sorted(r.elapsed_ms for r in responses)
    return (*(number(round(percentile(elapsed, q), 1)) for q in QUANTILES), number(round(elapsed[-1], 1)))


def sample_rows(responses: Sequence[Response], limit: int = SAMPLE) -> list[tuple[str, str, str, float]]:
    return [(r.request_id[:8], status_label(r) + (f" ({r.error})" if r.error else ""), served_label(r),
             round(r.elapsed_ms, 1)) for r in responses[:limit]]


def batch_fragment(responses: Sequence[Response], sample: int = SAMPLE) -> str:
    if not responses:
        return '<p class="note">no requests</p>'
    versions = version_rows(responses)
    statuses = status_rows(responses)
    parts = ["<h4>served by</h4>",
             table_fragment(("served by", "requests", "share", "failed (5xx or none)"), versions,
                            bad=[i for i, row in enumerate(versions) if row[3]]),
             "<h4>statuses</h4>",
             table_fragment(("status", "requests", "share"), statuses,
                            bad=[i for i, row in enumerate(statuses) if not row[0].startswith(("1", "2", "3"))])]
    mirrors = mirror_rows(responses)
    if mirrors:
        parts += ["<h4>mirrored copies (answers dropped)</h4>", table_fragment(("copy served by", "copies"), mirrors)]
    parts += ["<h4>latency (ms, at the client)</h4>",
              table_fragment(("p50", "p90", "p99", "max"), [latency_row(responses)])]
    rows = sample_rows(responses, sample)
    more = f" of {len(responses)}" if len(responses) > len(rows) else ""
    parts.append(folded(f"sample: the first {len(rows)} requests{more}",
                        table_fragment(("x-request-id", "status", "served by", "ms"), rows), pre=False))
    return "".join(parts)


def batch_document(title: str, responses: Sequence[Response], sample: int = SAMPLE,
                   notes: Sequence[str] = ()) -> str:
    """The batch as an HTML evidence document; `notes` (what clients did not see) go first, marked."""
    said = "".join(f'<p class="note"><b>{escape(n)}</b></p>' for n in notes)
    return html_document(f"<h4>{escape(title)}</h4>" + said + batch_fragment(responses, sample), title)
