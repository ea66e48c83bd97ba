"""Where run results and run state go: a local directory or an Azure Blob Storage container.

Run reports (JSON), rejected-rows files (CSV, possibly large) and the run state are written through the
:class:`ResultStore` protocol so the exporter core never knows whether it runs on a laptop (a folder) or in
Azure Functions (a container). Both implementations behave the same way, and the same contract tests run
against both (the blob one against a real Azurite).

Paths are relative and "/"-separated (``runs/2024-06-01/report.json``); empty segments, ``.``, ``..`` and
backslashes are refused so a path can never escape the store root on disk and means the same in both stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ContentSettings

from .errors import ConfigError

__all__ = [
    "BLOCK_SIZE",
    "DOWNLOAD_CHUNK_SIZE",
    "BlobResultStore",
    "ConditionalResultStore",
    "LocalResultStore",
    "ResultStore",
    "blob_service_client",
    "iter_blob_names",
]

#: Size of one ranged GET when streaming a blob: bounds the memory one open download holds.
DOWNLOAD_CHUNK_SIZE = 4 * 1024 * 1024
#: Size of one staged block when uploading a file: bounds the memory one upload holds.
BLOCK_SIZE = 4 * 1024 * 1024

# Client options for every BlobServiceClient the app builds. The SDK defaults (one 32 MiB GET, one 64 MiB
# PUT) would hold whole segment or rejects files in memory; 4 MiB pieces keep a Functions worker small.
_CLIENT_OPTIONS: dict[str, Any] = {
    "max_single_get_size": DOWNLOAD_CHUNK_SIZE,
    "max_chunk_get_size": DOWNLOAD_CHUNK_SIZE,
    "max_single_put_size": BLOCK_SIZE,
    "max_block_size": BLOCK_SIZE,
}

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


# --------------------------------------------------------------------------------------------------------
# Protocols


class ResultStore(Protocol):
    """Where a run writes its report, its rejects and its state."""

    def put_bytes(self, path: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        """Write (replace) ``path`` atomically; return :meth:`location`."""
        ...

    def put_file(
        self, path: str, local_path: str | Path, *, content_type: str = "application/octet-stream"
    ) -> str:
        """Copy a local file to ``path`` without loading it whole into memory; return :meth:`location`."""
        ...

    def get_bytes(self, path: str) -> bytes | None:
        """The content of ``path``, or None when it does not exist."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Sorted paths starting with ``prefix`` (a plain string prefix, as in Blob Storage)."""
        ...

    def delete(self, path: str) -> None:
        """Remove ``path``; no error when it does not exist."""
        ...

    def location(self, path: str) -> str:
        """Where ``path`` lives, for people: a filesystem path or a blob URL."""
        ...


@runtime_checkable
class ConditionalResultStore(ResultStore, Protocol):
    """A :class:`ResultStore` with ETag-conditional writes, for run state shared by concurrent runs."""

    def put_bytes_if(
        self, path: str, data: bytes, *, etag: str | None, content_type: str = "application/octet-stream"
    ) -> str | None:
        """Write only if the current ETag is ``etag`` (None: only if ``path`` does not exist yet).

        Returns the new ETag, or None when the condition failed (someone else wrote first).
        """
        ...

    def get_with_etag(self, path: str) -> tuple[bytes, str] | None:
        """The content of ``path`` and its ETag, or None when it does not exist."""
        ...


# --------------------------------------------------------------------------------------------------------
# Paths


