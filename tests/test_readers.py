"""Segment readers: CSV files and Customer Insights (CDM model.json) export folders.

The Contoso sample (Contact.csv, 5,000 contacts) and the CDM sample model.json are read from the shared data
folder beside the repository, never copied in; the CDM export folders are built from them in tmp_path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import BinaryIO

import pytest

from exporter.errors import ConfigError, SegmentError
from exporter.files import LocalFiles, SegmentFiles, join_path
from exporter.readers import Segment, Table, find_column, normalise_header, open_segment

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLES = SHARED / "data" / "customer-insights-samples"
CONTACT_CSV = SAMPLES / "Contact.csv"
CDM_MODEL = SHARED / "data" / "cdm-samples" / "model.json"

needs_contact = pytest.mark.skipif(
    not CONTACT_CSV.is_file(), reason=f"sample data not found: {CONTACT_CSV} (the shared data folder)"
)
needs_cdm_model = pytest.mark.skipif(
    not CDM_MODEL.is_file(), reason=f"sample data not found: {CDM_MODEL} (the shared data folder)"
)

FILES = LocalFiles()


# -------------------------------------------------------------------------------------------- helpers


def write(tmp_path: Path, data: bytes | str, name: str = "segment.csv") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def rows_of(segment: Segment) -> list[tuple[str, int, list[str]]]:
    return [(table.source, number, values) for table in segment.tables for number, values in table.rows()]


def read(tmp_path: Path, data: bytes | str, **options: str) -> tuple[Segment, list[tuple[int, list[str]]]]:
    segment = open_segment(FILES, write(tmp_path, data), **options)
    assert len(segment.tables) == 1
    return segment, list(segment.tables[0].rows())


def export_rows(table: Table) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """The rows as an export reads them (in batches, told which column holds the addresses: Email),
    and the numbers of the rows the reader set aside as holding other rows."""
    email = find_column(table.columns, "Email")
    merged: list[int] = []
    batches = table.batches(email_column=email, merged=merged)
    return [pair for numbers, rows in batches for pair in zip(numbers, rows, strict=True)], merged


def segment_error(tmp_path: Path, data: bytes | str, **options: str) -> str:
    with pytest.raises(SegmentError) as info:
        read(tmp_path, data, **options)
    return str(info.value)


# ------------------------------------------------------------------------------------ real sample data


@needs_contact
def test_contact_sample_streams_all_rows_with_spreadsheet_row_numbers() -> None:
    segment = open_segment(FILES, str(CONTACT_CSV))
    assert segment.name == "Contact"
    assert len(segment.columns) == 19
    assert segment.columns[:7] == (
        "ContactId",
        "FirstName",
        "LastName",
        "FullName",
        "DateOfBirth",
        "Gender",
        "EMail",
    )
    assert [table.source for table in segment.tables] == ["Contact.csv"]
    rows = list(segment.tables[0].rows())
    assert len(rows) == 5000
    number, first = rows[0]
    assert number == 2
    assert first[0] == "CNTID_1000"
    assert first[segment.columns.index("EMail")] == "abbie_moss@collinsreedandhoward.com"
    assert rows[-1][0] == 5001
    assert all(len(values) == 19 for _, values in rows)
    tier = find_column(segment.columns, "loyalty tier")
    subscriber = find_column(segment.columns, " email  SUBSCRIBER ")
    assert tier == 14 and subscriber == 15
    assert (first[tier], first[subscriber]) == ("high", "Yes")


@needs_contact
def test_rows_can_be_read_twice_and_open_lazily(tmp_path: Path) -> None:
    path = write(tmp_path, CONTACT_CSV.read_bytes())
    table = open_segment(FILES, path).tables[0]
    assert sum(1 for _ in table.rows()) == sum(1 for _ in table.rows()) == 5000
    rows = table.rows()  # nothing opened yet: deleting the file now only fails on the first next()
    Path(path).unlink()
    with pytest.raises(SegmentError, match=r"segment\.csv: file not found"):
        next(rows)


# ------------------------------------------------------------------------------------- CSV: encodings


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    segment, rows = read(tmp_path, b"\xef\xbb\xbfEmail,Name\r\na@example.com,Zo\xc3\xab\r\n")
    assert segment.columns == ("Email", "Name")
    assert rows == [(2, ["a@example.com", "Zoë"])]


def test_explicit_utf8_with_bom_still_drops_the_bom(tmp_path: Path) -> None:
    segment, _ = read(tmp_path, b"\xef\xbb\xbfEmail,Name\na@example.com,x\n", encoding="utf-8")
    assert segment.columns == ("Email", "Name")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_detected(tmp_path: Path, codec: str) -> None:
    text = "Email;Name\r\na@example.com;Zoë Ünal\r\nb@example.com;李\r\n"
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
    segment, rows = read(tmp_path, bom + text.encode(codec))
    assert segment.columns == ("Email", "Name")
    assert rows == [(2, ["a@example.com", "Zoë Ünal"]), (3, ["b@example.com", "李"])]


def test_cp1252_needs_the_encoding_override(tmp_path: Path) -> None:
    name = "Zoë Müller \u2013 café"  # the en dash is 0x96 in cp1252, a C1 control in Latin-1
    data = f"Email,Name\na@example.com,{name}\n".encode("cp1252")
    message = segment_error(tmp_path, data)
    assert "segment.csv" in message and "row 2" in message and "UTF-8" in message
    assert "--encoding cp1252" in message and '"encoding": "cp1252"' in message
    _, rows = read(tmp_path, data, encoding="cp1252")
    assert rows == [(2, ["a@example.com", name])]


def test_invalid_utf8_names_the_row_even_far_into_the_file(tmp_path: Path) -> None:
    # 20,000 rows (> several read chunks), one record with a quoted newline before the bad byte, so the
    # record number (what the error must name) differs from the physical line number.
    lines = ["Email,Note\n", 'q@example.com,"two\nlines"\n']
    lines += [f"user{i}@example.com,ok\n" for i in range(20_000)]
    lines[15_000] = "bad@example.com,caf\udce9\n"  # a lone 0xE9 byte, as cp1252 writes "é"
    data = "".join(lines).encode("utf-8", "surrogateescape")
    segment = open_segment(FILES, write(tmp_path, data))  # the head of the file is fine: opening succeeds
    with pytest.raises(SegmentError) as info:
        for _ in segment.tables[0].rows():
            pass
    message = str(info.value)
    assert "segment.csv: row 15001 (line 15002," in message
    assert "E9" in message and "not valid UTF-8" in message


def test_invalid_bytes_in_the_header_fail_on_open(tmp_path: Path) -> None:
    message = segment_error(tmp_path, b"Email,Pr\xe9nom\na@example.com,x\n")
    assert "segment.csv: row 1 (line 1" in message


def test_unknown_encoding_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown encoding"):
        read(tmp_path, "Email\na@example.com\n", encoding="latin-42")


@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "zlib", "idna", "punycode"])
def test_a_codec_that_is_not_a_file_encoding_is_a_usage_error(tmp_path: Path, encoding: str) -> None:
    with pytest.raises(ConfigError, match="is not a text file encoding"):
        read(tmp_path, "Email\na@example.com\n", encoding=encoding)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_without_a_byte_order_mark_asks_for_the_byte_order(tmp_path: Path, encoding: str) -> None:
    message = segment_error(tmp_path, "Email\na@example.com\n".encode(encoding + "-le"), encoding=encoding)
    assert "segment.csv: the file does not start with a byte-order mark" in message
    assert f"--encoding {encoding}-le" in message


def test_utf16_with_a_byte_order_mark_and_the_encoding_given_is_read(tmp_path: Path) -> None:
    _, rows = read(tmp_path, "Email,Name\na@example.com,Zoë\n".encode("utf-16"), encoding="utf-16")
    assert rows == [(2, ["a@example.com", "Zoë"])]


@pytest.mark.parametrize(
    ("data", "given"),
    [
        ("Email,Name\na@example.com,Zoë\n".encode("utf-8-sig"), "cp1252"),  # saved again as 'CSV UTF-8'
        ("Email,Name\na@example.com,Zoë\n".encode("utf-16"), "utf-8"),
        ("Email,Name\na@example.com,Zoë\n".encode("utf-16"), "utf-16-be"),
    ],
    ids=["utf8-bom-over-cp1252", "utf16-bom-over-utf8", "little-endian-bom-over-be"],
)
def test_a_byte_order_mark_wins_over_the_encoding_given(tmp_path: Path, data: bytes, given: str) -> None:
    segment, rows = read(tmp_path, data, encoding=given)
    assert segment.columns == ("Email", "Name") and rows == [(2, ["a@example.com", "Zoë"])]


def test_a_file_whose_byte_order_mark_lies_says_the_mark_won(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + "Email,First\nzoe@x.com,Zoë\n".encode("cp1252")  # a BOM kept by an ANSI save
    message = segment_error(tmp_path, data, encoding="cp1252")
    assert "row 2 (line 2, byte 27) is not valid UTF-8 (bytes EB)" in message
    assert "UTF-8 byte-order mark, which wins over the encoding given (cp1252)" in message


def test_dataverse_annotation_columns_are_names_not_data(tmp_path: Path) -> None:
    segment, rows = read(
        tmp_path, "Email,statecode@OData.Community.Display.V1.FormattedValue\na@x.com,Active\n"
    )
    assert segment.columns[1].startswith("statecode@OData") and rows == [(2, ["a@x.com", "Active"])]


def test_excels_sep_line_is_named_instead_of_taken_for_a_header(tmp_path: Path) -> None:
    message = segment_error(tmp_path, "sep=;\nEmail;Name\na@example.com;Ann\n")
    assert "('sep=') is Excel's delimiter hint, not a header. Remove that line" in message


def test_a_fifo_is_refused_instead_of_read_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "segment.csv"
    os.mkfifo(fifo)
    with pytest.raises(SegmentError, match="not a regular file"):
        list(open_segment(FILES, str(fifo)).tables[0].rows())


# ----------------------------------------------------------------------------------------- CSV: NUL


def test_nul_byte_is_a_segment_error_naming_the_row(tmp_path: Path) -> None:
    data = "Email,Name\n" + "".join(f"u{i}@example.com,x\n" for i in range(10_000)) + "z@example.com,a\0b\n"
    segment = open_segment(FILES, write(tmp_path, data))
    with pytest.raises(SegmentError) as info:
        list(segment.tables[0].rows())
    assert "segment.csv: row 10002 (line 10002" in str(info.value)
    assert "NUL" in str(info.value)


def test_utf16_without_bom_is_reported_as_such(tmp_path: Path) -> None:
    message = segment_error(tmp_path, "Email,Name\na@example.com,x\n".encode("utf-16-le"))
    assert "NUL" in message and "--encoding utf-16-le" in message
    _, rows = read(tmp_path, "Email,Name\na@example.com,x\n".encode("utf-16-le"), encoding="utf-16-le")
    assert rows == [(2, ["a@example.com", "x"])]


def test_nul_character_in_utf16_is_found_but_zero_bytes_are_not_mistaken_for_it(tmp_path: Path) -> None:
    # "\u0100" is 00 01 in UTF-16-LE, so "A\u0100" holds 00 00 at an odd offset: not a NUL character.
    _, rows = read(tmp_path, "Email,Name\na@example.com,A\u0100\n".encode("utf-16"))
    assert rows == [(2, ["a@example.com", "A\u0100"])]
    message = segment_error(tmp_path, "Email,Name\na@example.com,x\n\0@example.com,y\n".encode("utf-16"))
    assert "row 3" in message and "NUL" in message


def test_short_reads_split_characters_and_code_units_anywhere() -> None:
    # Streams may return fewer bytes than asked (network); every boundary must be handled: a UTF-8
    # character or a UTF-16 NUL code unit split across two reads, a bad byte just after one.
    text = "Email,Name\n" + "".join(f"u{i}@example.com,Zoë 李 Ünal\n" for i in range(30))
    for read_size in (1, 2, 3, 5, 7):
        files = MemoryFiles({"s.csv": text.encode("utf-8")}, read_size=read_size)
        rows = list(open_segment(files, "s.csv").tables[0].rows())
        assert rows[-1] == (31, ["u29@example.com", "Zoë 李 Ünal"]), read_size
    lines = text.splitlines(keepends=True)
    for position in range(3, 9):  # the NUL at several offsets, so some straddle a 3-byte read
        line = lines[20][:position] + "\0" + lines[20][position:]
        broken = "".join([*lines[:20], line, *lines[21:]])
        files = MemoryFiles({"s.csv": broken.encode("utf-16")}, read_size=3)
        with pytest.raises(SegmentError, match=r"s\.csv: row 21 \(line 21, byte \d+\) contains a NUL"):
            list(open_segment(files, "s.csv").tables[0].rows())
    bad = text.encode("utf-8").replace(b"u17@", b"u17\xff@")
    expected = r"s\.csv: row 19 \(line 19, byte \d+\) is not valid UTF-8 \(bytes FF\)"
    with pytest.raises(SegmentError, match=expected):
        list(open_segment(MemoryFiles({"s.csv": bad}, read_size=5), "s.csv").tables[0].rows())


def test_storage_errors_become_segment_errors() -> None:
    class Unreachable(MemoryFiles):
        def is_dir(self, path: str) -> bool:
            raise OSError("container does not exist")

    with pytest.raises(SegmentError, match=r"^s\.csv: cannot read the segment: container does not exist$"):
        open_segment(Unreachable({}), "s.csv")
    data = ("Email\n" + "".join(f"u{i}@example.com\n" for i in range(20_000))).encode()
    segment = open_segment(MemoryFiles({"s.csv": data}, fail_at=200_000), "s.csv")
    rows = segment.tables[0].rows()
    expected = r"^s\.csv: reading failed after row \d+: blob 's\.csv' was replaced"
    with pytest.raises(SegmentError, match=expected):
        for _ in rows:
            pass


def test_excel_workbook_is_recognised(tmp_path: Path) -> None:
    path = write(tmp_path, b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", name="Contacts.xlsx")
    with pytest.raises(SegmentError) as info:
        open_segment(FILES, path)
    assert str(info.value).startswith("Contacts.xlsx: row 1 (line 1, byte 5) contains a NUL character")
    assert "Excel workbook (.xlsx)" in str(info.value)


# ------------------------------------------------------------------------------ CSV: structure, dialect


def test_crlf_and_lf_give_the_same_rows(tmp_path: Path) -> None:
    text = "Email,Name\na@example.com,Ann\nb@example.com,Bob\n"
    _, lf = read(tmp_path, text)
    _, crlf = read(tmp_path, text.replace("\n", "\r\n"))
    assert lf == crlf == [(2, ["a@example.com", "Ann"]), (3, ["b@example.com", "Bob"])]


def test_quoted_newlines_commas_and_quotes(tmp_path: Path) -> None:
    text = (
        "Email,Name,Address\r\n"
        'a@example.com,"Smith, Ann","1 Main St\r\nApt 2"\r\n'
        'b@example.com,"Bob ""the builder"" B",\r\n'
        'c@example.com,Cy,"multi\nline\nfield"\n'
        "d@example.com,Di,x\n"
    )
    _, rows = read(tmp_path, text)
    assert rows == [
        (2, ["a@example.com", "Smith, Ann", "1 Main St\r\nApt 2"]),
        (3, ["b@example.com", 'Bob "the builder" B', ""]),
        (4, ["c@example.com", "Cy", "multi\nline\nfield"]),
        (5, ["d@example.com", "Di", "x"]),  # records, not lines: the quoted newlines do not count
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Email;Name;Note\na@example.com;Ann;x,y\n", ["a@example.com", "Ann", "x,y"]),
        ("Email\tName\tNote\na@example.com\tAnn\tx;y\n", ["a@example.com", "Ann", "x;y"]),
        ("Email|Name|Note\na@example.com|Ann|x,y\n", ["a@example.com", "Ann", "x,y"]),
        ('"Email;x",Name,Note\na@example.com,Ann,x\n', ["a@example.com", "Ann", "x"]),  # ; only quoted
    ],
    ids=["semicolon", "tab", "pipe", "comma-quoted-semicolon"],
)
def test_delimiter_is_detected_from_the_header(tmp_path: Path, text: str, expected: list[str]) -> None:
    segment, rows = read(tmp_path, text)
    assert len(segment.columns) == 3
    assert rows == [(2, expected)]


def test_delimiter_override_and_aliases(tmp_path: Path) -> None:
    # The header alone would say ";" (two of them), but the file is comma-separated.
    text = "Email,Name;Given;Family\na@example.com,Ann;B;C\n"
    segment, rows = read(tmp_path, text, delimiter=",")
    assert segment.columns == ("Email", "Name;Given;Family")
    assert rows == [(2, ["a@example.com", "Ann;B;C"])]
    segment, _ = read(tmp_path, "Email\tName\na@example.com\tAnn\n", delimiter="tab")
    assert segment.columns == ("Email", "Name")
    with pytest.raises(ConfigError, match="bad delimiter"):
        read(tmp_path, text, delimiter=",,")


def test_columns_keep_their_spelling_and_match_loosely(tmp_path: Path) -> None:
    segment, _ = read(tmp_path, " Full Name ,EMAIL,Loyalty\u00a0 Tier\nAnn,a@example.com,high\n")
    assert segment.columns == (" Full Name ", "EMAIL", "Loyalty\u00a0 Tier")
    assert find_column(segment.columns, "full name") == 0
    assert find_column(segment.columns, "Email") == 1
    assert find_column(segment.columns, "loyalty tier") == 2
    assert find_column(segment.columns, "phone") is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (" Full Name", "full name"),
        ("Loyalty Tier", "loyalty tier"),
        ("  E-Mail\t Address ", "e-mail address"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("\ufeffEmail", "email"),
        ("", ""),
    ],
)
def test_normalise_header(raw: str, normal: str) -> None:
    assert normalise_header(raw) == normal


def test_short_rows_are_padded_and_long_rows_keep_their_cells(tmp_path: Path) -> None:
    text = "Email,First,Last\na@example.com\nb@example.com,B\nc@example.com,C,D,extra,more\n"
    _, rows = read(tmp_path, text)
    assert rows == [
        (2, ["a@example.com", "", ""]),
        (3, ["b@example.com", "B", ""]),
        (4, ["c@example.com", "C", "D", "extra", "more"]),
    ]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    text = "\n\nEmail,Name\r\n\r\na@example.com,Ann\n   \n,,\n,\n,Bob\nb@example.com,\n  , \t\n\n"
    segment, rows = read(tmp_path, text)
    assert segment.columns == ("Email", "Name")  # leading blank lines before the header are skipped too
    # Cells of spaces only, of the header's width (row 11), are a blank row too.
    assert rows == [(5, ["a@example.com", "Ann"]), (9, ["", "Bob"]), (10, ["b@example.com", ""])]


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    segment, rows = read(tmp_path, "Email,Name\r\n")
    assert segment.columns == ("Email", "Name")
    assert rows == []


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"], ids=["empty", "bom-only"])
def test_empty_file_is_a_segment_error(tmp_path: Path, data: bytes) -> None:
    assert "segment.csv: the file is empty" in segment_error(tmp_path, data)


def test_blank_lines_only_means_no_header(tmp_path: Path) -> None:
    assert "segment.csv: the file has no header row" in segment_error(tmp_path, "\n\r\n  \n")


def test_data_in_place_of_a_header_is_a_segment_error(tmp_path: Path) -> None:
    message = segment_error(tmp_path, "ann@example.com,Ann\nbob@example.com,Bob\n")
    assert "looks like data" in message and "'a***@example.com' is an email address" in message
    assert "ann@" not in message  # the row is someone's data: the message is logged and reported


def test_errors_quote_a_long_header_cell_shortened(tmp_path: Path) -> None:
    name = "Note " * 10_000
    message = segment_error(tmp_path, f"Email,{name},{name}\na@example.com,x,y\n")
    assert "have the same name" in message and "'Note Note" in message and len(message) < 500


def test_duplicate_columns_are_a_segment_error(tmp_path: Path) -> None:
    message = segment_error(tmp_path, "Email,Name, EMAIL \na@example.com,Ann,b@example.com\n")
    assert "columns 1 ('Email') and 3 (' EMAIL ')" in message


def test_unnamed_trailing_columns_are_allowed(tmp_path: Path) -> None:
    segment, rows = read(tmp_path, "Email,Name,,\na@example.com,Ann,,\n")
    assert segment.columns == ("Email", "Name", "", "")
    assert rows == [(2, ["a@example.com", "Ann", "", ""])]


def test_unclosed_quote_is_reported_with_a_hint(tmp_path: Path) -> None:
    text = 'Email,Name\na@example.com,"Ann\n' + "".join(f"u{i}@example.com,x\n" for i in range(10_000))
    segment = open_segment(FILES, write(tmp_path, text))
    with pytest.raises(SegmentError) as info:
        list(segment.tables[0].rows())
    assert "segment.csv: cannot parse row 2" in str(info.value) and "quote" in str(info.value)


def test_unclosed_quote_near_the_end_refuses_the_file_instead_of_swallowing_rows(tmp_path: Path) -> None:
    # Less than the 128 KiB field limit after the quote: csv.reader alone would end the value at the
    # end of the file and the 50 rows after it would be lost without a word.
    rows = "".join(f"u{i}@example.com,x\n" for i in range(50))
    segment = open_segment(
        FILES, write(tmp_path, f'Email,Name\na@example.com,Ann\nb@example.com,"Bo\n{rows}')
    )
    with pytest.raises(SegmentError) as info:
        list(segment.tables[0].rows())
    assert "segment.csv: cannot parse row 3" in str(info.value) and "never closed" in str(info.value)


def test_unclosed_quote_that_a_later_quote_closes_refuses_the_file(tmp_path: Path) -> None:
    # The quote opened in row 3 is "closed" by the quote that opens row 9's value: rows 4 to 8 would
    # otherwise vanish inside row 3's name, and the quotes after it would all be out of step.
    rows = "".join(f"u{i}@example.com,U{i},Paris,{i}\n" for i in range(4, 9))
    text = f'Email,Name,City,Tier\na@example.com,Ann,Rome,1\nb@example.com,"Bo,Oslo,2\n{rows}'
    text += 'c@example.com,"Smith, Jo",Nice,3\nd@example.com,Dan,Lyon,4\n'  # the last row: one line
    segment = open_segment(FILES, write(tmp_path, text))
    with pytest.raises(SegmentError) as info:
        list(segment.tables[0].rows())
    assert "segment.csv: cannot parse row 3" in str(info.value) and "swallowed the next row" in str(
        info.value
    )


@pytest.mark.parametrize(
    "text",
    [
        # The stray quote in row 3 is closed by row 4's quoted name: the record still has five cells,
        # bob's row is inside cy's name and cy's row keeps the rest.
        'Id,First,Last,Email,City\n1,Al,A,al@example.com,Paris\n2,"Bob,B,bob@example.com,Rome\n'
        '3,"Cy",C,cy@example.com,Oslo\n4,Di,D,di@example.com,Nice\n',
        # Two columns: the swallowed text holds a single delimiter, and an address.
        'Email,Name\na@example.com,Ann\nb@example.com,"Bo\nc@example.com,"Cy"\nd@example.com,Di\n',
        # The merged record is longer than the header.
        'Email,First,Last\nu6@example.com,N6,L6\nu7@example.com,N7,"L7\nu8@example.com,"N8",L8\nu9@example.com,N9,L9\n',
    ],
)
def test_a_stray_quote_that_swallows_a_row_refuses_the_file(tmp_path: Path, text: str) -> None:
    segment = open_segment(FILES, write(tmp_path, text))
    with pytest.raises(SegmentError) as info:
        export_rows(segment.tables[0])
    assert "segment.csv: cannot parse row 3" in str(info.value) and "swallowed" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'Email,Address\na@example.com,"1 Main St\nSpringfield"\n',  # a value on two lines, quotes paired
        'Email,Address,City,Tier\na@example.com,"1 Main St, Apt 2\nFloor 3, Door 4\nBack, left",X,1\n',
        'Email,Note,Tier\na@example.com,"ask for Jo, or\nwrite to jo@example.com",1\n',  # one comma, <2
        'Email,Name\na@example.com,O"Brien\n',  # a stray quote inside a value: taken as it is
        # RFC 4180: a quoted note over two lines, with commas and an address of someone else in it
        'Email,Notes\na@example.com,"Met at expo, NYC, booth 5, hall B\nCC: boss@acme.com on follow-up"\n',
        'Email,Notes\na@example.com,"Referred by:\nbob@example.org"\n',  # an address on a line of its own
        'Email,Notes\na@example.com,"--\nAnn Lee\na@example.com"\n',  # a signature: the row's own
        'Email,Street,Work\na@example.com,"1 Main St\nApt 2",ann@work.example\n',  # two address columns
        'Email,Street\na@example.com,"1 Main\nApt 2",oops\n',  # and a stray comma: a row to reject, no more
        # CRM notes whose later lines start with an address and a comma: not a row of three cells
        'Email,First,Notes\na@example.com,Ann,"Prefers email.\nbob@example.com, her assistant"\n',
        'Email,First,Notes\na@example.com,Ann,"Copy invoices to:\nbilling@acme.com, ap@acme.com"\n',
        'Email,First,Notes\na@example.com,Ann,"Thanks,\nJane Doe\njane.doe@acme.com, +1 555 0100"\n',
        'Email,Notes,City\na@example.com,"Prefers email.\nbob@example.com, her assistant",Rome\n',
    ],
)
def test_quotes_that_lose_nothing_are_read(tmp_path: Path, text: str) -> None:
    segment = open_segment(FILES, write(tmp_path, text))
    rows, merged = export_rows(segment.tables[0])
    assert len(rows) == 1 and rows[0][1][0] == "a@example.com" and merged == []


def test_a_literal_quote_earlier_in_the_file_does_not_refuse_a_quoted_value_later(tmp_path: Path) -> None:
    _segment, rows = read(
        tmp_path, 'Email,First,Street\na@x.com,Bob 5" tall,x\nb@x.com,B,"1 Main St\nApt 2"\n'
    )
    assert [cells for _, cells in rows] == [
        ["a@x.com", 'Bob 5" tall', "x"],
        ["b@x.com", "B", "1 Main St\nApt 2"],
    ]


@pytest.mark.parametrize(
    ("text", "row", "words"),
    [
        # the quote closes at the start of the next row, and text follows it
        ('Email,First,Last,City\na@x.com,"Bob\n"b@x.com",Carol\nc@x.com,Dan\n', 2, "swallowed"),
        # never closed, though a literal quote earlier makes the file's count of quotes even
        ('Email,First,Last\nz@x.com,Bob 5" tall,X\na@x.com,A,"Smith\nb@x.com\nc@x.com\n', 3, "never closed"),
        ('Email,Name\na@example.com,"Ann\n', 2, "never closed"),  # at the very end, nothing after it
        ('"Email,First\na@x.com,A\nb@x.com,B\n', 1, "never closed"),  # in the header
        ('Email,First\na@x.com,"Bob" Jr\n', 2, 'must be doubled ("")'),
    ],
    ids=[
        "next-row-start",
        "even-count",
        "at-the-end",
        "header",
        "text-after",
    ],
)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_quote_that_would_lose_rows_refuses_the_file(
    tmp_path: Path, text: str, row: int, words: str, encoding: str
) -> None:
    path = tmp_path / "segment.csv"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(SegmentError) as info:
        export_rows(open_segment(FILES, str(path), encoding=encoding).tables[0])
    assert f"segment.csv: cannot parse row {row}:" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        # the quote closes at the end of a cell of the next row, whose line starts with an address (not
        # caught: a quote right after that address, 'b@x.com",Carol', reads like a note ending in one)
        'Email,First,Last\na@x.com,"Bob,Smith\nb@x.com,Carol",Lee\nc@x.com,Dan,D\n',
        'Id,Name,Email\n1,"Bob,bob@x.com\n2,Ann,ann@x.com"\n3,C,c@x.com\n',
        # whatever the swallowing row's own address, or the spaces around the swallowed one
        'Email,First\njane-at-x,"Jane\nbob@y.com,Bob"\nc@x.com,Kim\n',
        'Email,First\n,"Jane\nbob@y.com\t,Bob"\nc@x.com,Kim\n',
        # in a file of two columns a note line 'address, text' has the shape of a row: set aside too
        'Email,Notes\na@x.com,"Called twice\nbob@example.com, her assistant"\nc@x.com,\n',
    ],
    ids=["cell-end", "email-last", "bad-own-address", "tab-after-address", "note-like-a-row"],
)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_value_holding_lines_that_start_rows_is_set_aside(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / "segment.csv"
    path.write_bytes(text.encode(encoding))
    rows, merged = export_rows(open_segment(FILES, str(path), encoding=encoding).tables[0])
    assert merged == [2] and [number for number, _ in rows] == [2, 3]
    assert "c@x.com" in rows[1][1]  # the row after it is read


def test_header_changed_after_open_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path, "Email,Name\na@example.com,Ann\n")
    segment = open_segment(FILES, path)
    write(tmp_path, "Name,Email\nAnn,a@example.com\n")
    with pytest.raises(SegmentError, match="header row changed"):
        list(segment.tables[0].rows())


def test_missing_path_is_a_segment_error(tmp_path: Path) -> None:
    with pytest.raises(SegmentError, match="no such file or folder"):
        open_segment(FILES, str(tmp_path / "nope.csv"))


def test_any_extension_and_relative_paths_under_a_root(tmp_path: Path) -> None:
    write(tmp_path, "Email\na@example.com\n", name="exports/Segment One.txt")
    segment = open_segment(LocalFiles(tmp_path), "exports/Segment One.txt")
    assert (segment.name, segment.tables[0].source) == ("Segment One", "Segment One.txt")
    assert rows_of(segment) == [("Segment One.txt", 2, ["a@example.com"])]


def test_a_table_can_be_built_by_hand_for_other_tests() -> None:
    table = Table("x.csv", ("Email",), lambda: iter([(2, ["a@example.com"])]))
    assert list(table.rows()) == [(2, ["a@example.com"])]
    assert list(Table("empty.csv", ("Email",)).rows()) == []


# ------------------------------------------------------------------------------------------ streaming


class SpyFiles:
    """LocalFiles that records how files are read: sizes asked for, and whether streams get closed."""

    def __init__(self) -> None:
        self.local = LocalFiles()
        self.reads: list[int | None] = []
        self.opened: list[BinaryIO] = []

    def open(self, path: str) -> BinaryIO:
        spy = self

        class Spy(io.BufferedReader):
            def read(self, size: int | None = -1, /) -> bytes:
                spy.reads.append(size)
                return super().read(size)

        stream = Spy(io.FileIO(path, "rb"))
        self.opened.append(stream)
        return stream

    def list(self, prefix: str) -> list[str]:
        return self.local.list(prefix)

    def is_dir(self, path: str) -> bool:
        return self.local.is_dir(path)

    def exists(self, path: str) -> bool:
        return self.local.exists(path)


def big_csv(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "big.csv"
    cells = ",".join(["x" * 25] * 5)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Email,A,B,C,D,E\n")
        for start in range(0, rows, 10_000):
            stop = min(rows, start + 10_000)
            out.write("".join(f"user{i}@example.com,{cells}\n" for i in range(start, stop)))
    return path


def test_large_file_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    path = big_csv(tmp_path, 200_000)
    assert path.stat().st_size > 30_000_000
    tracemalloc.start()
    try:
        segment = open_segment(FILES, str(path))
        count = last = 0
        email = ""
        for number, values in segment.tables[0].rows():
            count += 1
            last = number
            email = values[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (count, last, email) == (200_000, 200_001, "user199999@example.com")
    assert peak < 5_000_000, f"peak {peak:,} bytes while reading a {path.stat().st_size:,}-byte file"


@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("Email,Name" + "," * 50_000, "a@example.com,Ann"),  # 50,000 unnamed columns, short rows
        (",".join(["Email", *(f"c{i}" for i in range(2_000))]), "a@example.com," + ",".join("x" * 2_000)),
    ],
    ids=["unnamed-tail", "2000-columns"],
)
def test_wide_rows_are_read_in_bounded_memory(tmp_path: Path, header: str, row: str) -> None:
    path = write(tmp_path, header + "\n" + (row + "\n") * 3_000)
    tracemalloc.start()
    try:
        segment = open_segment(FILES, path)
        batches = [(len(rows), max(map(len, rows))) for _, rows in segment.tables[0].batches()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(count for count, _ in batches) == 3_000
    # Short rows are padded up to the last named column only; wide rows come in smaller batches.
    assert max(width for _, width in batches) == min(len(header.split(",")), len(row.split(",")))
    assert peak < 20_000_000, f"peak {peak:,} bytes"


def test_reads_are_chunked_and_streams_closed(tmp_path: Path) -> None:
    path = big_csv(tmp_path, 20_000)
    spy = SpyFiles()
    segment = open_segment(spy, str(path))
    assert isinstance(spy, SegmentFiles)
    assert sum(1 for _ in segment.tables[0].rows()) == 20_000
    assert all(size is not None and 0 < size <= 1024 * 1024 for size in spy.reads)
    rows = segment.tables[0].rows()
    next(rows)
    assert isinstance(rows, Generator)
    rows.close()  # a consumer that stops early: the file must still be closed
    assert len(spy.opened) == 3 and all(stream.closed for stream in spy.opened)


# --------------------------------------------------------------------------------- CDM export folders


def sample_lines() -> tuple[str, list[str]]:
    header, *data = CONTACT_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    return header, data


def sample_rows() -> tuple[list[str], list[list[str]]]:
    header, *rows = list(csv.reader(CONTACT_CSV.read_text(encoding="utf-8").splitlines()))
    return header, rows


ACCOUNT_URL = "https://contosoci.dfs.core.windows.net/exports/CustomerInsights_1b2c"


def build_cdm(
    root: Path,
    *,
    runs: Iterable[str] = ("2026/12/03/0930",),
    partitions: int = 3,
    header: bool | None = True,
    listed: bool = True,
    location: str = "url",
    rows: int | None = None,
    delimiter: str = ",",
    entity: str = "Contact",
) -> Path:
    """A Customer Insights export folder made from Contact.csv: model.json + <Table>/<run>/<Table>_<n>.csv.

    ``header=None`` writes header rows but leaves columnHeaders out of model.json; ``listed=False`` lists
    no partitions (they are found on disk); ``location`` is "url" (absolute https URL), "relative" or
    "foreign" (an URL into another storage path). Only the last run is listed, as a fresh export would.
    """
    header_line, data = sample_lines()
    data = data[:rows] if rows is not None else data
    if delimiter != ",":
        header_line = header_line.replace(",", delimiter)
        data = [line.replace(",", delimiter) for line in data]
    columns = header_line.rstrip("\n").split(delimiter)
    root.mkdir(parents=True, exist_ok=True)
    listed_partitions: list[dict[str, object]] = []
    for run in runs:
        folder = root / entity / run
        folder.mkdir(parents=True, exist_ok=True)
        size = -(-len(data) // partitions)
        listed_partitions = []
        for index in range(partitions):
            name = f"{entity}_{index + 1}.csv"
            chunk = data[index * size : (index + 1) * size]
            text = (header_line if header is not False else "") + "".join(chunk)
            (folder / name).write_text(text, encoding="utf-8")
            relative = f"{entity}/{run}/{name}"
            url = {
                "url": f"{ACCOUNT_URL}/{root.name}/{relative}",
                "relative": relative,
                "foreign": f"https://other.blob.core.windows.net/elsewhere/renamed/{relative}",
            }[location]
            settings: dict[str, object] = {"$type": "CsvFormatSettings", "delimiter": delimiter}
            if header is not None:
                settings["columnHeaders"] = header
            listed_partitions.append(
                {"name": f"{entity}_{index + 1}", "location": url, "fileFormatSettings": settings}
            )
    model = {
        "name": "cdm",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": entity,
                "attributes": [{"name": name, "dataType": "string"} for name in columns],
                "partitions": listed_partitions if listed else [],
            }
        ],
    }
    (root / "model.json").write_text(json.dumps(model, indent=2), encoding="utf-8")
    return root


def rename_column(partition: Path, old: str, new: str) -> None:
    """Rename a column in a partition's header row only (model.json keeps the old name)."""
    text = partition.read_text(encoding="utf-8")
    partition.write_text(text.replace(f"{old},", f"{new},", 1), encoding="utf-8")


