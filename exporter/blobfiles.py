"""Segment files read straight from Azure Blob Storage.

Segment exports can be hundreds of MB, and a Functions worker has little memory, so :meth:`BlobFiles.open`
streams: it returns a buffered reader that fetches the blob in ranged GETs of :data:`DOWNLOAD_CHUNK_SIZE`,
holding one range at a time, whatever chunk sizes the caller's client was built with. Every range is pinned
to the ETag seen at open(), so a file replaced mid-read fails loudly instead of yielding a torn mix of the
old and the new export.

Structurally implements the files protocol of ``exporter.files`` (open/list/is_dir/exists).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from .storage import DOWNLOAD_CHUNK_SIZE, iter_blob_names

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["BlobFiles", "BlobReader"]


@contextlib.contextmanager
def _as_oserror(what: str) -> Iterator[None]:
    """Azure SDK errors as OSError: the files protocol promises OSError (readers make it a SegmentError).

    A missing container is a configuration problem, not a missing file: plain OSError, never "not found".
    """
    try:
        yield
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise OSError(f"{what}: the container does not exist") from exc
        raise FileNotFoundError(f"{what}: not found") from exc
    except AzureError as exc:
        raise OSError(f"{what}: {describe_azure_error(exc)}") from exc


def describe_azure_error(exc: AzureError) -> str:
    """One line: the SDK's messages carry the whole XML error body, which drowns a log or a report."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode is a str enum: show "BlobNotFound", not its repr
    return f"{first} ({code})" if code else f"{first} ({type(exc).__name__})"


#: What the BufferedReader in front of a BlobReader holds; the raw reader already holds a whole range.
_READ_BUFFER = 64 * 1024


class BlobReader(io.RawIOBase):
    """A read-only, seekable raw stream over one blob version, fetched range by range.

    Each range comes from its own ``download_blob(offset, length)`` (a StorageStreamDownloader whose chunks
    are joined: one chunk when the range fits the client's single-GET size), so memory stays at about one
    range no matter how the ContainerClient was configured.
    """

    def __init__(
        self, blob: BlobClient, *, size: int, etag: str, chunk_size: int = DOWNLOAD_CHUNK_SIZE
    ) -> None:
        super().__init__()
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._blob = blob
        self._size = size
        self._etag = etag
        self._chunk_size = chunk_size
        self._pos = 0
        self._window = b""
        self._window_start = 0

    @property
    def name(self) -> str:
        """The blob name, as file objects have one (error messages, logs)."""
        return str(self._blob.blob_name)

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._checkClosed()
        with memoryview(buffer) as view, view.cast("B") as out:
            if self._pos >= self._size or len(out) == 0:
                return 0
            offset = self._pos - self._window_start
            if not 0 <= offset < len(self._window):
                self._fetch(self._pos)
                offset = 0
            n = min(len(out), len(self._window) - offset)
            with memoryview(self._window) as window:
                out[:n] = window[offset : offset + n]
        self._pos += n
        return n

    def _fetch(self, start: int) -> None:
        length = min(self._chunk_size, self._size - start)
        self._window = b""  # drop the old range before fetching the next: one range in memory, not two
        try:
            downloader = self._blob.download_blob(
                offset=start,
                length=length,
                etag=self._etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            data = b"".join(downloader.chunks())  # a single chunk is returned as is, without a copy
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise OSError(f"blob {self.name!r} was replaced or deleted while it was being read") from exc
        except AzureError as exc:
            raise OSError(f"blob {self.name!r}: {describe_azure_error(exc)}") from exc
        if len(data) != length:
            raise OSError(f"blob {self.name!r}: expected {length} bytes at offset {start}, got {len(data)}")
        self._window, self._window_start = data, start

    def close(self) -> None:
        self._window = b""
        super().close()


class BlobFiles:
    """Segment files in one container; paths are blob names ("/"-separated, no leading "/")."""

    def __init__(self, container: ContainerClient, *, chunk_size: int = DOWNLOAD_CHUNK_SIZE) -> None:
        self.container = container
        self.chunk_size = chunk_size

    def open(self, path: str) -> BinaryIO:
        """A buffered, streaming reader of the blob as it is now; the caller closes it.

        Raises FileNotFoundError when there is no such blob, like ``open()`` on a local file.
        """
        blob = self.container.get_blob_client(path.lstrip("/"))
        with _as_oserror(f"blob {path!r} in container {self.container.container_name!r}"):
            props = blob.get_blob_properties()
        raw = BlobReader(blob, size=int(props.size), etag=str(props.etag), chunk_size=self.chunk_size)
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def list(self, prefix: str) -> list[str]:
        """Blob names starting with ``prefix`` (all levels), sorted.

        A plain string prefix, as in Blob Storage: pass "segments/x/" to mean the folder "segments/x" only.
        """
        with _as_oserror(f"listing {prefix!r} in container {self.container.container_name!r}"):
            return sorted(iter_blob_names(self.container, prefix.lstrip("/")))

    def is_dir(self, path: str) -> bool:
        """True when at least one blob lives under ``path + "/"`` (folders are virtual in Blob Storage)."""
        folder = path.strip("/")
        start = folder + "/" if folder else ""
        with _as_oserror(f"listing {start!r} in container {self.container.container_name!r}"):
            # Small pages: one blob answers the question, and listing 5,000 names to learn it is waste.
            return next(iter_blob_names(self.container, start, page_size=10), None) is not None

    def exists(self, path: str) -> bool:
        """True when a blob with exactly this name exists (a virtual folder does not count)."""
        with _as_oserror(f"blob {path!r} in container {self.container.container_name!r}"):
            return bool(self.container.get_blob_client(path.lstrip("/")).exists())
