"""Per-app request limits: a sliding one-second window and a per-UTC-day quota [DOC-RATE]."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from datetime import UTC, date, datetime


class SlidingWindow:
    """At most ``limit`` accepted events per key in any 1 s window; refused events do not count."""

    def __init__(self, limit: int | None, window: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        """Record an event at ``now`` and say whether it is allowed."""
        if self.limit is None:
            return True
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True


class DailyQuota:
    """At most ``limit`` accepted requests per key per UTC calendar day (resets at 00:00:00 UTC)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._used: dict[tuple[str, date], int] = defaultdict(int)
        self._lock = threading.Lock()

    def exceeded(self, key: str, now: float) -> bool:
        """True when ``key`` has no requests left today."""
        if self.limit is None:
            return False
        with self._lock:
            return self._used[(key, _utc_day(now))] >= self.limit

    def spend(self, key: str, now: float) -> None:
        """Count one accepted request."""
        with self._lock:
            self._used[(key, _utc_day(now))] += 1

    def used(self, key: str, now: float) -> int:
        """Requests counted for ``key`` on the UTC day of ``now``."""
        with self._lock:
            return self._used.get((key, _utc_day(now)), 0)


def _utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()