def cdm_root(tmp_path: Path) -> Path:
    return tmp_path / "CustomerInsights_1b2c" / "ContactExport"


@needs_contact
@pytest.mark.parametrize("header", [True, False, None], ids=["headers", "no-headers", "unstated"])
def test_cdm_partitions_form_one_segment(tmp_path: Path, header: bool | None) -> None:
    root = build_cdm(cdm_root(tmp_path), header=header, partitions=3)
    columns, expected = sample_rows()
    segment = open_segment(FILES, str(root))
    assert segment.name == "Contact"
    assert segment.columns == tuple(columns)
    assert [table.source for table in segment.tables] == [
        f"Contact/2026/12/03/0930/Contact_{n}.csv" for n in (1, 2, 3)
    ]
    rows = rows_of(segment)
    assert [values for _, _, values in rows] == expected
    first_number = 2 if header is not False else 1
    numbers: dict[str, list[int]] = {}
    for source, number, _ in rows:
        numbers.setdefault(source, []).append(number)
    for numbers_of_one in numbers.values():  # numbered per partition
        assert numbers_of_one == list(range(first_number, first_number + len(numbers_of_one)))
    assert [len(n) for n in numbers.values()] == [1667, 1667, 1666]


@needs_contact
def test_cdm_partitions_found_on_disk_in_numeric_order(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), listed=False, partitions=11, header=False, rows=110)
    segment = open_segment(FILES, str(root))
    names = [table.source.rsplit("/", 1)[1] for table in segment.tables]
    assert names == [f"Contact_{n}.csv" for n in range(1, 12)]
    assert [values for _, _, values in rows_of(segment)] == sample_rows()[1][:110]
    assert all(number in range(1, 11) for _, number, _ in rows_of(segment))


