"""Container logs: one bounded buffer of lines per container, like `kubectl logs` reads them."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_LINES = 100_000


@dataclass
class LogBuffer:
    """Lines with their UTC timestamps; thread-safe, oldest lines dropped beyond MAX_LINES."""

    lines: deque[tuple[datetime, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, line: str) -> None:
        with self._lock:
            self.lines.append((datetime.now(UTC), line.rstrip("\n")))

    def read(self, since: datetime | None = None, tail: int | None = None) -> list[str]:
        with self._lock:
            items = [text for ts, text in self.lines if since is None or ts >= since]
        return items[-tail:] if tail else items
