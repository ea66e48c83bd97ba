"""The rejects file: every row that was not exported, with where it was and why.

Opened in a spreadsheet by the people who fix the data, so cells that a spreadsheet would run as a
formula (starting with = + - @, tab or carriage return) are neutralised with a leading apostrophe (OWASP's
advice for CSV injection). Written to a local temporary file first, so a million rejects cost no memory,
then handed to the result store in one streamed upload.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from types import TracebackType
from typing import IO

REJECT_COLUMNS = ("source", "row", "field", "code", "reason", "value")
DUPLICATE_COLUMNS = ("source", "row", "email_key_of", "first_source", "first_row")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A cell that a spreadsheet shows as text, never evaluates."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


class CsvSpool:
    """Append-only CSV in a temporary file; ``count`` rows written; ``path`` to upload when closed."""

    def __init__(self, columns: tuple[str, ...], *, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="spool-", suffix=".csv", dir=directory)
        self._file: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(columns)
        self.count = 0

    def add(self, *cells: object) -> None:
        self._writer.writerow([safe_cell(c) for c in cells])
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> CsvSpool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()
