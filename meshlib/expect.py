"""Framework-neutral assertions whose failure messages say what was expected, what was seen, and how sure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class ExpectationFailed(AssertionError):
    """A release check that did not hold; the message is written for the person reading the report."""


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    body = [tuple(str(c) for c in r) for r in rows]
    cells = [tuple(header), *body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(cells[0]), "  " + "-+-".join("-" * w for w in widths), *map(line, body)])


def fail(expected: str, seen: str, detail: str = "") -> ExpectationFailed:
    message = f"expected {expected}\n     but {seen}"
    if detail:
        message += "\n" + detail
    return ExpectationFailed(message)
