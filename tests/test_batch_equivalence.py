"""The export's hot loop now works a batch of rows at a time; these tests prove it gives exactly what the
row-at-a-time code gave.

Each new piece is compared with its reference on generated input: ``check_batch`` with ``check_row``,
the possessive ``EMAIL_RE`` with the backtracking pattern it replaced, ``serialise`` with one
``orjson.dumps`` per contact, ``Chunker.add_batch`` with the per-item chunker, the new row sidecar
reader with both sidecar formats, and ``Table.batches`` with the row-by-row CSV reader. Where a
reference no longer exists in the package (the per-item chunker, the row reader), it is rebuilt here
from the previous version of the code.
"""

from __future__ import annotations

import copy
import csv
import io
import re
import string
from collections.abc import Callable, Sequence
from datetime import date
from itertools import chain, groupby, pairwise
from pathlib import Path
from random import Random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.chunking import Chunk, Chunker, item_sizes, join_cores, read_row_map, serialise
from exporter.config import ChunkLimits, ValidationRules
from exporter.errors import SegmentError
from exporter.files import LocalFiles
from exporter.mapping import ColumnPlan, DataMapping, resolve
from exporter.readers import BATCH_ROWS, Table, open_segment
from exporter.validation import _FORBIDDEN, _SPACE, EMAIL_RE, check_batch, check_email, check_row

# ------------------------------------------------------------------------------------- shared inputs

WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2003\u2028\u2029\u202f\u205f\u3000"
whitespace = st.text(alphabet=WHITESPACE, min_size=1, max_size=3)

# Printable and not whitespace: what a value the text rules leave alone is made of, apart from spaces.
word = st.text(alphabet=st.characters(exclude_categories=("Z", "C")), min_size=1, max_size=10)
clean_text = st.lists(word, min_size=1, max_size=6).map(" ".join)  # up to 65 characters: some too long


def _insert(text: str, at: int, piece: str) -> str:
    at = min(at, len(text))
    return text[:at] + piece + text[at:]


