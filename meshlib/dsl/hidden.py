"""What a batch's clients did not see: retried requests, failures a retry hid, mirror copies that failed.

Read from the request ledger (which pod's sidecar served which `x-request-id`, and as which try of its
caller: Envoy's `x-envoy-attempt-count`). Per request and per called service (the hop's authority: its tries
may land on any of its pods), the highest try number says how many tries the caller made (a try that never
reached a pod, such as a refused connection, still counts in the number of the next one); a failed answer
(5xx or none) followed by a later try of the same call is a failure the retry hid from the client.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from meshlib.report.names import PeerLike, version_of
from meshlib.traffic import Response


def _who(peer: PeerLike) -> str:
    """The pod's workload, and its version when it has one and the name does not say it (`catalog-v2`, `webapp`,
    `simple-backend-1`): the workload, not the app, since a retry that hid a failure names the pod's deployment."""
    version = version_of(peer)
    return f"{peer.workload} {version}" if version and not peer.workload.endswith(version) else peer.workload


def _failed(status: int) -> bool:
    return status == 0 or status >= 500


@dataclass
class Hidden:
    responses: int = 0
    traced: int = 0  # responses the ledger tied to at least one pod
    retried: int = 0  # responses with at least one extra try somewhere on their path
    extra_tries: int = 0
    masked: Counter[tuple[str, int]] = field(default_factory=Counter)  # (app and version, status)
    mirror_failures: Counter[tuple[str, int]] = field(default_factory=Counter)
    mirror_copies: int = 0

    def lines(self) -> list[str]:
        """Sentences for the console and the evidence; empty when nothing was hidden."""
        out = []
        if self.retried:
            out.append(f"{self.retried} of {self.responses} requests were retried ({self.extra_tries} extra "
                       f"{'try' if self.extra_tries == 1 else 'tries'})")
        if self.masked:
            out.append("failures a retry hid from the clients: " + _counts(self.masked))
        if self.mirror_failures:
            out.append(f"{sum(self.mirror_failures.values())} of {self.mirror_copies} mirrored copies failed "
                       f"(their answers are dropped): " + _counts(self.mirror_failures))
        return out


def _counts(counts: Counter[tuple[str, int]]) -> str:
    return ", ".join(f"{who} answered {status or 'nothing'} ×{n}" for (who, status), n in counts.most_common())


def of(responses: list[Response]) -> Hidden:
    hidden = Hidden(responses=len(responses))
    for r in responses:
        hidden.traced += bool(r.served_by)
        by_call: dict[str, list] = defaultdict(list)  # the service a hop called: its tries may land on any pod
        for s in r.served_by:
            by_call[s.authority].append(s)
        extra = 0
        for served in by_call.values():
            top = max(s.attempt for s in served)
            extra += top - 1
            hidden.masked.update((_who(s.peer), s.status) for s in served
                                 if _failed(s.status) and s.attempt < top)
        hidden.retried += extra > 0
        hidden.extra_tries += extra
        hidden.mirror_copies += len(r.mirror_copies)
        hidden.mirror_failures.update((_who(s.peer), s.status) for s in r.mirror_copies
                                      if _failed(s.status))
    return hidden