@needs_contact
def test_cdm_latest_run_is_picked(tmp_path: Path) -> None:
    root = cdm_root(tmp_path)
    build_cdm(root, runs=["2026/09/30/2359", "2026/12/03/0930"], rows=50, listed=False)
    build_cdm(root, runs=["2026/12/03/1015"], rows=70, listed=False, partitions=2)
    (root / "Contact" / "2026" / "12" / "04" / "0800").mkdir(parents=True)  # a run that wrote nothing (yet)
    for given in (root, root / "Contact", root / "Contact" / "2026" / "12"):
        segment = open_segment(FILES, str(given))
        assert {table.source.rsplit("/", 1)[0] for table in segment.tables} == {"Contact/2026/12/03/1015"}
        assert len(rows_of(segment)) == 70


@needs_contact
def test_cdm_latest_listed_run_wins_over_newer_unlisted_folders(tmp_path: Path) -> None:
    # model.json is written when a run completes: a newer folder it does not list may be half written.
    root = build_cdm(cdm_root(tmp_path), runs=["2026/12/03/0930"], rows=40)
    half = root / "Contact" / "2026" / "12" / "03" / "1015"
    half.mkdir(parents=True)
    (half / "Contact_1.csv").write_text("ContactId\nX\n", encoding="utf-8")
    segment = open_segment(FILES, str(root / "Contact"))
    assert len(rows_of(segment)) == 40
    assert segment.tables[0].source.startswith("Contact/2026/12/03/0930/")


