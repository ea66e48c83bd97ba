"""Cut contacts into contacts_json_import request bodies.

Each body holds at most ``max_contacts`` contacts and at most ``max_bytes`` bytes *including* the JSON
envelope, because Constant Contact silently drops whatever lies past 4 MB. Contacts are serialised with
orjson and bodies are assembled from those bytes, so the size is exact, not estimated.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add

import orjson

from .config import ChunkLimits
from .errors import ConfigError

_OPEN = b'{"email":"'  # how every item starts: "email" is always a contact's first key
_CLOSE = b"}"
_BETWEEN = _CLOSE + b"," + _OPEN


def serialise(contacts: Sequence[dict[str, object]]) -> tuple[bytes, list[bytes]]:
    """The contacts as import_data items joined with commas, in one orjson call, and each item's
    *core*: its bytes between the opening ``{"email":"`` and the closing ``}``.

    One call for thousands of contacts costs a fraction of one call each. The items are found again
    by splitting at ``},{"email":"``, which occurs nowhere else: inside a JSON string every quote is
    escaped. Every contact's first key must be "email" (checked: the split must give one core each).
    """
    if not contacts:
        return b"", []
    joined = orjson.dumps(contacts)[1:-1]
    cores = joined[len(_OPEN) : -len(_CLOSE)].split(_BETWEEN)
    if len(cores) != len(contacts) or not joined.startswith(_OPEN):
        raise ValueError("every contact must start with its email to be serialised in a batch")
    return joined, cores


def join_cores(cores: Sequence[bytes]) -> bytes:
    """The items of these cores joined with commas, as :func:`serialise` gives them (for a subset of
    a batch's contacts, without serialising them again)."""
    return _OPEN + _BETWEEN.join(cores) + _CLOSE if cores else b""


def item_sizes(cores: Sequence[bytes]) -> list[int]:
    """Bytes of each whole item, from the cores :func:`serialise` gives."""
    return list(map(add, map(len, cores), repeat(len(_OPEN) + len(_CLOSE))))


@dataclass
class Chunk:
    """One import request body, and which input rows it carries (to map Constant Contact's errors back)."""

    index: int
    body: bytes
    count: int
    emails: list[str] = field(default_factory=list)  # in body order
    rows: list[int] = field(default_factory=list)  # row number of each contact in its source
    sources: list[tuple[str, int]] = field(default_factory=list)  # (source, how many contacts), in order

    def origins(self) -> Iterator[tuple[str, str, int]]:
        """(email, source, row) for each contact, in body order."""
        sources = (source for source, count in self.sources for _ in range(count))
        return zip(self.emails, sources, self.rows, strict=True)

    def row_map(self) -> bytes:
        """The chunk's row sidecar: one orjson call, a twentieth of the cost of a line per contact."""
        return orjson.dumps({"emails": self.emails, "rows": self.rows, "sources": self.sources})


def read_row_map(data: bytes) -> Iterator[tuple[str, str, int]]:
    """(email, source, row) from a sidecar :meth:`Chunk.row_map` wrote, or from the tab-separated lines
    that earlier versions wrote (a run prepared by one may be finished by the next)."""
    if not data.startswith(b'{"emails":'):  # no address starts with a quote: a TSV line never does
        for line in data.decode("utf-8").splitlines():
            email, source, row = line.split("\t")
            yield email, source, int(row)
        return
    saved = orjson.loads(data)
    yield from Chunk(
        0, b"", 0, saved["emails"], saved["rows"], [tuple(s) for s in saved["sources"]]
    ).origins()


class Chunker:
    """Feed serialised contacts with ``add_batch`` (or ``add``); completed chunks come out of them and
    of ``finish``."""

    def __init__(self, list_ids: Sequence[str], limits: ChunkLimits) -> None:
        if not 1 <= len(list_ids) <= 50:
            raise ConfigError("an import targets 1 to 50 lists")
        self._head = b'{"import_data":['
        self._tail = b'],"list_ids":' + orjson.dumps(list(list_ids)) + b"}"
        self._limits = limits
        self._room = limits.max_bytes - len(self._tail)  # what the head and the items may use
        self._body = bytearray(self._head)
        self._count = 0
        self._emails: list[str] = []
        self._rows: list[int] = []
        self._sources: list[tuple[str, int]] = []
        self._index = 0

    def add(self, item: bytes, email: str, source: str, row: int) -> Chunk | None:
        """Add one serialised contact; returns the previous chunk when this one did not fit in it."""
        done = self.add_batch(item, [len(item)], [email], source, [row])
        return done[0] if done else None

    def add_batch(
        self, joined: bytes, sizes: Sequence[int], emails: Sequence[str], source: str, rows: Sequence[int]
    ) -> list[Chunk]:
        """Add serialised contacts, ``joined`` with commas (``sizes``: each item's bytes); returns the
        chunks this completed. Cut points come from prefix sums, not from a test per contact."""
        done: list[Chunk] = []
        if not sizes:
            return done
        biggest = max(sizes)
        if len(self._head) + biggest > self._room:
            raise ValueError(f"one contact serialises to {biggest} bytes, more than a whole request allows")
        # ends[i]: where item i ends in ``joined`` (ends[0] = -1, the comma before the first item).
        # Items i..j-1 are joined[ends[i] + 1 : ends[j]], ends[j] - ends[i] - 1 bytes with their commas.
        ends = list(accumulate(map(add, sizes, repeat(1)), initial=-1))
        start, total = 0, len(sizes)
        while start < total:
            if self._count >= self._limits.max_contacts:
                done.append(self._flush())
            comma = 1 if self._count else 0
            free = self._room - len(self._body) - comma  # bytes the next items may take
            last = min(total, start + self._limits.max_contacts - self._count)
            stop = bisect_right(ends, ends[start] + 1 + free, start + 1, last + 1) - 1
            if stop == start:  # not even one more fits: this chunk is full
                done.append(self._flush())
                continue
            if comma:
                self._body += b","
            self._body += joined[ends[start] + 1 : ends[stop]]
            self._count += stop - start
            self._emails += emails[start:stop]
            self._rows += rows[start:stop]
            if self._sources and self._sources[-1][0] == source:
                self._sources[-1] = (source, self._sources[-1][1] + stop - start)
            else:
                self._sources.append((source, stop - start))
            start = stop
        return done

    def finish(self) -> Chunk | None:
        return self._flush() if self._count else None

    def _flush(self) -> Chunk:
        self._index += 1
        self._body += self._tail
        chunk = Chunk(self._index, bytes(self._body), self._count, self._emails, self._rows, self._sources)
        self._body, self._count = bytearray(self._head), 0
        self._emails, self._rows, self._sources = [], [], []
        return chunk


def chunk_contacts(
    contacts: Sequence[dict[str, object]], list_ids: Sequence[str], limits: ChunkLimits
) -> Iterator[Chunk]:
    """Convenience for small inputs and tests: all chunks for a list of contacts."""
    chunker = Chunker(list_ids, limits)
    joined, cores = serialise(contacts)
    emails = [str(contact["email"]) for contact in contacts]
    yield from chunker.add_batch(joined, item_sizes(cores), emails, "", range(1, len(contacts) + 1))
    last = chunker.finish()
    if last:
        yield last
