"""An adjustable wall clock: tests cross the UTC-midnight quota reset or expire tokens without sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Real time plus an offset: time keeps flowing (sliding windows still work) after a jump."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        """Seconds since the epoch, as the sandbox sees it."""
        with self._lock:
            return time.time() + self._offset

    def now(self) -> datetime:
        """The sandbox's current UTC time."""
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (or back, with a negative value)."""
        with self._lock:
            self._offset += seconds

    def set(self, when: datetime) -> None:
        """Make the sandbox clock read ``when`` now (naive datetimes are taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        with self._lock:
            self._offset = when.timestamp() - time.time()


def iso(ts: float) -> str:
    """ISO-8601 with milliseconds and Z, the format of the spec's examples (2016-01-23T13:48:44.108Z)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def iso_date(ts: float) -> str:
    """A plain date: the spec types ``deleted_at`` of a contact as ``format: date``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