# ------------------------------------------------------------------------ 1. check_batch == check_row

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
valid_emails = st.from_regex(
    r"[a-z0-9]{1,10}(\.[a-z0-9+_-]{1,8})?@([a-z0-9]{1,10}\.){1,2}(com|io|fr)", fullmatch=True
)
rough_emails = st.builds(
    "{}@{}.{}".format,
    st.text(alphabet=ATEXT + ".", min_size=1, max_size=20),
    st.lists(
        st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    ).map(".".join),
    st.sampled_from(["com", "io", "x", "xn--p1ai", "c0m", "museum"]),
)
ODD_EMAILS = [
    "",
    " ",
    "\t\n",
    "a@b.c",
    "a@b.co",
    "\u212aelvin@x.io",  # KELVIN SIGN: lower() makes it ASCII "k"
    "\u0130@x.io",  # I WITH DOT ABOVE: lower() makes two characters
    "jos\u00e9@x.fr",
    "a@caf\u00e9.fr",
    "a@B\u00dcCHER.de",
    "a@\u4f8b\u3048.jp",
    "a@stra\u00dfe.de",
    "a@-caf\u00e9.fr",
    "a@caf\u00e9",
    "a@\ufb00.com",
    "a@xn--.com",
    "a@" + "\u00e9" * 70 + ".fr",
    ".a@x.io",
    "a.@x.io",
    "a..b@x.io",
    "a@x..io",
    "@x.io",
    "a@",
    "a,b@x.io",
    'a"b@x.io',
    "a b@x.io",
    "{a}@x.io",
    "a" * 64 + "@b.co",
    "a" * 65 + "@b.co",
]
emails = st.one_of(
    valid_emails,
    rough_emails,
    st.emails(),
    st.builds(lambda a, e, b: a + e + b, whitespace, valid_emails, whitespace),
    st.builds(_insert, valid_emails, st.integers(0, 30), whitespace),
    valid_emails.map(str.upper),
    valid_emails.map(str.swapcase),
    st.builds(
        "{}@{}".format,
        st.text(alphabet=ATEXT, min_size=1, max_size=12),
        st.sampled_from(
            ["caf\u00e9.fr", "b\u00fccher.de", "M\u00dcNCHEN.de", "\u4f8b\u3048.jp", "xn--bcher-kva.de"]
        ),
    ),
    valid_emails.map(lambda e: e.replace("@", "")),
    valid_emails.map(lambda e: e.replace("@", "@@")),
    st.builds("{}@{}".format, valid_emails, valid_emails),
    # 60-90 characters: around the 64-character local part and the 30 and 80 character limits
    st.builds(
        lambda n, m, tld: "a" * n + "@" + "b" * m + tld,
        st.sampled_from([25, 59, 60, 63, 64, 65, 66]) | st.integers(1, 75),
        st.sampled_from([1, 2]) | st.integers(1, 40),
        st.sampled_from([".co", ".com"]),
    ),
    st.sampled_from(ODD_EMAILS),
    st.text(max_size=30),
)
texts = st.one_of(
    st.just(""),
    clean_text,
    st.text(),
    whitespace,
    st.builds(_insert, clean_text, st.integers(0, 20), whitespace),
    st.builds(lambda a, t, b: a + t + b, whitespace, clean_text, whitespace),
    clean_text.map(lambda t: t.replace(" ", "  ")),
    st.text(min_size=40, max_size=300),
    # around the cuts at 50 and 255: a space just inside the cut is trimmed away after it
    st.builds(
        lambda n, w, t: "x" * n + w + t,
        st.integers(45, 56) | st.integers(250, 260),
        whitespace,
        clean_text,
    ),
    st.text(alphabet='"\\\x00\x01\x7f\u200b\ufeff,;ab ', max_size=20),
)
clean_dates = st.one_of(
    st.just(""),
    st.dates().map(lambda d: f"{d.month}/{d.day}/{d.year:04d}"),
    st.dates().map(date.isoformat),
    st.dates().map(lambda d: f"{d.day:02d}.{d.month:02d}.{d.year:04d}"),
)
dates = st.one_of(
    clean_dates,
    st.sampled_from(
        [
            "6/14/2004",
            "2004-06-14",
            "2004-06-14T10:00:00Z",
            "2004-06-14 10:00:00+02:00",
            "2/30/2001",
            "2/29/1900",
            "02-29-2000",
            "13/1/2000",
            "1/13/2000",
            "31.12.1980",
            "12.31.1980",
            "0/0/0000",
            " 6/14/2004 ",
            "\u0666/\u0661\u0664/\u0662\u0660\u0660\u0664",  # Arabic-Indic digits: \d matches them
            "garbage",
            "   ",
            "",
        ]
    ),
    st.text(max_size=20),
)

COLUMNS = ("Email", "First", "Last", "City", "Birth", "Anniv", "Tier", "Extra")
KINDS = {"Email": "email", "Birth": "date", "Anniv": "date", "Extra": "extra"}  # the others: text
CLEAN = {
    "email": valid_emails,
    "text": st.just("") | clean_text,
    "date": clean_dates,
    "extra": st.text(max_size=5),
}
MIXED = {"email": emails, "text": texts, "date": dates, "extra": st.text(max_size=5)}
# One thing wrong with a clean value: each of the quick tests of a column has to catch it alone.
DEFECTS: dict[str, list[Callable[[str], str]]] = {
    "email": [
        str.upper,
        lambda e: f" {e}",
        lambda e: f"{e}\xa0",
        lambda e: "a" * 59 + "@b.co",  # 64 characters
        lambda e: "a" * 60 + "@b.co",  # 65
        lambda e: "a" * 65 + "@b.co",  # a local part of 65
        lambda e: "a@caf\u00e9.fr",
        lambda e: "",
    ],
    "text": [
        lambda v: f" {v}",
        lambda v: f"{v} ",
        lambda v: f"{v}  x",
        lambda v: f"{v}\t",
        lambda v: f"\xa0{v}",
        lambda v: f"{v}\u3000x",
        lambda v: f"{v}\u200b",
        lambda v: "x" * 51,
        lambda v: "x" * 256,
        lambda v: "x" * 49 + " y",
        lambda v: "",
    ],
    "date": [lambda d: "garbage", lambda d: "2/30/2001", lambda d: f" {d} ", lambda d: ""],
    "extra": [lambda v: " "],
}
MAPPING = DataMapping(
    email="Email",
    first_name="First",
    last_name="Last",
    fields=(("city", "City"), ("birthday", "Birth"), ("anniversary", "Anniv"), ("cf:tier", "Tier")),
)


