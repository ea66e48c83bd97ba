"""The journal of HTTP exchanges, so tests can assert on exactly what a client sent and received."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson


@dataclass(frozen=True)
class RecordedExchange:
    """One request and what the sandbox did with it.

    ``status`` is None when the connection was reset instead of answered; ``fault`` names the injected
    fault that shaped the exchange (``"respond"``, ``"reset"``, ``"delay"``) or is None.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    time: float = 0.0
    duration: float = 0.0
    fault: str | None = None

    @property
    def args(self) -> dict[str, list[str]]:
        """The query string parsed into name -> values."""
        return parse_qs(self.query, keep_blank_values=True)

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return orjson.loads(self.body)

    def response_json(self) -> Any:
        """The response body parsed as JSON."""
        return orjson.loads(self.response_body)


class Journal:
    """Thread-safe list of exchanges plus a cheap per (method, path) counter that is always kept."""

    def __init__(self, keep_exchanges: bool) -> None:
        self._keep = keep_exchanges
        self._items: list[RecordedExchange] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def received(self, method: str, path: str) -> None:
        """Count a request as soon as it arrives (before any fault or limit)."""
        with self._lock:
            self._counts[(method.upper(), path)] += 1

    def add(self, exchange: RecordedExchange) -> None:
        """Keep an exchange (unless journaling is off)."""
        if self._keep:
            with self._lock:
                self._items.append(exchange)

    def items(self) -> list[RecordedExchange]:
        """A snapshot copy, oldest first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget exchanges and counts."""
        with self._lock:
            self._items.clear()
            self._counts.clear()

    def count(self, method: str = "*", path_prefix: str = "") -> int:
        """Requests received whose method matches (``*`` = any) and whose path starts with the prefix."""
        wanted = method.upper()
        with self._lock:
            return sum(
                n
                for (m, p), n in self._counts.items()
                if (wanted == "*" or m == wanted) and p.startswith(path_prefix)
            )
