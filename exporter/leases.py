"""Mutual exclusion across instances with Azure Blob leases.

Used around the OAuth token refresh: Constant Contact's token endpoint allows one request per second and
rotating refresh tokens are single-use, so exactly one instance may refresh at a time; the others wait
for the lease and then re-read the token the winner stored.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import ContainerClient

from .errors import TransientApiError

log = logging.getLogger(__name__)


class BlobLeaseLock:
    """``with lock.hold(): ...`` holds a lease on one blob (created empty on first use)."""

    def __init__(
        self,
        container: ContainerClient,
        blob: str,
        *,
        lease_seconds: int = 30,
        wait_seconds: float = 90.0,
        poll_seconds: float = 0.2,
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self._blob = container.get_blob_client(blob)
        self._container = container
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._poll = poll_seconds

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._ensure_blob()
        deadline = time.monotonic() + self._wait_seconds
        while True:
            try:
                lease = self._blob.acquire_lease(lease_duration=self._lease_seconds)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409 or time.monotonic() > deadline:
                    raise TransientApiError(
                        f"could not acquire the lease on {self._blob.blob_name}"
                    ) from None
                time.sleep(self._poll * (0.5 + random.random()))
        try:
            yield
        finally:
            try:
                lease.release()
            except HttpResponseError:  # expired meanwhile: another holder may have it now, which is fine
                log.warning("lease on %s had expired before release", self._blob.blob_name)

    def _ensure_blob(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        with contextlib.suppress(ResourceExistsError, HttpResponseError):
            self._blob.upload_blob(b"", overwrite=False)