@st.composite
def row_batches(draw: st.DrawFn) -> tuple[ColumnPlan, list[list[str]]]:
    """A header in any column order and a batch of rows for it. Each column keeps one kind of value for
    the whole batch (clean or mixed) so that tidy columns, which take the fast path, come up often, and
    "nearly clean" batches have one or two defects that only one quick test catches. Some rows are
    short, a few long."""
    columns = draw(st.permutations(COLUMNS))
    profile = draw(st.sampled_from(["clean", "nearly clean", "mixed", "per column"]))
    cells: list[st.SearchStrategy[str]] = []
    for name in columns:
        kind = KINDS.get(name, "text")
        clean = profile in ("clean", "nearly clean") or (profile == "per column" and draw(st.booleans()))
        cells.append(CLEAN[kind] if clean else MIXED[kind])
    rows: list[list[str]] = []
    for _ in range(draw(st.integers(0, 20))):
        row = [draw(cell) for cell in cells]
        shape = draw(st.integers(0, 9))
        if shape == 0:
            row = row[: draw(st.integers(0, len(row) - 1))]
        elif shape == 1:
            row.append("surplus")
        rows.append(row)
    if profile == "nearly clean" and rows:  # one or two values spoil an otherwise tidy batch
        for _ in range(draw(st.integers(1, 2))):
            row = rows[draw(st.integers(0, len(rows) - 1))]
            at = draw(st.integers(0, len(columns) - 1))
            if at < len(row):
                row[at] = draw(st.sampled_from(DEFECTS[KINDS.get(columns[at], "text")]))(row[at])
    return resolve(MAPPING, columns, source="t.csv"), rows


RULES = [
    ValidationRules(),
    ValidationRules(too_long="reject", email_max_length=30),
    ValidationRules(day_first=True),
]
RULE_IDS = ["truncate", "reject-30", "day-first"]


def _assert_batch_matches_rows(plan: ColumnPlan, rows: list[list[str]], rules: ValidationRules) -> None:
    before = copy.deepcopy(rows)
    expected = [check_row(row, plan, rules) for row in rows]
    batch = check_batch(rows, plan, rules)

    kept = [i for i, checked in enumerate(expected) if checked.contact is not None]
    contacts = [expected[i].contact for i in kept]
    assert list(batch.kept) == kept
    assert batch.contacts == contacts
    assert [list(contact) for contact in batch.contacts] == [list(c or {}) for c in contacts]  # key order
    assert batch.emails == [expected[i].key for i in kept]
    assert batch.issues == [(i, checked.issues) for i, checked in enumerate(expected) if checked.issues]
    assert [orjson.dumps(c) for c in batch.contacts] == [orjson.dumps(c) for c in contacts]
    assert rows == before  # the caller's rows are left as they were


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=row_batches())
def test_check_batch_equals_check_row(
    rules: ValidationRules, case: tuple[ColumnPlan, list[list[str]]]
) -> None:
    _assert_batch_matches_rows(*case, rules)


def _pinned_batches() -> list[list[list[str]]]:
    """Every odd address in one batch; then each defect alone in a batch that is tidy without it."""
    tidy = [["ann@x.io", "Ann", "Lee", "Paris", "6/14/2004", "2004-06-14", "gold", ""] for _ in range(3)]
    batches = [[[email, *tidy[0][1:]] for email in ODD_EMAILS]]
    for at, kind in enumerate(KINDS.get(name, "text") for name in COLUMNS):
        for defect in DEFECTS[kind]:
            spoilt = copy.deepcopy(tidy)
            spoilt[1][at] = defect(spoilt[1][at])
            batches.append(spoilt)
    return batches


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_check_batch_equals_check_row_on_pinned_batches(rules: ValidationRules) -> None:
    plan = resolve(MAPPING, COLUMNS, source="t.csv")
    for rows in _pinned_batches():
        _assert_batch_matches_rows(plan, rows, rules)