@needs_contact
def test_cdm_run_folder_given_directly(tmp_path: Path) -> None:
    root = cdm_root(tmp_path)
    build_cdm(root, runs=["2026/12/02/0930"], rows=30, partitions=2)
    build_cdm(root, runs=["2026/12/03/0930"], rows=60)  # model.json now lists this run only
    old = open_segment(FILES, str(root / "Contact" / "2026" / "12" / "02" / "0930"))
    assert [table.source for table in old.tables] == [
        "Contact/2026/12/02/0930/Contact_1.csv",
        "Contact/2026/12/02/0930/Contact_2.csv",
    ]
    assert len(rows_of(old)) == 30
    assert all(number >= 2 for _, number, _ in rows_of(old))  # header flag taken from model.json's settings
    new = open_segment(FILES, str(root / "Contact" / "2026" / "12" / "03" / "0930") + "/")
    assert len(new.tables) == 3 and len(rows_of(new)) == 60
    assert open_segment(FILES, str(root / "model.json")).tables == new.tables


@needs_contact
def test_cdm_header_mismatch_fails_clearly(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=20, partitions=2)
    partition = root / "Contact" / "2026" / "12" / "03" / "0930" / "Contact_2.csv"
    rename_column(partition, "EMail", "Email Address")
    with pytest.raises(SegmentError) as info:
        open_segment(FILES, str(root))
    message = str(info.value)
    assert message.startswith("Contact/2026/12/03/0930/Contact_2.csv: the header row does not match")
    assert "model.json" in message and "column 7 is 'Email Address' in the file but 'EMail'" in message


