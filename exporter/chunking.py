"""Cut contacts into contacts_json_import request bodies.

Each body holds at most ``max_contacts`` contacts and at most ``max_bytes`` bytes *including* the JSON
envelope, because Constant Contact silently drops whatever lies past 4 MB. Items are serialised once with
orjson and the body is assembled from bytes, so the size is exact, not estimated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from .config import ChunkLimits
from .errors import ConfigError


@dataclass
class Chunk:
    """One import request body, and which input rows it carries (to map Constant Contact's errors back)."""

    index: int
    body: bytes
    count: int
    rows: list[tuple[str, str, int]] = field(default_factory=list)  # (email, source, row), in body order


class Chunker:
    """Feed serialised contacts with ``add``; completed chunks come out of ``add`` and ``finish``."""

    def __init__(self, list_ids: Sequence[str], limits: ChunkLimits) -> None:
        if not 1 <= len(list_ids) <= 50:
            raise ConfigError("an import targets 1 to 50 lists")
        self._head = b'{"import_data":['
        self._tail = b'],"list_ids":' + orjson.dumps(list(list_ids)) + b"}"
        self._limits = limits
        self._room = limits.max_bytes - len(self._head) - len(self._tail)
        self._items: list[bytes] = []
        self._rows: list[tuple[str, str, int]] = []
        self._size = 0  # bytes of items plus separating commas
        self._index = 0

    def add(self, item: bytes, email: str, source: str, row: int) -> Chunk | None:
        """Add one serialised contact; returns the previous chunk when this one did not fit in it."""
        extra = len(item) + (1 if self._items else 0)
        if len(item) > self._room:
            raise ValueError(f"one contact serialises to {len(item)} bytes, more than a whole request allows")
        done = None
        if self._items and (len(self._items) >= self._limits.max_contacts or self._size + extra > self._room):
            done = self._flush()
            extra = len(item)
        self._items.append(item)
        self._rows.append((email, source, row))
        self._size += extra
        return done

    def finish(self) -> Chunk | None:
        return self._flush() if self._items else None

    def _flush(self) -> Chunk:
        self._index += 1
        chunk = Chunk(
            self._index, self._head + b",".join(self._items) + self._tail, len(self._items), self._rows
        )
        self._items, self._rows, self._size = [], [], 0
        return chunk


def chunk_contacts(
    contacts: Sequence[dict[str, object]], list_ids: Sequence[str], limits: ChunkLimits
) -> Iterator[Chunk]:
    """Convenience for small inputs and tests: all chunks for a list of contacts."""
    chunker = Chunker(list_ids, limits)
    for n, contact in enumerate(contacts, start=1):
        done = chunker.add(orjson.dumps(contact), str(contact.get("email", "")), "", n)
        if done:
            yield done
    last = chunker.finish()
    if last:
        yield last
