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
        self._room = limits.max_bytes - len(self._tail)  # what the head and the items may use
        # One growing buffer, not a list of items: each orjson result keeps a 4 KB allocation alive,
        # which for 40,000 items would be 160 MB.
        self._body = bytearray(self._head)
        self._count = 0
        self._rows: list[tuple[str, str, int]] = []
        self._index = 0

    def add(self, item: bytes, email: str, source: str, row: int) -> Chunk | None:
        """Add one serialised contact; returns the previous chunk when this one did not fit in it."""
        if len(self._head) + len(item) > self._room:
            raise ValueError(f"one contact serialises to {len(item)} bytes, more than a whole request allows")
        done = None
        if self._count and (
            self._count >= self._limits.max_contacts or len(self._body) + 1 + len(item) > self._room
        ):
            done = self._flush()
        if self._count:
            self._body += b","
        self._body += item
        self._count += 1
        self._rows.append((email, source, row))
        return done

    def finish(self) -> Chunk | None:
        return self._flush() if self._count else None

    def _flush(self) -> Chunk:
        self._index += 1
        self._body += self._tail
        chunk = Chunk(self._index, bytes(self._body), self._count, self._rows)
        self._body, self._count, self._rows = bytearray(self._head), 0, []
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