@needs_contact
def test_cdm_header_differing_only_in_case_and_spaces_is_accepted(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=5, partitions=1)
    partition = root / "Contact" / "2026" / "12" / "03" / "0930" / "Contact_1.csv"
    rename_column(partition, "EMail", " email ")
    segment = open_segment(FILES, str(root))
    assert "EMail" in segment.columns  # names come from model.json
    assert len(rows_of(segment)) == 5


@needs_contact
def test_cdm_unstated_header_that_differs_is_not_taken_for_data(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=5, partitions=1, header=None)
    partition = root / "Contact" / "2026" / "12" / "03" / "0930" / "Contact_1.csv"
    rename_column(partition, "EMail", "Mail")
    with pytest.raises(SegmentError, match="header row does not match"):
        open_segment(FILES, str(root))


@needs_contact
def test_cdm_missing_partition_fails_before_reading(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=30)
    (root / "Contact" / "2026" / "12" / "03" / "0930" / "Contact_2.csv").unlink()
    with pytest.raises(SegmentError) as info:
        open_segment(FILES, str(root))
    source = "Contact/2026/12/03/0930/Contact_2.csv"
    assert f"{source}: partition of entity 'Contact' is missing" in str(info.value)


@needs_contact
@pytest.mark.parametrize("location", ["url", "relative", "foreign"])
def test_cdm_partition_locations_resolve_inside_the_export_folder(tmp_path: Path, location: str) -> None:
    # "foreign": the folder was copied from storage under another path; the Table folder still matches.
    root = build_cdm(cdm_root(tmp_path), rows=12, partitions=2, location=location)
    segment = open_segment(FILES, str(root))
    assert [table.source for table in segment.tables] == [
        "Contact/2026/12/03/0930/Contact_1.csv",
        "Contact/2026/12/03/0930/Contact_2.csv",
    ]
    assert len(rows_of(segment)) == 12


