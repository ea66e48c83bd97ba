"""Segment readers: stream the rows of a segment file, whatever shape it was dropped in.

A segment is either one CSV file with a header row, or a Customer Insights export folder in the Common Data
Model "model.json" layout (``model.json`` beside ``<Table>/<YYYY>/<MM>/<DD>/<HHMM>/<Table>_<n>.csv``).
Either way the caller gets a :class:`Segment`: column names plus one :class:`Table` per physical file, whose
rows are streamed straight out of :func:`csv.reader` (lists, no per-row dicts) so a million-row export
costs little more than parsing it.

Everything that makes a file unreadable is found as early as possible and raised as a
:class:`~exporter.errors.SegmentError` naming the file, the row and the fix; problems of single rows
(short or long rows, bad values) are the caller's business.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from operator import itemgetter
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote, urlsplit

from exporter.errors import ConfigError, SegmentError
from exporter.files import SegmentFiles, join_path
from exporter.privacy import mask_email, shorten

__all__ = [
    "Segment",
    "Table",
    "check_delimiter",
    "check_encoding",
    "find_column",
    "normalise_header",
    "open_segment",
]

RowIterator = Iterator[tuple[int, list[str]]]
# (row numbers, rows): a range when the numbers follow on, a list when blank lines were skipped.
BatchIterator = Iterator[tuple[Sequence[int], list[list[str]]]]
BATCH_ROWS = 2048  # rows per batch: per-batch work vanishes, the batch stays in cache (measured: 1024-4096)
# Cells per batch: wide rows make smaller batches, so memory stays flat whatever the width (a 150-column
# file reads 873 rows a batch; a row of 100,000 cells, one).
_BATCH_CELLS = BATCH_ROWS * 64
_Quoting = Literal[0, 1, 2, 3]  # the csv.QUOTE_* constants

_HEAD_BYTES = 64 * 1024  # first read: BOM, delimiter and header sniffing
_HEAD_MAX = 1024 * 1024  # keep reading (up to this) until the head holds a whole first line
_CHUNK = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")  # in order of preference when the header is ambiguous
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_RUN_DEPTH = 5  # <Table>/<YYYY>/<MM>/<DD>/<HHMM>: how far below model.json a given folder may be
_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_QUOTED = re.compile(r'"[^"]*"')
_NOT_FILE_ENCODINGS = frozenset({"idna", "punycode", "undefined"})
_BYTE_ORDER_MARKED = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}


# --------------------------------------------------------------------------------------------------- API


def _no_rows() -> RowIterator:
    return iter(())


def batched_rows(rows: Callable[[], RowIterator], size: int = BATCH_ROWS) -> BatchIterator:
    """Batches from a row iterator, for tables whose reader has no batch form of its own."""
    iterator = rows()
    while batch := list(islice(iterator, size)):
        yield [number for number, _ in batch], [values for _, values in batch]


@dataclass(frozen=True)
class Table:
    """One physical file of a segment: its name (for messages and the rejects file), its column names
    and a way to stream its rows."""

    source: str
    columns: tuple[str, ...]
    # How rows() reads the file. Set by open_segment; tests of other modules may pass any callable.
    _read: Callable[[], RowIterator] = field(default=_no_rows, repr=False, compare=False)
    _read_batches: Callable[[int | None, list[int] | None], BatchIterator] | None = field(
        default=None, repr=False, compare=False
    )

    def batches(self, *, email_column: int | None = None, merged: list[int] | None = None) -> BatchIterator:
        """The rows of :meth:`rows` in batches of up to :data:`BATCH_ROWS`: ``(row numbers, rows)``.

        The form the export's hot loop reads, so that per-row work can run inside C functions. Given
        ``email_column`` and a ``merged`` list, the numbers of the rows with a quoted value whose later
        lines start rows of their own (an address in that column: most likely rows swallowed by a
        stray quote, perhaps a note) are appended to ``merged`` before their batch is yielded."""
        if self._read_batches is not None:
            return self._read_batches(email_column, merged)
        return batched_rows(self._read)

    def rows(self) -> RowIterator:
        """Stream ``(row_number, values)``; every call opens the file again and starts from the top.

        ``row_number`` is the spreadsheet-style record number (header = 1, first data row = 2, or 1 when
        the file has no header row); blank lines are skipped but still counted, so the number is the row
        a person sees when opening the file in Excel. Short rows are padded with ``""`` up to the last
        named column, long rows keep their extra cells. The list is the one :func:`csv.reader` made:
        keep it, do not expect a copy.
        """
        return self._read()


@dataclass(frozen=True)
class Segment:
    """A segment to export: its name, its columns and the files holding its rows (in order)."""

    name: str
    columns: tuple[str, ...]
    tables: tuple[Table, ...]


def normalise_header(name: str) -> str:
    """Column name as people mean it: trimmed, case-folded, inner whitespace collapsed to one space.

    Headers written by hand or by Excel differ in exactly these ways (" Full  Name" vs "full name").
    """
    return " ".join(name.replace("\ufeff", "").split()).casefold()


def find_column(columns: Sequence[str], wanted: str) -> int | None:
    """Index of the column named ``wanted`` (compared with :func:`normalise_header`), or None."""
    key = normalise_header(wanted)
    for index, name in enumerate(columns):
        if normalise_header(name) == key:
            return index
    return None


def open_segment(
    files: SegmentFiles, path: str, *, encoding: str | None = None, delimiter: str | None = None
) -> Segment:
    """Open the segment at ``path``: a CSV file, or a Customer Insights (CDM model.json) export folder.

    CSV file (any extension): the first non-blank record is the header. ``encoding`` defaults to UTF-8
    with or without BOM, a UTF-16/UTF-32 BOM is detected; ``delimiter`` defaults to whichever of
    ``, ; TAB |`` the header line uses most (comma on a tie).

    Folder: the folder holding ``model.json`` (or that model.json file), the ``<Table>`` folder, a run
    folder ``<Table>/<YYYY>/<MM>/<DD>/<HHMM>`` (or a year/month/day folder between them); ``model.json``
    is looked for in the folder and up to five folders above it. Column names come from the entity's
    attributes. One export run is one segment:

    * partitions listed in model.json win (their locations are resolved inside the model.json folder);
      given the model.json or ``<Table>`` folder, the latest run folder among them is used;
    * given a run folder model.json does not list (an older run), or when model.json lists no partitions,
      the ``<Table>_<n>.csv`` files on disk are used, ordered by n; the latest run folder (by its
      YYYY/MM/DD/HHMM path) that has such files is picked.

    ``fileFormatSettings`` gives each partition's header flag, delimiter and encoding; ``encoding`` and
    ``delimiter`` given here override them. A first row equal to the attribute names (ignoring case and
    spaces) is taken as the header when the flag is missing or even false (it is never a contact); a
    missing flag and a first row that mostly names attributes, but not all, is a mismatch. Every partition
    is opened once here, so a missing partition or a header that does not match model.json fails before
    anything is exported.

    Raises SegmentError for anything unreadable, ConfigError for an unknown encoding or bad delimiter.
    """
    encoding = check_encoding(encoding)
    delimiter = check_delimiter(delimiter)
    path = _clean_path(path)
    try:
        if files.is_dir(path):
            return _open_cdm(files, path, encoding, delimiter)
        if posixpath.basename(path).casefold() == "model.json" and files.exists(path):
            return _open_cdm(files, _parent(path), encoding, delimiter)
        if files.exists(path):
            return _open_csv(files, path, encoding, delimiter)
    except OSError as exc:  # storage unreachable, container missing, access denied...
        raise SegmentError(f"{path}: cannot read the segment: {exc}") from exc
    raise SegmentError(f"{path}: no such file or folder. Check the segment path (and the storage account).")


# ------------------------------------------------------------------------------------- arguments, paths


def check_encoding(encoding: str | None) -> str | None:
    if encoding is None or encoding == "":
        return None
    examples = "use a Python codec name such as 'utf-8', 'cp1252' or 'utf-16'"
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}: {examples}") from None
    # rot13, base64, zlib...: codecs, but not the encoding of a text file; idna and punycode are for
    # domain names only.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_FILE_ENCODINGS:
        raise ConfigError(f"{encoding!r} is not a text file encoding: {examples}")
    return encoding


def check_delimiter(delimiter: str | None) -> str | None:
    if delimiter is None or delimiter == "":
        return None
    delimiter = _DELIMITER_ALIASES.get(delimiter.casefold(), delimiter)
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise ConfigError(f"bad delimiter {delimiter!r}: give one character such as ',', ';', '|' or 'tab'")
    return delimiter


def _clean_path(path: str) -> str:
    if os.sep != "/":
        path = path.replace(os.sep, "/")
    if not path:
        return ""
    cleaned = posixpath.normpath(path)
    return "" if cleaned == "." else cleaned


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _relative(path: str, root: str) -> tuple[str, ...]:
    """Parts of ``path`` below ``root`` (``path`` is under ``root``: it was listed or found from it)."""
    return tuple(_parts(path)[len(_parts(root)) :])


# ---------------------------------------------------------------------------------------- byte streams


class _NulFound(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _Stream(io.BufferedIOBase):
    """The binary stream TextIOWrapper reads: replays the sniffed head, counts the bytes handed out
    (to place a decoding error in the file) and finds NUL characters per chunk, not per row."""

    def __init__(self, raw: BinaryIO, head: bytes, nul_width: int, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._head = head
        self._width = nul_width  # bytes per code unit: 1, or 2/4 for UTF-16/UTF-32
        self._tail = b""
        self.delivered = 0

    @property
    def name(self) -> str:
        return self._name

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1, /) -> bytes:
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._raw.read(size if size > 0 else _CHUNK)
        if data:
            self._check_nul(data)
            self.delivered += len(data)
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        if size is not None and size >= 0:
            return self.read1(size)
        chunks = []
        while chunk := self.read1(_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()

    def _check_nul(self, data: bytes) -> None:
        width = self._width
        if width == 1:
            index = data.find(b"\0")
            if index >= 0:
                raise _NulFound(self.delivered + index)
            return
        buffer = self._tail + data
        base = self.delivered - len(self._tail)
        unit = b"\0" * width
        index = buffer.find(unit)
        while index >= 0:
            if (base + index) % width == 0:
                raise _NulFound(base + index)
            index = buffer.find(unit, index + 1)
        self._tail = buffer[-(width - 1) :]


def _read_head(raw: BinaryIO) -> bytes:
    head = raw.read(_HEAD_BYTES)
    while b"\n" not in head and len(head) < _HEAD_MAX:
        more = raw.read(_HEAD_BYTES)
        if not more:
            break
        head += more
    return head


def _pick_encoding(head: bytes, encoding: str | None) -> str:
    """The codec to decode with: what a byte-order mark says, else the given one, else UTF-8. The mark
    wins: an export set to cp1252 whose file was saved again as 'CSV UTF-8' starts with one, and no
    header in a single-byte encoding starts with those bytes (``ï»¿``, ``ÿþ``)."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if encoding is None or head.startswith(codecs.BOM_UTF8) or codecs.lookup(encoding).name == "utf-8":
        return "utf-8-sig"
    return encoding