def _check_path(path: str) -> str:
    """Refuse paths that could escape the store root or mean different things on disk and in a container."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"store path must be a non-empty string, got {path!r}")
    if "\\" in path or "\x00" in path:
        raise ValueError(f"store path must use '/' separators only: {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"store path must be relative without empty, '.' or '..' segments: {path!r}")
    return path


def _check_prefix(prefix: str) -> str:
    """A listing prefix: "" (everything), or a path that may end with "/"."""
    if prefix == "":
        return prefix
    _check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


# --------------------------------------------------------------------------------------------------------
# Local directory


_HIDDEN = ".~"  # temp files and the lock file start with this; list() never shows them
_LOCK_NAME = _HIDDEN + "lock"


if sys.platform == "win32":  # pragma: no cover - Functions run on Linux; kept so the CLI works on Windows
    import msvcrt
    import time

    @contextlib.contextmanager
    def _locked(lock_path: Path) -> Iterator[None]:
        with open(lock_path, "a+b") as fh:
            while True:
                try:
                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(0.01)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    @contextlib.contextmanager
    def _locked(lock_path: Path) -> Iterator[None]:
        # flock locks belong to the open file description, so this also excludes other threads of this
        # process (each call opens the file anew), not only other processes.
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _content_etag(data: bytes) -> str:
    return '"sha256-' + hashlib.sha256(data).hexdigest() + '"'


class LocalResultStore:
    """A :class:`ConditionalResultStore` in a local directory (CLI runs, tests, the demo).

    Every write goes to a temp file in the target's folder and is moved in place with ``os.replace``, so a
    reader sees the old or the new content, never half a file, even if the process dies mid-write.

    ETags are emulated: the ETag is a SHA-256 of the content, and the check-then-replace of a conditional
    write runs under an exclusive lock file (``<root>/.~lock``) that every write and delete also takes.
    Limits: (1) writing identical bytes keeps the same ETag (Azure would issue a new one), so a writer cannot
    tell "unchanged" from "rewritten with the same content" -- harmless for state that only moves forward;
    (2) the lock works between processes on one machine, not over network filesystems where ``flock`` is
    unreliable (SMB/NFS); (3) computing an ETag reads the whole file, fine for small state files only.
    Names starting with ``.~`` are reserved for temp and lock files and never listed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    # -- helpers ---------------------------------------------------------------------------------------

    def _target(self, path: str) -> Path:
        return self.root.joinpath(*_check_path(path).split("/"))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / _LOCK_NAME):
            yield

    @contextlib.contextmanager
    def _temp_for(self, target: Path) -> Iterator[tuple[Path, BinaryIO]]:
        """A temp file beside ``target`` (same filesystem, so os.replace is atomic); removed on failure."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{_HIDDEN}tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "xb") as fh:
                yield tmp, fh
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _read(self, target: Path) -> bytes | None:
        try:
            return target.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _replace(self, tmp: Path, target: Path) -> None:
        try:
            with self._lock():
                os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- ResultStore -----------------------------------------------------------------------------------

    def put_bytes(self, path: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        """Write atomically; ``content_type`` is accepted for symmetry and not stored."""
        target = self._target(path)
        with self._temp_for(target) as (tmp, fh):
            fh.write(data)
        self._replace(tmp, target)
        return self.location(path)

    def put_file(
        self, path: str, local_path: str | Path, *, content_type: str = "application/octet-stream"
    ) -> str:
        """Copy in 1 MiB pieces to a temp file, then move it in place."""
        target = self._target(path)
        with self._temp_for(target) as (tmp, fh), open(local_path, "rb") as src:
            while piece := src.read(1024 * 1024):
                fh.write(piece)
        self._replace(tmp, target)
        return self.location(path)

    def get_bytes(self, path: str) -> bytes | None:
        return self._read(self._target(path))

    def list(self, prefix: str) -> list[str]:
        prefix = _check_prefix(prefix)
        # Walk only the deepest folder the prefix names, then filter with plain string-prefix semantics
        # (as Blob Storage does): "runs/2024" matches "runs/2024-06/report.json".
        folder = prefix.rpartition("/")[0]
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(_HIDDEN)]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_HIDDEN):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel.startswith(prefix):
                    found.append(rel)
        return sorted(found)

    def delete(self, path: str) -> None:
        target = self._target(path)
        with self._lock(), contextlib.suppress(FileNotFoundError, NotADirectoryError):
            target.unlink()

    def location(self, path: str) -> str:
        return str(self._target(path))

    # -- conditional writes ----------------------------------------------------------------------------

    def put_bytes_if(
        self, path: str, data: bytes, *, etag: str | None, content_type: str = "application/octet-stream"
    ) -> str | None:
        """Write only if the content hash still matches ``etag`` (None: only if absent); see class doc."""
        target = self._target(path)
        with self._temp_for(target) as (tmp, fh):
            fh.write(data)
        try:
            with self._lock():
                current = self._read(target)
                if etag is None:
                    holds = current is None
                else:
                    holds = current is not None and _content_etag(current) == etag
                if not holds:
                    tmp.unlink(missing_ok=True)
                    return None
                os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return _content_etag(data)

    def get_with_etag(self, path: str) -> tuple[bytes, str] | None:
        data = self._read(self._target(path))
        return None if data is None else (data, _content_etag(data))


# --------------------------------------------------------------------------------------------------------
# Azure Blob Storage


def blob_service_client(
    *,
    connection_string: str | None = None,
    account_name: str | None = None,
    account_url: str | None = None,
) -> BlobServiceClient:
    """The one way the app builds a BlobServiceClient, so every client gets the same bounded chunk sizes.

    A connection string wins (Azurite, local runs). Otherwise the client authenticates with
    ``DefaultAzureCredential`` -- the Function App's managed identity in Azure, ``az login`` on a laptop --
    against ``account_url`` or ``https://<account_name>.blob.core.windows.net``, so no key is ever stored.
    """
    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string, **_CLIENT_OPTIONS)
    if not account_url and account_name:
        if not _ACCOUNT_NAME.fullmatch(account_name):
            raise ConfigError(
                f"storage account name {account_name!r} is invalid: 3-24 lowercase letters and digits"
            )
        account_url = f"https://{account_name}.blob.core.windows.net"
    if not account_url:
        raise ConfigError(
            "no storage configured: give a connection string (e.g. Azurite's) or a storage account name/URL "
            "(authenticated with the managed identity / DefaultAzureCredential)"
        )
    # Built here, not at import: it probes the environment and is only needed for identity-based access.
    from azure.identity import DefaultAzureCredential  # imported here: heavy, and only Azure needs it

    return BlobServiceClient(account_url, credential=DefaultAzureCredential(), **_CLIENT_OPTIONS)


def iter_blob_names(
    container: ContainerClient, name_starts_with: str, *, page_size: int | None = None
) -> Iterator[str]:
    """Names of the blobs starting with ``name_starts_with``, in the service's (lexicographic) order.

    Skips the zero-length directory placeholders that accounts with a hierarchical namespace (ADLS Gen2)
    list as blobs (metadata ``hdi_isfolder=true``); real zero-length blobs are kept.
    """
    pages = container.list_blobs(
        name_starts_with=name_starts_with or None, include=["metadata"], results_per_page=page_size
    )
    for props in pages:
        metadata = props.metadata or {}
        if props.size == 0 and metadata.get("hdi_isfolder", "").lower() == "true":
            continue
        yield str(props.name)


class BlobResultStore:
    """A :class:`ConditionalResultStore` in one container, optionally under a path prefix.

    Writes are atomic the way Blob Storage is: a single PUT, or staged blocks committed in one request, so
    a reader sees the old or the new blob. ETags are the service's own (quoted strings, new on every write).
    """

    def __init__(self, container: ContainerClient, *, prefix: str = "") -> None:
        self.container = container
        prefix = prefix.strip("/")
        self.prefix = _check_path(prefix) + "/" if prefix else ""
        # exists() first: an identity allowed to write blobs may not be allowed to create containers.
        if not container.exists():
            with contextlib.suppress(ResourceExistsError):
                container.create_container()

    @classmethod
    def from_settings(
        cls,
        *,
        container: str,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        prefix: str = "",
    ) -> BlobResultStore:
        """Build from app settings (see :func:`blob_service_client`).

        ``credential`` replaces DefaultAzureCredential for ``account_url``; a connection string wins.
        """
        if not container:
            raise ConfigError("no result container configured")
        if not connection_string and account_url and credential is not None:
            service = BlobServiceClient(account_url, credential=credential, **_CLIENT_OPTIONS)
        else:
            service = blob_service_client(connection_string=connection_string, account_url=account_url)
        return cls(service.get_container_client(container), prefix=prefix)

    def _name(self, path: str) -> str:
        return self.prefix + _check_path(path)

    # -- ResultStore -----------------------------------------------------------------------------------

    def put_bytes(self, path: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        self.container.upload_blob(
            self._name(path),
            data,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
        )
        return self.location(path)

    def put_file(
        self, path: str, local_path: str | Path, *, content_type: str = "application/octet-stream"
    ) -> str:
        """Stage the file in :data:`BLOCK_SIZE` blocks and commit them at once.

        Done by hand rather than with ``upload_blob(stream)`` because the SDK reads a whole file into memory
        when it is under the client's ``max_single_put_size`` (64 MiB by default), whatever client we got.
        """
        blob = self.container.get_blob_client(self._name(path))
        settings = ContentSettings(content_type=content_type)
        with open(local_path, "rb") as src:
            if os.fstat(src.fileno()).st_size <= BLOCK_SIZE:
                blob.upload_blob(src.read(), overwrite=True, content_settings=settings)
                return self.location(path)
            # Unique ids per upload: concurrent uploads to one name must not mix their uncommitted blocks.
            run = uuid.uuid4().hex
            block_ids: list[BlobBlock] = []
            while piece := src.read(BLOCK_SIZE):
                block_id = f"{run}-{len(block_ids):08d}"
                blob.stage_block(block_id, piece, length=len(piece))
                block_ids.append(BlobBlock(block_id=block_id))
        blob.commit_block_list(block_ids, content_settings=settings)
        return self.location(path)

    def get_bytes(self, path: str) -> bytes | None:
        try:
            return self.container.download_blob(self._name(path)).readall()
        except ResourceNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        full = self.prefix + _check_prefix(prefix)
        return sorted(name[len(self.prefix) :] for name in iter_blob_names(self.container, full))

    def delete(self, path: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_blob(self._name(path), delete_snapshots="include")

    def location(self, path: str) -> str:
        return str(self.container.get_blob_client(self._name(path)).url)

    # -- conditional writes ----------------------------------------------------------------------------

    def put_bytes_if(
        self, path: str, data: bytes, *, etag: str | None, content_type: str = "application/octet-stream"
    ) -> str | None:
        """An If-Match (or If-None-Match: *) write; the service decides, so this is race-free across hosts.

        Meant for small documents (state, leases), sent in one PUT that carries the condition. Data above
        the client's single-PUT size is staged in blocks and the condition applies to the final commit.
        """
        blob = self.container.get_blob_client(self._name(path))
        settings = ContentSettings(content_type=content_type)
        try:
            if etag is None:
                result = blob.upload_blob(data, overwrite=False, content_settings=settings)
            else:
                result = blob.upload_blob(
                    data,
                    overwrite=True,
                    content_settings=settings,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        except ResourceNotFoundError as exc:
            # The storage SDK sets error_code on the exception at runtime; azure-core does not declare it.
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise
            return None  # If-Match on a blob deleted meanwhile
        return str(result["etag"])

    def get_with_etag(self, path: str) -> tuple[bytes, str] | None:
        try:
            downloader = self.container.download_blob(self._name(path))
        except ResourceNotFoundError:
            return None
        # The SDK pins any later chunk GETs to the first response's ETag, so data and etag agree.
        return downloader.readall(), str(downloader.properties.etag)
