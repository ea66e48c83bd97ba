"""Import requests never exceed 40,000 contacts or the byte limit, and lose or repeat no contact."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from exporter.chunking import Chunker, chunk_contacts
from exporter.config import MAX_IMPORT_BYTES, MAX_IMPORT_CONTACTS, ChunkLimits
from exporter.errors import ConfigError
from exporter.rejects import CsvSpool, safe_cell

LIST = "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"


def contacts(n, pad=0):
    return [{"email": f"user{i}@example.com", "first_name": "F" * pad} for i in range(n)]


def emails_in(chunks):
    return [item["email"] for c in chunks for item in orjson.loads(c.body)["import_data"]]


def test_count_limit_40000():
    chunks = list(chunk_contacts(contacts(80_001), [LIST], ChunkLimits()))
    assert [c.count for c in chunks] == [40_000, 40_000, 1]
    assert all(len(c.body) <= MAX_IMPORT_BYTES for c in chunks)
    assert emails_in(chunks) == [f"user{i}@example.com" for i in range(80_001)]


def test_byte_limit_is_exact_including_the_envelope():
    limits = ChunkLimits(max_bytes=10_000)
    items = contacts(500, pad=40)
    chunks = list(chunk_contacts(items, [LIST], limits))
    assert len(chunks) > 1
    assert all(len(c.body) <= 10_000 for c in chunks)
    # each chunk is full: the next contact would not have fitted
    item_size = len(orjson.dumps(items[0]))
    assert all(len(c.body) + item_size + 1 > 10_000 for c in chunks[:-1])
    body = orjson.loads(chunks[0].body)
    assert body["list_ids"] == [LIST]
    assert emails_in(chunks) == [c["email"] for c in items]


def test_real_limits_with_wide_contacts_cut_by_bytes_first():
    # ~200-byte contacts: 40,000 of them would be 8 MB, so bytes decide.
    items = contacts(45_000, pad=150)
    chunks = list(chunk_contacts(items, [LIST], ChunkLimits()))
    assert all(len(c.body) <= MAX_IMPORT_BYTES and c.count <= MAX_IMPORT_CONTACTS for c in chunks)
    assert sum(c.count for c in chunks) == 45_000
    assert chunks[0].count < 40_000


def test_rows_travel_with_their_chunk():
    chunker = Chunker([LIST], ChunkLimits(max_contacts=2))
    out = [
        chunker.add(b'{"email":"a@x.io"}', "a@x.io", "f.csv", 2),
        chunker.add(b'{"email":"b@x.io"}', "b@x.io", "f.csv", 3),
        chunker.add(b'{"email":"c@x.io"}', "c@x.io", "f.csv", 5),
    ]
    first = out[2]
    assert out[:2] == [None, None] and first is not None
    assert list(first.origins()) == [("a@x.io", "f.csv", 2), ("b@x.io", "f.csv", 3)]
    last = chunker.finish()
    assert last is not None and last.index == 2 and list(last.origins()) == [("c@x.io", "f.csv", 5)]
    assert chunker.finish() is None


def test_limits_cannot_be_raised_past_constant_contact():
    with pytest.raises(ConfigError):
        ChunkLimits(max_contacts=40_001)
    with pytest.raises(ConfigError):
        ChunkLimits(max_bytes=MAX_IMPORT_BYTES + 1)
    with pytest.raises(ConfigError):
        Chunker([], ChunkLimits())


def test_a_contact_bigger_than_a_request_is_an_error_not_a_silent_drop():
    chunker = Chunker([LIST], ChunkLimits(max_bytes=1024))
    with pytest.raises(ValueError, match="more than a whole request"):
        chunker.add(b"x" * 2000, "e", "s", 1)


@pytest.mark.parametrize(
    "cell,expected",
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("plain", "plain"),
        (12, "12"),
        (None, ""),
    ],
)
def test_rejects_cells_cannot_be_formulas(cell, expected):
    assert safe_cell(cell) == expected


def test_spool_writes_csv_and_counts(tmp_path):
    with CsvSpool(("a", "b"), directory=str(tmp_path)) as spool:
        spool.add("=1+1", "x,y")
        spool.close()
        text = Path(spool.path).read_text(encoding="utf-8")
        assert spool.count == 1
    assert text.splitlines() == ["a,b", '\'=1+1,"x,y"']
    assert list(tmp_path.iterdir()) == []  # discarded on exit