@needs_contact
def test_cdm_percent_encoded_location(tmp_path: Path) -> None:
    root = build_cdm(tmp_path / "Customer Insights" / "My Export", rows=4, partitions=1, entity="My Contacts")
    model = json.loads((root / "model.json").read_text(encoding="utf-8"))
    partition = model["entities"][0]["partitions"][0]
    partition["location"] = partition["location"].replace(" ", "%20")
    (root / "model.json").write_text(json.dumps(model), encoding="utf-8")
    segment = open_segment(FILES, str(root))
    assert segment.name == "My Contacts"
    assert segment.tables[0].source == "My Contacts/2026/12/03/0930/My Contacts_1.csv"
    assert len(rows_of(segment)) == 4


@needs_contact
def test_cdm_location_outside_the_export_is_rejected(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=4, partitions=1)
    model = json.loads((root / "model.json").read_text(encoding="utf-8"))
    model["entities"][0]["partitions"][0]["location"] = "https://x.dfs.core.windows.net/c/other/data.csv"
    (root / "model.json").write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(SegmentError, match="points outside the export folder"):
        open_segment(FILES, str(root))


@needs_contact
def test_cdm_header_rows_despite_column_headers_false_are_not_data(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=10, partitions=2, header=False)
    for partition in (root / "Contact" / "2026" / "12" / "03" / "0930").iterdir():  # rewrite: add headers
        partition.write_text(sample_lines()[0] + partition.read_text(encoding="utf-8"), encoding="utf-8")
    rows = rows_of(open_segment(FILES, str(root)))
    assert [values for _, _, values in rows] == sample_rows()[1][:10]
    assert [number for _, number, _ in rows] == [2, 3, 4, 5, 6] * 2