def _unit_width(encoding: str) -> int:
    name = codecs.lookup(encoding).name
    if name.startswith("utf-16"):
        return 2
    if name.startswith("utf-32"):
        return 4
    return 1


def _encoding_label(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "UTF-8" if name in ("utf-8", "utf-8-sig") else name


def _sniff_delimiter(head: bytes, encoding: str) -> str:
    """The delimiter the header line uses most, outside quotes; comma when it has none."""
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _QUOTED.sub("", line)
    counts = [(line.count(candidate), -rank) for rank, candidate in enumerate(_DELIMITERS)]
    best = max(counts)
    return _DELIMITERS[-best[1]] if best[0] else ","


def _encoding_option(name: str) -> str:
    """How to give an encoding, wherever the reader was called from (command line or export settings)."""
    return f'--encoding {name} on the command line, "encoding": "{name}" in an export'


def _reader(text: Iterable[str], delimiter: str, quoting: _Quoting) -> Any:
    """csv.reader, strict: text after a closing quote, or a quote still open at the end of the file, is
    an error instead of a value that silently swallows the rows after it."""
    return csv.reader(text, delimiter=delimiter, quoting=quoting, strict=True)


def _merged_rows(rows: list[list[str]], start: int, delimiter: str, email: int, width: int) -> list[int]:
    """Numbers of the rows that seem to hold other rows. A stray opening quote makes csv.reader read
    on, over line breaks, up to the next quote anywhere in the file; strict parsing refuses most such
    records (text after the closing quote), not one whose closing quote ends a cell (``Bob"``)."""
    found = []
    for number, row in enumerate(rows, start):
        if any(
            ("\n" in cell or "\r" in cell)
            and _reads_like_rows(cell, index, len(row), delimiter, email, width)
            for index, cell in enumerate(row)
        ):
            found.append(number)
    return found


def _reads_like_rows(cell: str, index: int, cells: int, delimiter: str, email: int, width: int) -> bool:
    """Whether a multi-line value, cell ``index`` of a record of ``cells``, has the shape of swallowed
    rows: its first line holds the rest of its own row's cells; a later line is a row of the header's
    width with an address in the email column (the last line completed by the cells after the value).
    A note (``Prefers email.\nbob@example.com, her assistant``) rarely has that shape; in a file of two
    columns nothing tells them apart."""
    first, *later = (line.split(delimiter) for line in cell.splitlines())
    if len(first) != width - index:
        return False
    for position, parts in enumerate(later, 1):
        filled = len(parts) + (cells - index - 1 if position == len(later) else 0)
        if (
            filled == width
            and len(parts) > email
            and _EMAIL_LIKE.fullmatch(parts[email].strip().strip('"').strip())
        ):
            return True
    return False


def _is_blank(row: list[str]) -> bool:
    return not "".join(row).strip()


def _batch_size(width: int) -> int:
    return max(1, min(BATCH_ROWS, _BATCH_CELLS // max(width, 1)))


def _named_width(columns: Sequence[str]) -> int:
    """Columns up to the last one with a name: a header may end in thousands of empty ones."""
    named = len(columns)
    while named and not columns[named - 1].strip():
        named -= 1
    return named


# ------------------------------------------------------------------------------------------ CSV reading


@dataclass(frozen=True)
class _CsvFile:
    """How to read one physical file; the bound ``rows`` method is what a Table calls."""

    files: SegmentFiles
    path: str
    source: str
    columns: tuple[str, ...] = ()
    header: bool = True
    delimiter: str | None = None  # None: sniff from the header line
    encoding: str | None = None  # None: BOM, else UTF-8
    quoting: _Quoting = csv.QUOTE_MINIMAL
    model: str | None = None  # model.json path, for messages about CDM partitions

    def _open(self) -> tuple[io.TextIOWrapper[_Stream], _Stream, str, bytes]:
        try:
            raw = self.files.open(self.path)
        except FileNotFoundError:
            raise SegmentError(f"{self.source}: file not found ({self.path}).") from None
        except OSError as exc:
            raise SegmentError(f"{self.source}: cannot open {self.path}: {exc}") from None
        try:
            head = _read_head(raw)
            encoding = _pick_encoding(head, self.encoding)
            name = codecs.lookup(encoding).name
            if name in _BYTE_ORDER_MARKED and not head.startswith(_BYTE_ORDER_MARKED[name]):
                raise SegmentError(
                    f"{self.source}: the file does not start with a byte-order mark, so {name} cannot tell "
                    f"which byte order it uses: give it ({_encoding_option(name + '-le')}, or {name}-be)."
                )
            stream = _Stream(raw, head, _unit_width(encoding), self.path)
            text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
            text._CHUNK_SIZE = _CHUNK  # type: ignore[attr-defined]  # fewer, larger decodes: ~5% faster
        except BaseException:
            raw.close()
            raise
        return text, stream, encoding, head

    def peek(self) -> tuple[tuple[int, list[str]] | None, str, bytes]:
        """First non-blank record (number, cells), the delimiter in use and the file's first bytes."""
        text, stream, encoding, head = self._open()
        delimiter = self.delimiter or _sniff_delimiter(head, encoding)
        number = 0
        with text:
            reader = _reader(text, delimiter, self.quoting)
            try:
                for row in reader:
                    number += 1
                    if not _is_blank(row):
                        return (number, row), delimiter, head
            except (UnicodeError, _NulFound, csv.Error, OSError) as exc:
                raise self._error(exc, stream, encoding, delimiter, head, number) from None
        return None, delimiter, head

    def rows(self) -> RowIterator:
        """Stream the data rows; see :meth:`Table.rows`. Opens the file on the first ``next()``."""
        for numbers, batch in self.batches():
            yield from zip(numbers, batch, strict=True)

    def batches(self, email_column: int | None = None, merged: list[int] | None = None) -> BatchIterator:
        """Stream the data rows in batches; see :meth:`Table.batches`. Opens the file on the first
        ``next()``. A batch of whole, non-blank rows (nearly all of them) costs two C-level passes."""
        text, stream, encoding, head = self._open()
        delimiter = self.delimiter or _sniff_delimiter(head, encoding)
        number = 0
        failed: UnicodeError | _NulFound | csv.Error | OSError | None = None
        with text:
            reader = _reader(text, delimiter, self.quoting)
            try:
                if self.header:
                    for row in reader:
                        number += 1
                        if not _is_blank(row):
                            self._check_header(row)
                            break
            except (UnicodeError, _NulFound, csv.Error, OSError) as exc:
                raise self._error(exc, stream, encoding, delimiter, head, number) from None
            width = len(self.columns)
            named = _named_width(self.columns)
            size = full = _batch_size(width)
            first_cell = itemgetter(0)
            lines = reader.line_num
            while failed is None:
                rows: list[list[str]] = []
                try:
                    rows.extend(islice(reader, size))  # keeps the rows read before an error
                except (UnicodeError, _NulFound, csv.Error, OSError) as exc:
                    failed = exc
                if not rows:
                    break
                start, number = number + 1, number + len(rows)
                if reader.line_num - lines > len(rows) and merged is not None and email_column is not None:
                    merged += _merged_rows(rows, start, delimiter, email_column, width)  # records over lines
                lines = reader.line_num
                # A short, long or blank row fails one test or the other: the first cell of a row of
                # the header's width is only empty (or spaces) when the row may be blank.
                if all(map(width.__eq__, map(len, rows))) and all(map(str.strip, map(first_cell, rows))):
                    size = full
                    yield range(start, number + 1), rows
                else:
                    size = _batch_size(max(width, *map(len, rows)))
                    yield self._tidy(rows, start, width, named)
            if failed is not None:
                raise self._error(failed, stream, encoding, delimiter, head, number) from None

    @staticmethod
    def _tidy(rows: list[list[str]], start: int, width: int, named: int) -> tuple[list[int], list[list[str]]]:
        """Drop blank rows (their numbers are skipped) and pad short rows with ``""`` up to the last
        named column (unnamed ones, trailing delimiters of the header, can never be mapped)."""
        numbers: list[int] = []
        kept: list[list[str]] = []
        for number, row in enumerate(rows, start):
            if len(row) != width or not row[0].strip():
                if _is_blank(row):
                    continue
                if len(row) < named:
                    row += [""] * (named - len(row))
            numbers.append(number)
            kept.append(row)
        return numbers, kept

    def _check_header(self, row: list[str]) -> None:
        found = _header_cells(row)
        if [normalise_header(name) for name in found] == [normalise_header(name) for name in self.columns]:
            return
        if self.model is None:
            raise SegmentError(
                f"{self.source}: the header row changed while the segment was being read "
                f"(was {shorten(str(list(self.columns)), 200)}, now {shorten(str(found), 200)}). Do not overwrite "
                "a segment file during an export."
            )
        raise _header_mismatch(self.source, found, self.columns, self.model)

    def _error(
        self,
        exc: UnicodeError | _NulFound | csv.Error | OSError,
        stream: _Stream,
        encoding: str,
        delimiter: str,
        head: bytes,
        number: int,
    ) -> SegmentError:
        """Turn a decoding, NUL, csv or I/O error into a SegmentError that says where and what to do."""
        if isinstance(exc, OSError):  # e.g. the blob was replaced or deleted while being read
            return SegmentError(f"{self.source}: reading failed after row {number}: {exc}")
        if isinstance(exc, UnicodeError) and not isinstance(exc, UnicodeDecodeError):
            # the codec itself gave up (no BOM for utf-16, a codec that cannot decode files)
            label = _encoding_label(encoding)
            return SegmentError(
                f"{self.source}: cannot decode the file as {label}: {exc}. Give its encoding."
            )
        if not isinstance(exc, UnicodeDecodeError | _NulFound):
            row = f"{self.source}: cannot parse row {number + 1}"
            if str(exc) == "unexpected end of data":
                return SegmentError(
                    f'{row}: a quote (") opened in it is never closed, so the rest of the file would be '
                    "read as one value. Check the quotes there."
                )
            if "expected after" in str(exc):
                return SegmentError(
                    f'{row}: text follows a closing quote (") there, even a space before the next '
                    'delimiter: a quote inside a quoted value must be doubled (""), and a stray quote '
                    "may have swallowed the next row. Check the quotes in that row."
                )
            hint = ""
            if "field larger than field limit" in str(exc):
                hint = ' Usually a quote (") is opened and never closed: check the quotes there.'
            return SegmentError(f"{row}: {exc}.{hint}")
        if isinstance(exc, UnicodeDecodeError):
            offset = stream.delivered - len(exc.object) + exc.start
        else:
            offset = exc.offset
        where = self._where(offset, encoding, delimiter, number)
        if isinstance(exc, UnicodeDecodeError):
            bad = exc.object[exc.start : exc.end][:4].hex(" ").upper()
            label = _encoding_label(encoding)
            if self.encoding is not None and _encoding_label(self.encoding) != label:  # a BOM won
                fix = (
                    f"It starts with a {label} byte-order mark, which wins over the encoding given "
                    f"({self.encoding}): its bytes are in two encodings. Save it again in one."
                )
            elif self.encoding is None and _unit_width(encoding) > 1:
                fix = f"Its byte-order mark says {label}, but the bytes are not: save it again, as UTF-8 if you can."
            elif self.encoding is None:
                fix = (
                    "Save the file as UTF-8 (Excel: 'CSV UTF-8'), or give the encoding it was saved in, "
                    f"e.g. cp1252 for Windows/Excel 'CSV (comma delimited)' ({_encoding_option('cp1252')})."
                )
            else:
                fix = "Pass the encoding the file was really saved in, or save it as UTF-8."
            return SegmentError(f"{self.source}: {where} is not valid {label} (bytes {bad}). {fix}")
        fix = "A CSV file never contains NUL characters: export it again as CSV text."
        if head.startswith(b"PK\x03\x04"):
            fix = "It is a ZIP file, probably an Excel workbook (.xlsx): save it as 'CSV UTF-8' instead."
        elif len(head) >= 8 and head[1:8:2] == b"\0\0\0\0" and 0 not in head[0:8:2]:
            fix = f"It looks like UTF-16 without a byte-order mark: {_encoding_option('utf-16-le')}."
        elif len(head) >= 8 and head[0:8:2] == b"\0\0\0\0" and 0 not in head[1:8:2]:
            fix = f"It looks like UTF-16 without a byte-order mark: {_encoding_option('utf-16-be')}."
        return SegmentError(f"{self.source}: {where} contains a NUL character. {fix}")

    def _where(self, offset: int, encoding: str, delimiter: str, number: int) -> str:
        try:
            line, record = _locate(self.files, self.path, encoding, delimiter, self.quoting, offset)
        except Exception:  # the message must not fail: fall back to what the reader knew
            return f"row {number + 1} or later (byte {offset})"
        return f"row {record} (line {line}, byte {offset})"


def _header_cells(row: list[str]) -> list[str]:
    """Header cells with a stray BOM removed (Excel adds one the decoder may not have eaten)."""
    if row and row[0].startswith("\ufeff"):
        return [row[0][1:], *row[1:]]
    return row


def _locate(
    files: SegmentFiles, path: str, encoding: str, delimiter: str, quoting: _Quoting, offset: int
) -> tuple[int, int]:
    """(line, row number) of the byte at ``offset``: re-reads the file up to it. Only used for errors."""
    raw = files.open(path)
    with raw:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

        def lines() -> Iterator[str]:
            carry = ""
            remaining = offset
            while remaining > 0:
                chunk = raw.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                pieces = io.StringIO(carry + decoder.decode(chunk), newline="").readlines()
                carry = pieces.pop() if pieces else ""  # may be incomplete, or a "\r" before "\n"
                yield from pieces
            # The bad byte itself, as a stand-in character: it belongs to whatever record is open.
            yield from io.StringIO(carry + decoder.decode(b"", final=True) + "\x01", newline="").readlines()

        terminated = 0

        def counted() -> Iterator[str]:
            nonlocal terminated
            for piece in lines():
                if piece.endswith(("\n", "\r")):
                    terminated += 1
                yield piece

        records = sum(1 for _ in csv.reader(counted(), delimiter=delimiter, quoting=quoting))
    return terminated + 1, records


# ----------------------------------------------------------------------------------------- CSV segments


def _open_csv(files: SegmentFiles, path: str, encoding: str | None, delimiter: str | None) -> Segment:
    source = posixpath.basename(path) or path
    probe = _CsvFile(files, path, source, encoding=encoding, delimiter=delimiter)
    first, used_delimiter, head = probe.peek()
    if not head or head in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise SegmentError(
            f"{source}: the file is empty. Export the segment again; it needs a header row naming the "
            "columns (e.g. Email,FirstName,LastName) and one row per contact."
        )
    if first is None:
        raise SegmentError(
            f"{source}: the file has no header row (it holds only blank lines). Export the segment again."
        )
    columns = tuple(_header_cells(first[1]))
    _check_columns(source, columns)
    reader = replace(probe, columns=columns, delimiter=used_delimiter, header=True)
    name = posixpath.splitext(source)[0] or source
    return Segment(name=name, columns=columns, tables=(Table(source, columns, reader.rows, reader.batches),))


def _check_columns(source: str, columns: Sequence[str], model: str | None = None) -> None:
    """Reject headers that cannot be mapped reliably: data in place of a header, duplicate names."""
    where = f"{source}" if model is None else f"{model} (entity attributes)"
    if model is None:
        if columns and columns[0].strip().lower().startswith("sep=") and not "".join(columns[1:]).strip():
            raise SegmentError(
                f"{where}: the first line ({shorten(columns[0].strip())!r}) is Excel's delimiter hint, not "
                "a header. Remove that line: the delimiter is then found from the header (or give it: "
                '--delimiter on the command line, "delimiter" in an export).'
            )
        for name in columns:
            # Dataverse's annotation columns (statecode@OData.Community.Display.V1.FormattedValue) are names
            if _EMAIL_LIKE.fullmatch(name.strip()) and "@odata." not in name.lower():
                raise SegmentError(
                    f"{where}: the first row looks like data, not a header ({mask_email(name.strip())!r} is an email "
                    "address). Add a header row naming the columns, e.g. Email,FirstName,LastName."
                )
    seen: dict[str, int] = {}
    for index, name in enumerate(columns):
        key = normalise_header(name)
        if not key:
            continue  # unnamed columns (trailing delimiters) can never be mapped, so cannot clash
        if key in seen:
            first = seen[key]
            raise SegmentError(
                f"{where}: columns {first + 1} ({shorten(columns[first])!r}) and {index + 1} ({shorten(name)!r}) "
                "have the same "
                "name once case and spaces are ignored, so a field mapping could not tell them apart. "
                "Rename or remove one of them."
            )
        seen[key] = index


# ----------------------------------------------------------------------------------------- CDM segments


@dataclass(frozen=True)
class _Partition:
    parts: tuple[str, ...]  # path below the model.json folder
    header: bool | None = None  # None: not stated, decided from the first row
    delimiter: str | None = None
    encoding: str | None = None
    quoting: _Quoting = csv.QUOTE_MINIMAL


def _find_model(files: SegmentFiles, folder: str) -> str | None:
    current = folder
    for _ in range(_RUN_DEPTH + 1):
        if files.exists(join_path(current, "model.json")):
            return current
        parent = _parent(current)
        if parent == current:
            break
        current = parent
    return None


def _load_model(files: SegmentFiles, model_path: str) -> dict[str, Any]:
    try:
        with files.open(model_path) as raw:
            data = json.load(io.TextIOWrapper(raw, encoding="utf-8-sig"))
    except OSError as exc:
        raise SegmentError(f"{model_path}: cannot read model.json: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSON syntax or encoding; nesting too deep
        raise SegmentError(
            f"{model_path}: not valid JSON ({exc}). The export may still be being written: try again later."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("entities"), list):
        raise SegmentError(f'{model_path}: not a CDM model.json (no "entities" list).')
    return data


def _entity_names(entities: list[dict[str, Any]]) -> str:
    return ", ".join(str(entity.get("name")) for entity in entities)


def _pick_entity(
    entities: list[dict[str, Any]], below: tuple[str, ...], folder: str, model_path: str
) -> dict[str, Any]:
    if below:
        wanted = below[0]
        names = [str(entity.get("name", "")) for entity in entities]
        if wanted in names:
            return entities[names.index(wanted)]
        folded = [name.casefold() for name in names]
        if wanted.casefold() in folded:
            return entities[folded.index(wanted.casefold())]
        raise SegmentError(
            f"{folder}: folder {wanted!r} is not an entity of {model_path} "
            f"(entities: {_entity_names(entities)}). Pass the export folder or one of its entity folders."
        )
    if len(entities) == 1:
        return entities[0]
    if not entities:
        raise SegmentError(f"{model_path}: model.json describes no entities: nothing to export.")
    raise SegmentError(
        f"{model_path}: model.json describes several entities ({_entity_names(entities)}), so the "
        f"segment is ambiguous. Pass the folder of the one to export, e.g. {join_path(folder, '<Entity>')}."
    )


def _format_settings(settings: Any, model_path: str) -> _Partition:
    if not isinstance(settings, dict):
        return _Partition(())
    header = settings.get("columnHeaders")
    if isinstance(header, str) and header.casefold() in ("true", "false"):
        header = header.casefold() == "true"
    delimiter = settings.get("delimiter")
    encoding = settings.get("encoding")
    try:
        delimiter = check_delimiter(delimiter) if isinstance(delimiter, str) else None
        encoding = check_encoding(encoding) if isinstance(encoding, str) else None
    except ConfigError as exc:
        raise SegmentError(f"{model_path}: fileFormatSettings: {exc}") from None
    quoting: _Quoting = csv.QUOTE_MINIMAL
    if settings.get("quoteStyle") == "QuoteStyle.None":
        quoting = csv.QUOTE_NONE
    return _Partition((), header if isinstance(header, bool) else None, delimiter, encoding, quoting)


def _location_parts(location: str, root: str, entity_folder: str) -> tuple[str, ...] | None:
    """Path below the model.json folder of a partition location, or None when it points outside.

    Locations are URLs of the storage the export was written to (``https://acct.dfs.core.windows.net/
    container/CustomerInsights_x/Export/Contact/2026/...``) while we may read a copy elsewhere, so match
    the tail of our model.json folder path inside the URL; failing that, the entity's folder.
    """
    split = urlsplit(location)
    path = unquote(split.path if split.scheme else location).replace("\\", "/")
    parts = _parts(path)
    if not parts or ".." in parts:
        return None
    if not split.scheme and not path.startswith("/"):
        return tuple(parts)  # relative to model.json
    root_parts = _parts(root)
    for length in range(min(len(root_parts), len(parts) - 1), 0, -1):
        tail = root_parts[-length:]
        for start in range(len(parts) - length):
            if parts[start : start + length] == tail:
                return tuple(parts[start + length :])
    folders = parts[:-1]
    for index in range(len(folders) - 1, -1, -1):
        if folders[index] == entity_folder:
            return tuple(parts[index:])
    return None


def _run_key(parts: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a run folder: numbers compare as numbers (2026/12 after 2026/9), and a folder that is
    not a number ("0930-copy") sorts before any that is, so it never wins over a real YYYY/MM/DD/HHMM run."""
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part) for part in parts)


def _latest_run(partitions: list[_Partition]) -> list[_Partition]:
    runs: dict[tuple[str, ...], list[_Partition]] = {}
    for partition in partitions:
        runs.setdefault(partition.parts[:-1], []).append(partition)
    return runs[max(runs, key=_run_key)] if runs else []


def _discover(
    files: SegmentFiles, folder: str, root: str, entity: str, settings: _Partition
) -> list[_Partition]:
    """``<Table>_<n>.csv`` files under ``folder``, ordered by n within each run folder."""
    pattern = re.compile(rf"{re.escape(entity)}_(\d+)\.csv", re.IGNORECASE)
    numbered: list[tuple[int, _Partition]] = []
    # A trailing "/" so a blob prefix means the folder, not every name that starts alike ("Contact2/...").
    for found in files.list(folder.rstrip("/") + "/" if folder.strip("/") else folder):
        match = pattern.fullmatch(posixpath.basename(found))
        if match:
            numbered.append((int(match.group(1)), replace(settings, parts=_relative(found, root))))
    numbered.sort(key=lambda item: (item[1].parts[:-1], item[0]))
    return [partition for _, partition in numbered]


def _open_cdm(files: SegmentFiles, folder: str, encoding: str | None, delimiter: str | None) -> Segment:
    root = _find_model(files, folder)
    if root is None:
        raise SegmentError(
            f"{folder}: a folder, but no model.json was found in it or the {_RUN_DEPTH} folders above it. "
            "Pass a CSV file, or a Customer Insights export folder (the one holding model.json)."
        )
    model_path = join_path(root, "model.json")
    model = _load_model(files, model_path)
    entities = [entity for entity in model["entities"] if isinstance(entity, dict)]
    below = _relative(folder, root)
    entity = _pick_entity(entities, below, folder, model_path)
    name = str(entity.get("name", ""))
    attributes = entity.get("attributes")
    columns = tuple(
        str(attribute["name"])
        for attribute in (attributes if isinstance(attributes, list) else [])
        if isinstance(attribute, dict) and "name" in attribute
    )
    if not columns:
        raise SegmentError(f"{model_path}: entity {name!r} has no attributes, so its columns are unknown.")
    _check_columns(name, columns, model=model_path)

    entity_folder = below[0] if below else name
    listed: list[_Partition] = []
    partitions = entity.get("partitions") or []
    if not isinstance(partitions, list):
        raise SegmentError(f'{model_path}: "partitions" of entity {name!r} is not a list.')
    for index, item in enumerate(partitions):
        location = item.get("location") if isinstance(item, dict) else None
        if not isinstance(location, str):
            raise SegmentError(f"{model_path}: partition {index + 1} of entity {name!r} has no location.")
        parts = _location_parts(location, root, entity_folder)
        if parts is None:
            raise SegmentError(
                f"{model_path}: partition location {location!r} of entity {name!r} points outside the "
                f"export folder {root!r}, so it cannot be read from here."
            )
        listed.append(replace(_format_settings(item.get("fileFormatSettings"), model_path), parts=parts))

    in_scope = [partition for partition in listed if partition.parts[: len(below)] == below]
    chosen = _latest_run(in_scope)
    if not chosen:
        search = folder if below else join_path(root, entity_folder)
        settings = replace(listed[0], parts=()) if listed else _Partition(())
        chosen = _latest_run(_discover(files, search, root, name, settings))
        if not chosen:
            raise SegmentError(
                f"{folder}: no partitions of entity {name!r}: {model_path} lists none here and no "
                f"{name}_<n>.csv files were found under {search}. The export may not have run yet."
            )
    tables = tuple(
        _open_partition(files, root, model_path, name, columns, partition, encoding, delimiter)
        for partition in chosen
    )
    return Segment(name=name, columns=columns, tables=tables)


def _open_partition(
    files: SegmentFiles,
    root: str,
    model_path: str,
    entity: str,
    columns: tuple[str, ...],
    partition: _Partition,
    encoding: str | None,
    delimiter: str | None,
) -> Table:
    """Check one partition now (exists, readable, header as model.json says) and make its Table."""
    source = "/".join(partition.parts)
    path = join_path(root, source)
    if not files.exists(path):
        raise SegmentError(
            f"{source}: partition of entity {entity!r} is missing ({path}). The export may still be running "
            "or the run folder was removed: wait for the export to finish, or pass another run folder."
        )
    reader = _CsvFile(
        files,
        path,
        source,
        columns=columns,
        delimiter=delimiter or partition.delimiter,
        encoding=encoding or partition.encoding,
        quoting=partition.quoting,
        model=model_path,
    )
    first, used_delimiter, _head = reader.peek()
    matches = first is not None and _same_names(first[1], columns)
    if partition.header is True:
        if first is not None and not matches:
            raise _header_mismatch(source, _header_cells(first[1]), columns, model_path)
        header = True
    elif partition.header is False:
        header = matches  # model.json says no header, but a first row equal to the names is not data
    else:
        if first is not None and not matches and _looks_like_header(first[1], columns):
            raise _header_mismatch(source, _header_cells(first[1]), columns, model_path)
        header = matches
    reader = replace(reader, delimiter=used_delimiter, header=header)
    return Table(source, columns, reader.rows, reader.batches)


def _same_names(row: list[str], columns: Sequence[str]) -> bool:
    cells = _header_cells(row)
    return [normalise_header(cell) for cell in cells] == [normalise_header(name) for name in columns]


def _looks_like_header(row: list[str], columns: Sequence[str]) -> bool:
    names = {normalise_header(name) for name in columns}
    hits = sum(1 for cell in _header_cells(row) if normalise_header(cell) in names)
    return hits > 0 and hits * 2 >= len(row)


def _header_mismatch(source: str, found: Sequence[str], expected: Sequence[str], model: str) -> SegmentError:
    detail = f"the file has {len(found)} columns, model.json {len(expected)}"
    for index, (have, want) in enumerate(zip(found, expected, strict=False)):
        if normalise_header(have) != normalise_header(want):
            detail += (
                f"; column {index + 1} is {shorten(have)!r} in the file but {shorten(want)!r} in model.json"
            )
            break
    return SegmentError(
        f"{source}: the header row does not match the entity's attributes in {model} ({detail}). "
        "The partition and model.json must come from the same export: export the segment again."
    )
