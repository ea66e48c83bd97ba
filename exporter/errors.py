"""Exception hierarchy.

Split the way a loader has to act on it (after dlt and the Singer SDK): a *fatal* error aborts the run,
a *transient* one retries the request, a *row* problem is never an exception (it becomes a reject).
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ExporterError):
    """Bad usage or configuration: the run cannot start. The CLI exits 2 on it."""


class SegmentError(ExporterError):
    """A segment file cannot be read (bad encoding, no header, missing partition...).

    Raised before anything is sent, so a bad file is reported and never half-exported.
    """


class LimitExceededError(ExporterError):
    """The export is larger than a product limit (e.g. 1,000,000 profiles); nothing was sent."""


class ApiError(ExporterError):
    """An error answer from Constant Contact (or its OAuth server)."""

    def __init__(self, message: str, *, status: int | None = None, error_key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_key = error_key


class TransientApiError(ApiError):
    """Worth retrying the same request later: 5xx, connection reset, timeout, 429 throttled."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, error_key=error_key)
        self.retry_after = retry_after


class TerminalApiError(ApiError):
    """Retrying cannot help (400 validation, 403 privilege/scope, 404 list...): the run fails."""


class QuotaExceededError(ApiError):
    """The daily request quota is spent: stop sending, keep the checkpoint, resume after 00:00 UTC."""


class AuthorizationError(TerminalApiError):
    """The stored refresh token is invalid or expired: a person must authorize the connection again."""