def test_dates_past_the_cache_bound_are_still_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The date cache stops growing at its bound; texts it no longer keeps are parsed each time."""
    from exporter import validation

    for cache in validation._DATE_VALUES.values():
        monkeypatch.setattr(cache, "MAX_ENTRIES", len(cache) + 3)
    plan = resolve(MAPPING, COLUMNS, source="t.csv")
    days = [date(1990, 1, 1).toordinal() + n for n in range(40)]
    rows = [
        ["ann@x.io", "Ann", "Lee", "Paris", f"{d.month}/{d.day}/{d.year}", d.isoformat(), "gold", ""]
        for d in map(date.fromordinal, days)
    ] + [["bo@x.io", "Bo", "Li", "Rome", "2/30/2001", "not a date", "", ""]]
    for rules in RULES:
        _assert_batch_matches_rows(plan, rows, rules)
    assert all(len(cache) <= cache.MAX_ENTRIES for cache in validation._DATE_VALUES.values())


# --------------------------------------------------------------- 2. EMAIL_RE == the backtracking pattern

_OLD_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_OLD_LOCAL = rf"{_OLD_ATEXT}+(?:\.{_OLD_ATEXT}+)*"
_OLD_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OLD_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
OLD_EMAIL_RE = re.compile(rf"({_OLD_LOCAL})@((?:{_OLD_LABEL}\.)+{_OLD_TLD})")

TOKENS = [*"aZ09.-@_+!{~ \u00e9", "xn--", "..", "a" * 62, "b" * 63, "c" * 64]
# Lengths around the limits of a label (63) and of a top-level domain (63, or "xn--" and 59).
edge_lengths = st.sampled_from([0, 1, 2, 58, 59, 60, 61, 62, 63, 64, 65]) | st.integers(0, 70)
labels = st.one_of(
    st.builds(
        lambda head, n, tail: head + "a" * n + tail,
        st.sampled_from(["", "", "-", "a-", "0"]),
        edge_lengths,
        st.sampled_from(["", "", "-", "-a", "9"]),
    ),
    st.text(alphabet="ab0-", max_size=70),
)
tlds = st.one_of(
    st.sampled_from(["com", "c", "co-m", "c0m", "xn--", "xn---", "xn--p1ai", "XN--ABC", "xn--a-"]),
    edge_lengths.map(lambda n: "x" * n),
    edge_lengths.map(lambda n: "xn--" + "a" * n),
    st.text(alphabet="axn-0", max_size=12),
)
local_parts = st.one_of(
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8})?", fullmatch=True),
    st.text(alphabet=ATEXT + ".", max_size=20),
)
email_like = st.one_of(
    st.text(alphabet="aAzZ09.-@_+!#~'`{}xn\u00e9 ", max_size=40),
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    st.builds(
        lambda local, parts, tld: f"{local}@{''.join(part + '.' for part in parts)}{tld}",
        local_parts,
        st.lists(labels, max_size=4),
        tlds,
    ),
)


@settings(max_examples=3000, deadline=None)
@given(text=email_like)
def test_email_pattern_matches_what_the_backtracking_pattern_matched(text: str) -> None:
    old, new = OLD_EMAIL_RE.fullmatch(text), EMAIL_RE.fullmatch(text)
    assert (old is None) == (new is None)
    if old is not None and new is not None:
        assert [old.span(1), old.span(2)] == [new.span(1), new.span(2)]


# -------------------------------------------------------------------- 3. the claim behind _all_tidy


def _code_points() -> Sequence[int]:
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def test_whitespace_other_than_space_is_never_printable() -> None:
    whitespace_chars = [c for c in _code_points() if chr(c).isspace()]
    assert len(whitespace_chars) > 20  # \t ... \x1f, \x85, \xa0, \u2000-\u200a, \u3000...
    assert [hex(c) for c in whitespace_chars if c != 0x20 and chr(c).isprintable()] == []


def test_why_invalid_patterns_match_the_character_tests_they_replaced() -> None:
    """``_why_invalid`` now uses two patterns for ``any(c.isspace() ...)`` and ``any(c in ',;<>...')``."""
    chars = [chr(c) for c in _code_points()]
    assert [c for c in chars if bool(_SPACE.search(c)) != c.isspace()] == []
    assert [c for c in chars if bool(_FORBIDDEN.search(c)) != (c in ',;<>()[]\\":')] == []


# ------------------------------------------------------------------------------------ 4. serialise

TRICKY = ['"', "\\", '},{"email":"', "\n", '"}', '{"email":"x"}', "\u2028", "\x00", "\u00e9", "\U0001f600"]
values_text = st.one_of(
    st.text(), st.sampled_from(TRICKY), st.lists(st.sampled_from(TRICKY) | st.text(max_size=3)).map("".join)
)
field_values = st.one_of(values_text, st.integers(-(2**63), 2**63 - 1))
other_keys = values_text.filter(lambda key: key != "email")
contact_dicts = st.builds(
    lambda email, rest: {"email": email, **rest},
    values_text,
    st.dictionaries(other_keys, field_values, max_size=5),
)
OPEN = b'{"email":"'


@settings(max_examples=300, deadline=None)
@given(contacts=st.lists(contact_dicts, max_size=12))
def test_serialise_equals_one_dumps_per_contact(contacts: list[dict[str, object]]) -> None:
    dumped = [orjson.dumps(contact) for contact in contacts]
    joined, cores = serialise(contacts)
    assert joined == b",".join(dumped)
    assert item_sizes(cores) == [len(item) for item in dumped]
    assert cores == [item[len(OPEN) : -1] for item in dumped]
    assert join_cores(cores) == joined
    every_other = cores[::2]  # what an incremental run sends: a subset, not serialised again
    assert join_cores(every_other) == b",".join(dumped[::2])


@settings(max_examples=200, deadline=None)
@given(
    contacts=st.lists(contact_dicts, max_size=6),
    where=st.integers(0, 6),
    bad=st.one_of(
        st.just({}),
        st.builds(
            lambda key, value, email: {key: value, "email": email}, other_keys, field_values, values_text
        ),
    ),
)
def test_serialise_refuses_a_contact_not_starting_with_its_email(
    contacts: list[dict[str, object]], where: int, bad: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="start with its email"):
        serialise([*contacts[:where], bad, *contacts[where:]])


def test_serialise_nothing() -> None:
    assert serialise([]) == (b"", [])


# ---------------------------------------------------------------------- 5. Chunker.add_batch == add

HEAD = b'{"import_data":['
Origin = tuple[str, str, int]


def _tail(list_ids: Sequence[str]) -> bytes:
    return b'],"list_ids":' + orjson.dumps(list(list_ids)) + b"}"


def _reference_chunks(
    items: Sequence[bytes], origins: Sequence[Origin], list_ids: Sequence[str], limits: ChunkLimits
) -> list[tuple[bytes, int, list[Origin]]]:
    """The per-item chunker before batches (``Chunker.add`` of the previous version): (body, count,
    origins) of each chunk."""
    tail = _tail(list_ids)
    room = limits.max_bytes - len(tail)
    chunks: list[tuple[bytes, int, list[Origin]]] = []
    body, held = bytearray(HEAD), list[Origin]()
    for item, origin in zip(items, origins, strict=True):
        assert len(HEAD) + len(item) <= room
        if held and (len(held) >= limits.max_contacts or len(body) + 1 + len(item) > room):
            chunks.append((bytes(body + tail), len(held), held))
            body, held = bytearray(HEAD), []
        if held:
            body += b","
        body += item
        held.append(origin)
    if held:
        chunks.append((bytes(body + tail), len(held), held))
    return chunks


def _item(i: int, pad: int | None) -> bytes:
    return orjson.dumps(
        {"email": f"u{i}@x.io"} if pad is None else {"email": f"u{i}@x.io", "first_name": "x" * pad}
    )


@st.composite
def chunker_feeds(draw: st.DrawFn) -> tuple[list[str], ChunkLimits, list[list[tuple[bytes, Origin]]]]:
    """List ids, limits, and items (11 to 3000 bytes, each fitting a request) cut into batches, each
    batch from one source."""
    list_ids = draw(
        st.lists(st.sampled_from(["l1", "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a", "x"]), min_size=1, max_size=3)
    )
    limits = ChunkLimits(max_contacts=draw(st.integers(1, 50)), max_bytes=draw(st.integers(1024, 20_000)))
    largest = min(3000, limits.max_bytes - len(_tail(list_ids)) - len(HEAD))
    items: list[bytes] = []
    for i in range(draw(st.integers(0, 120))):
        base = len(_item(i, 0))
        pad = draw(
            st.none()
            | st.integers(0, largest - base)
            | st.integers(max(0, largest - base - 40), largest - base)
        )
        items.append(_item(i, pad))
    cuts = (
        sorted(draw(st.sets(st.integers(1, max(1, len(items) - 1)), max_size=12))) if len(items) > 1 else []
    )
    batches: list[list[tuple[bytes, Origin]]] = []
    for start, stop in zip([0, *cuts], [*cuts, len(items)], strict=True):
        source = draw(st.sampled_from(["a.csv", "b.csv", "Contact/2026/01/02/0930/Contact_1.csv"]))
        batches.append([(items[i], (f"u{i}@x.io", source, i + 2)) for i in range(start, stop)])
    return list_ids, limits, batches


def _chunk_fields(chunk: Chunk) -> tuple[int, bytes, int, list[Origin], list[tuple[str, int]]]:
    return chunk.index, chunk.body, chunk.count, list(chunk.origins()), chunk.sources


@settings(max_examples=300, deadline=None)
@given(feed=chunker_feeds())
def test_add_batch_cuts_the_chunks_add_cuts(
    feed: tuple[list[str], ChunkLimits, list[list[tuple[bytes, Origin]]]],
) -> None:
    list_ids, limits, batches = feed
    by_batch, by_item = Chunker(list_ids, limits), Chunker(list_ids, limits)
    batched: list[Chunk] = []
    single: list[Chunk] = []
    for batch in batches:
        items = [item for item, _ in batch]
        source = batch[0][1][1] if batch else "a.csv"
        batched += by_batch.add_batch(
            b",".join(items),
            [len(item) for item in items],
            [o[0] for _, o in batch],
            source,
            [o[2] for _, o in batch],
        )
        for item, (email, source, row) in batch:
            done = by_item.add(item, email, source, row)
            if done is not None:
                single.append(done)
    for chunker, found in ((by_batch, batched), (by_item, single)):
        last = chunker.finish()
        if last is not None:
            found.append(last)

    assert [_chunk_fields(c) for c in batched] == [_chunk_fields(c) for c in single]
    all_items = [item for batch in batches for item in batch]
    reference = _reference_chunks([i for i, _ in all_items], [o for _, o in all_items], list_ids, limits)
    assert [(c.body, c.count, list(c.origins())) for c in batched] == reference
    assert [c.index for c in batched] == list(range(1, len(batched) + 1))

    sent: list[str] = []
    for chunk in batched:
        body = orjson.loads(chunk.body)
        assert body["list_ids"] == list_ids
        assert len(body["import_data"]) == chunk.count <= limits.max_contacts
        assert len(chunk.body) <= limits.max_bytes
        assert [item["email"] for item in body["import_data"]] == chunk.emails
        sent += chunk.emails
    assert sent == [origin[0] for _, origin in all_items]  # every contact once, in order
    # Greedy: a chunk was closed only because the next contact would not fit in it.
    size = {origin[0]: len(item) for item, origin in all_items}
    for chunk, following in pairwise(batched):
        upcoming = size[following.emails[0]]
        assert chunk.count == limits.max_contacts or len(chunk.body) + 1 + upcoming > limits.max_bytes


@pytest.mark.parametrize("max_bytes", [1024, 2000])
def test_a_contact_larger_than_a_request_is_refused_by_add_and_add_batch(max_bytes: int) -> None:
    limits = ChunkLimits(max_contacts=10, max_bytes=max_bytes)
    room = max_bytes - len(_tail(["l1"])) - len(HEAD)
    fits, too_big = _item(0, room - len(_item(0, 0))), _item(1, room - len(_item(1, 0)) + 1)
    assert len(fits) == room and len(too_big) == room + 1
    assert Chunker(["l1"], limits).add(fits, "u0@x.io", "a.csv", 2) is None
    with pytest.raises(ValueError, match="more than a whole request"):
        Chunker(["l1"], limits).add(too_big, "u1@x.io", "a.csv", 3)
    with pytest.raises(ValueError, match="more than a whole request"):
        Chunker(["l1"], limits).add_batch(
            fits + b"," + too_big, [len(fits), len(too_big)], ["u0@x.io", "u1@x.io"], "a.csv", [2, 3]
        )


# ------------------------------------------------------------------------------ 6. read_row_map


@settings(max_examples=200, deadline=None)
@given(
    origins=st.lists(
        st.tuples(
            st.text(), st.sampled_from(["a.csv", "b\tc.csv", "\u00e9.csv", ""]), st.integers(0, 2**63 - 1)
        )
    )
)
def test_read_row_map_reads_the_sidecar_row_map_writes(origins: list[Origin]) -> None:
    sources = [(source, len(list(group))) for source, group in groupby(source for _, source, _ in origins)]
    chunk = Chunk(1, b"", len(origins), [o[0] for o in origins], [o[2] for o in origins], sources)
    assert list(read_row_map(chunk.row_map())) == list(chunk.origins()) == origins


@settings(max_examples=200, deadline=None)
@given(
    origins=st.lists(
        st.tuples(
            # not starting with "{": see the test after the next one
            st.from_regex(r"[a-z0-9][a-z0-9.+_{}-]{0,15}@[a-z0-9]{1,8}\.io", fullmatch=True),
            st.sampled_from(["f.csv", "Contact/2026/01/02/0930/Contact_1.csv", "\u00e9 t.csv"]),
            st.integers(1, 10**7),
        )
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_read_row_map_reads_the_tab_separated_sidecar_of_earlier_versions(
    origins: list[Origin], newline: str
) -> None:
    data = "".join(f"{email}\t{source}\t{row}{newline}" for email, source, row in origins).encode()
    assert list(read_row_map(data)) == origins


def test_read_row_map_example_of_both_formats() -> None:
    old = b"a@x.io\tf.csv\t2\nb@x.io\tf.csv\t3\n"
    assert list(read_row_map(old)) == [("a@x.io", "f.csv", 2), ("b@x.io", "f.csv", 3)]
    chunk = Chunk(1, b"", 2, ["a@x.io", "b@x.io"], [2, 3], [("f.csv", 2)])
    assert list(read_row_map(chunk.row_map())) == [("a@x.io", "f.csv", 2), ("b@x.io", "f.csv", 3)]


def test_read_row_map_old_sidecar_whose_first_email_starts_with_a_brace() -> None:
    """'{' is an allowed character of an address, so an old sidecar may start with one."""
    assert check_email("{a}@x.io", max_length=80) == ("{a}@x.io", None)
    assert list(read_row_map(b"{a}@x.io\tf.csv\t2\n")) == [("{a}@x.io", "f.csv", 2)]


# ------------------------------------------------------------------------ 7. Table.batches == rows


def _reference_rows(text: str) -> list[tuple[int, list[str]]]:
    """The row-at-a-time CSV reader the batches replaced (``_CsvFile.rows`` of the previous version),
    with today's rule that a row of spaces only is blank."""
    found: list[tuple[int, list[str]]] = []
    width: int | None = None
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if width is None:  # the first non-blank record is the header
            if "".join(row).strip():
                width = len(row)
            continue
        if len(row) != width or not row[0].strip():
            if not "".join(row).strip():
                continue
            if len(row) < width:
                row += [""] * (width - len(row))
        found.append((number, row))
    return found


