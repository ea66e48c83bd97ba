"""Where segment files live.

The readers only talk to a :class:`SegmentFiles`, so the same code reads a folder on the local disk (tests,
the CLI) and an Azure Storage container (the Function, via a BlobFiles implementation of the same protocol).

Paths are plain strings separated by ``/`` (blob names, POSIX paths); :meth:`SegmentFiles.list` returns
paths in the same form as the prefix it was given, so they can be passed back to :meth:`SegmentFiles.open`.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = ["LocalFiles", "SegmentFiles", "join_path"]


@runtime_checkable
class SegmentFiles(Protocol):
    """Read-only access to the files of a segment (local folder or blob container).

    Implementations raise ``FileNotFoundError`` from :meth:`open` for a missing file and ``OSError`` for
    other I/O failures, so readers can turn both into a :class:`~exporter.errors.SegmentError`.
    """

    def open(self, path: str) -> BinaryIO:
        """Open ``path`` for binary, streaming reads (no seeking needed). The caller closes it."""
        ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Every file path under ``prefix`` (recursive), sorted; ``[]`` if there is none.

        Readers pass a folder with a trailing "/" (blob prefixes are plain string prefixes).
        """
        ...

    def is_dir(self, path: str) -> bool:
        """True for a folder (or a blob prefix that has blobs under it)."""
        ...

    def exists(self, path: str) -> bool:
        """True for an existing file. Whether a folder counts varies (Blob Storage has no real folders),
        so readers ask :meth:`is_dir` first."""
        ...


def join_path(folder: str, name: str) -> str:
    """Join with ``/`` the way blob names are joined; an empty folder ("" or ".") means the root."""
    if folder in ("", "."):
        return name
    if folder.endswith("/"):
        return folder + name
    return f"{folder}/{name}"


class LocalFiles:
    """:class:`SegmentFiles` over the local file system.

    With a ``root``, relative paths are resolved against it (like blob names against a container);
    absolute paths are used as they are. Without one, paths are relative to the working directory.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = Path(root) if root is not None else None

    def __repr__(self) -> str:
        return f"LocalFiles({str(self._root)!r})" if self._root is not None else "LocalFiles()"

    def _resolve(self, path: str) -> Path:
        p = Path(path) if path else Path(".")
        return self._root / p if self._root is not None else p

    def open(self, path: str) -> BinaryIO:
        """Open a file for binary reading (buffered, so small reads stay cheap). Only a regular file:
        a FIFO or a device would block or never end."""
        resolved = self._resolve(path)
        if resolved.exists() and not resolved.is_file() and not resolved.is_dir():
            raise OSError(f"{path}: not a regular file")
        return resolved.open("rb")

    def list(self, prefix: str) -> builtins.list[str]:
        """Every file under ``prefix``, recursively, as ``prefix/relative/path`` strings, sorted.

        A prefix that names a file lists just that file, like a blob prefix that matches one blob.
        """
        base = self._resolve(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        found: builtins.list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                relative = Path(dirpath, filename).relative_to(base).as_posix()
                found.append(join_path(prefix, relative))
        found.sort()
        return found

    def is_dir(self, path: str) -> bool:
        """True for an existing directory."""
        return self._resolve(path).is_dir()

    def exists(self, path: str) -> bool:
        """True for an existing file or directory."""
        return self._resolve(path).exists()