@needs_contact
def test_cdm_partition_with_bom_and_no_header_row(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=3, partitions=1, header=False)
    partition = root / "Contact" / "2026" / "12" / "03" / "0930" / "Contact_1.csv"
    partition.write_bytes(b"\xef\xbb\xbf" + partition.read_bytes())
    rows = rows_of(open_segment(FILES, str(root)))
    assert rows[0][1:] == (1, sample_rows()[1][0])
    assert rows[0][2][0] == "CNTID_1000"


@needs_contact
def test_cdm_delimiter_comes_from_model_json(tmp_path: Path) -> None:
    root = build_cdm(cdm_root(tmp_path), rows=10, partitions=2, delimiter="|", header=False)
    segment = open_segment(FILES, str(root))
    assert len(segment.columns) == 19
    assert [values for _, _, values in rows_of(segment)] == sample_rows()[1][:10]


@needs_cdm_model
def test_cdm_sample_model_with_several_entities(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "model.json").write_bytes(CDM_MODEL.read_bytes())
    customers = root / "Customers"
    customers.mkdir()
    (customers / "partition-data.csv").write_text(
        "CustomerID,CompanyName,ContactName,ContactTitle,Address,City,Region,PostalCode,Country,Phone,Fax\r\n"
        "ALFKI,Alfreds Futterkiste,Maria Anders,Sales Representative,Obere Str. 57,Berlin,,12209,Germany,"
        "030-0074321,030-0076545\r\n",
        encoding="utf-8",
    )
    with pytest.raises(SegmentError) as info:
        open_segment(FILES, str(root))
    assert "several entities (Orders, Customers)" in str(info.value)
    segment = open_segment(FILES, str(customers))
    assert segment.name == "Customers"
    assert segment.columns[:3] == ("CustomerID", "CompanyName", "ContactName")
    alfki = [
        "ALFKI",
        "Alfreds Futterkiste",
        "Maria Anders",
        "Sales Representative",
        "Obere Str. 57",
        "Berlin",
        "",
        "12209",
        "Germany",
        "030-0074321",
        "030-0076545",
    ]
    assert rows_of(segment) == [("Customers/partition-data.csv", 2, alfki)]
    (root / "Orders").mkdir()
    with pytest.raises(SegmentError, match="no partitions of entity 'Orders'"):
        open_segment(FILES, str(root / "Orders"))  # listed in model.json, but no folder and no partitions
    (root / "Suppliers").mkdir()
    (root / "Suppliers" / "x.csv").write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(SegmentError, match="'Suppliers' is not an entity"):
        open_segment(FILES, str(root / "Suppliers"))


