"""What an export last delivered, kept small: for every contact, a 64-bit hash of its normalised email
and a 64-bit hash of the fields sent. Lets a run send only new and changed contacts (incremental sync)
and find the people who left the segment (mirror mode) without storing any email address.

Stored as one binary blob: a header, then the sorted keys, then the values (16 bytes a contact, 16 MB for
a million). Lookups are a binary search on the sorted key array.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from xxhash import xxh3_64_intdigest

# 02: XXH3 hashes (01 held BLAKE2b ones). A snapshot of another version is not read: that run sends
# every contact once and removes nobody, as a first run does.
MAGIC = b"CCSNAP02"
OURS = 1  # bit 0 of a value: this export put the contact on the list (mirror mode may remove it)
NEW = 2  # bit 1: first sent in the run that wrote the snapshot (resolved to OURS or not at the end)
FLAGS = OURS | NEW


# XXH3: a fast, well-distributed 64-bit hash (not a cryptographic one: nothing here is a secret, and
# the keys are compared only with keys this export made). Collision odds for 1M contacts: about 3e-8.
def email_key(email: str) -> int:
    """Key of a normalised email address."""
    return xxh3_64_intdigest(email.encode("utf-8"))


def email_keys(emails: Iterable[str]) -> list[int]:
    """:func:`email_key` of each address, without a Python call each (the export's hot loop)."""
    return list(map(xxh3_64_intdigest, map(str.encode, emails)))


fields_hash = xxh3_64_intdigest  # of a serialised contact (chunking.serialise); compared under CLEAR
CLEAR = ~FLAGS & 0xFFFF_FFFF_FFFF_FFFF  # the bits of a value that hold the fields hash


class Snapshot:
    """An immutable, sorted set of (email key, value) pairs."""

    def __init__(self, keys: array[int] | None = None, values: array[int] | None = None) -> None:
        self.keys: array[int] = keys if keys is not None else array("Q")
        self.values: array[int] = values if values is not None else array("Q")

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: int) -> int | None:
        i = bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            return self.values[i]
        return None

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def items(self) -> Iterator[tuple[int, int]]:
        return zip(self.keys, self.values, strict=True)

    def with_entries(self, extra: Iterable[tuple[int, int]]) -> Snapshot:
        """A new snapshot with these pairs added (keys not already present)."""
        builder = SnapshotBuilder()
        for key, value in self.items():
            builder.add(key, value)
        for key, value in extra:
            if key not in self:
                builder.add(key, value)
        return builder.build()

    def to_bytes(self) -> bytes:
        return MAGIC + struct.pack("<Q", len(self.keys)) + self.keys.tobytes() + self.values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        if data[:8] != MAGIC:
            raise ValueError("not a snapshot file")
        (count,) = struct.unpack_from("<Q", data, 8)
        keys, values = array("Q"), array("Q")
        keys.frombytes(data[16 : 16 + 8 * count])
        values.frombytes(data[16 + 8 * count : 16 + 16 * count])
        if len(keys) != count or len(values) != count:
            raise ValueError("truncated snapshot file")
        return cls(keys, values)


class SnapshotBuilder:
    """Collects pairs in any order; ``build`` sorts them once."""

    def __init__(self) -> None:
        self._keys: array[int] = array("Q")
        self._values: array[int] = array("Q")

    def add(self, key: int, value: int) -> None:
        self._keys.append(key)
        self._values.append(value)

    def extend(self, keys: Iterable[int], values: Iterable[int]) -> None:
        self._keys.extend(keys)
        self._values.extend(values)

    def __len__(self) -> int:
        return len(self._keys)

    def build(self) -> Snapshot:
        keys, values = self._keys, self._values
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return Snapshot(array("Q", map(keys.__getitem__, order)), array("Q", map(values.__getitem__, order)))