LINES: list[Callable[[int], str]] = [
    lambda i: "",
    lambda i: ",,",
    lambda i: "  \t ",
    lambda i: f"s{i}@x.io",
    lambda i: f"s{i}@x.io,Ann",
    lambda i: f",Ann{i},Lee",
    lambda i: f"l{i}@x.io,Ann,Lee,extra",
    lambda i: f'"m{i}@x.io","two\nlines",Lee',
    lambda i: " , , ",  # full width, only spaces: a blank row, both readers skip it
    # not " , , , ": longer than the header and only spaces, see the test after the next one
]


def _segment_text(rng: Random) -> str:
    """A header and 4,097 to 9,000 records; each stretch of about a batch is either all plain rows (the
    batch fast path) or has blank lines, short rows and the like sprinkled in."""
    count = rng.randint(BATCH_ROWS + 1, 9000)
    messy = [rng.random() < 0.6 for _ in range(count // 1000 + 1)]
    lines = ["Email,First,Last"]
    for i in range(count):
        if messy[i // 1000] and rng.random() < 0.15:
            lines.append(rng.choice(LINES)(i))
        else:
            lines.append(f"u{i}@x.io,Ann{i},Lee")
    if rng.random() < 0.5:  # blank lines around the end of the first batch
        at = rng.randint(BATCH_ROWS - 3, BATCH_ROWS + 3)
        lines[at : at + 3] = ["", "", ""]
    newline = rng.choice(["\n", "\r\n"])
    return newline.join(lines) + rng.choice([newline, ""])


def _table(path: Path, text: str) -> Table:
    path.write_bytes(text.encode("utf-8"))
    return open_segment(LocalFiles(), str(path)).tables[0]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_batches_hold_the_rows_the_row_reader_gave(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    text = _segment_text(Random(seed))
    table = _table(tmp_path_factory.mktemp("seg") / "s.csv", text)
    expected = _reference_rows(text)
    batches = list(table.batches())
    assert len(batches) >= 2
    assert all(len(numbers) == len(rows) <= BATCH_ROWS for numbers, rows in batches)
    assert list(chain.from_iterable(zip(numbers, rows, strict=True) for numbers, rows in batches)) == expected
    assert list(table.rows()) == expected


def test_blank_row_with_extra_cells_is_skipped_as_the_row_reader_did(tmp_path: Path) -> None:
    """The row reader tested ``len(row) != width``, the batch reader tests ``len(row) < width``."""
    text = "Email,First\n , , \na@x.io,Ann\n"
    assert _reference_rows(text) == [(3, ["a@x.io", "Ann"])]
    assert list(_table(tmp_path / "s.csv", text).rows()) == [(3, ["a@x.io", "Ann"])]


def _rows_until_error(table: Table) -> tuple[list[tuple[int, list[str]]], str]:
    got: list[tuple[int, list[str]]] = []
    with pytest.raises(SegmentError) as error:
        for number_and_row in table.rows():
            got.append(number_and_row)
    return got, str(error.value)


def test_an_unclosed_quote_at_row_5000_fails_after_the_rows_before_it(tmp_path: Path) -> None:
    good = [f"u{i}@x.io,Ann,Lee" for i in range(4998)]  # rows 2 to 4999
    limit = csv.field_size_limit()
    assert limit == 128 * 1024  # the default, the limit the reader's hint is about
    runaway = ["x" * 99 for _ in range(limit // 100 + 10)]  # a field of all of them passes the limit
    text = "\n".join(["Email,First,Last", *good, 'bad@x.io,"never closed,Lee', *runaway]) + "\n"
    got, message = _rows_until_error(_table(tmp_path / "s.csv", text))
    assert got == [(i + 2, [f"u{i}@x.io", "Ann", "Lee"]) for i in range(4998)]
    assert "s.csv: cannot parse row 5000:" in message
    assert "field larger than field limit" in message and "quote" in message


def test_a_nul_at_row_5000_fails_naming_that_row(tmp_path: Path) -> None:
    rows = [f"u{i}@x.io,Ann,Lee" for i in range(6000)]
    rows[4998] = "bad@x.io,A\0nn,Lee"  # row 5000
    text = "\n".join(["Email,First,Last", *rows]) + "\n"
    got, message = _rows_until_error(_table(tmp_path / "s.csv", text))
    expected = _reference_rows(text.replace("\0", ""))
    assert 0 < len(got) < 4998
    assert got == expected[: len(got)]  # NULs are found a 64 KiB block at a time: rows stop before it
    assert "s.csv: row 5000 (line 5000," in message and "NUL character" in message