def test_folder_without_model_json_is_a_segment_error(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(SegmentError, match=r"no model\.json was found"):
        open_segment(FILES, str(tmp_path / "a" / "b"))


@pytest.mark.parametrize("partitions", [5, "Contact_1.csv", {"location": "Contact_1.csv"}])
def test_partitions_that_are_not_a_list_are_a_segment_error(tmp_path: Path, partitions: object) -> None:
    model = {"entities": [{"name": "Contact", "attributes": [{"name": "Email"}], "partitions": partitions}]}
    (tmp_path / "model.json").write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(SegmentError, match=r"model\.json: \"partitions\" of entity 'Contact' is not a list"):
        open_segment(FILES, str(tmp_path))


@pytest.mark.parametrize("encoding", ["rot13", "utf-16"])
def test_cdm_encoding_from_model_json_is_checked(tmp_path: Path, encoding: str) -> None:
    settings = {"encoding": encoding, "columnHeaders": True}
    model = {
        "entities": [
            {
                "name": "Contact",
                "attributes": [{"name": "Email"}],
                "partitions": [{"location": "Contact/Contact_1.csv", "fileFormatSettings": settings}],
            }
        ]
    }
    (tmp_path / "Contact").mkdir()
    (tmp_path / "Contact" / "Contact_1.csv").write_bytes("Email\na@example.com\n".encode("utf-16-le"))
    (tmp_path / "model.json").write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(SegmentError) as info:
        list(open_segment(FILES, str(tmp_path)).tables[0].rows())
    assert ("is not a text file encoding" if encoding == "rot13" else "byte-order mark") in str(info.value)


@pytest.mark.parametrize("text", ['{"entities": [', '{"entities": [' + "[" * 100_000 + "]" * 100_000 + "]}"])
def test_broken_model_json_is_a_segment_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "model.json").write_text(text, encoding="utf-8")
    with pytest.raises(SegmentError, match=r"model\.json: not valid JSON"):
        open_segment(FILES, str(tmp_path))


# ------------------------------------------------------------------- blob-like storage (protocol only)


class MemoryFiles:
    """SegmentFiles over a dict of blob names, with forward-only streams and plain-prefix listing,
    like Blob Storage: proves the readers need nothing but the protocol."""

    def __init__(self, blobs: dict[str, bytes], *, read_size: int = 1 << 30, fail_at: int = 1 << 62) -> None:
        self.blobs = blobs
        self.read_size = read_size  # at most this many bytes per read(), like a slow network stream
        self.fail_at = fail_at  # reading past this offset raises OSError, like a blob replaced mid-read

    def open(self, path: str) -> BinaryIO:
        if path not in self.blobs:
            raise FileNotFoundError(path)
        read_size, fail_at = self.read_size, self.fail_at

        class ForwardOnly(io.BytesIO):
            def seekable(self) -> bool:
                return False

            def seek(self, offset: int, whence: int = 0, /) -> int:
                raise io.UnsupportedOperation("seek")

            def read(self, size: int | None = -1, /) -> bytes:
                if self.tell() >= fail_at:
                    raise OSError("blob 's.csv' was replaced or deleted while it was being read")
                return super().read(read_size if size is None or size < 0 else min(size, read_size))

        return ForwardOnly(self.blobs[path])

    def list(self, prefix: str) -> list[str]:
        return sorted(name for name in self.blobs if name.startswith(prefix))

    def is_dir(self, path: str) -> bool:
        return any(name.startswith(path.rstrip("/") + "/") for name in self.blobs)

    def exists(self, path: str) -> bool:
        return path in self.blobs


@needs_contact
def test_cdm_export_in_blob_like_storage(tmp_path: Path) -> None:
    local = build_cdm(cdm_root(tmp_path), runs=["2026/12/03/0930", "2026/12/03/1015"], rows=25, listed=False)
    prefix = "exports/CustomerInsights_1b2c/ContactExport"
    blobs = {
        join_path(prefix, path.relative_to(local).as_posix()): path.read_bytes()
        for path in local.rglob("*")
        if path.is_file()
    }
    # Same-prefix neighbours a careless prefix search would pick up.
    blobs[f"{prefix}/Contact2/2027/01/01/0000/Contact_1.csv"] = b"x\n"
    blobs[f"{prefix}/Contact/2026/12/03/1015x/Contact_1.csv"] = b"x\n"
    files = MemoryFiles(blobs)
    segment = open_segment(files, f"{prefix}/Contact")
    assert [table.source for table in segment.tables] == [
        f"Contact/2026/12/03/1015/Contact_{n}.csv" for n in (1, 2, 3)
    ]
    assert [values for _, _, values in rows_of(segment)] == sample_rows()[1][:25]
    csv_segment = open_segment(files, f"{prefix}/Contact/2026/12/03/1015/Contact_1.csv")
    assert csv_segment.name == "Contact_1" and len(list(csv_segment.tables[0].rows())) == 9
