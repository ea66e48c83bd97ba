"""OAuth2 access tokens for Constant Contact, refreshed with the refresh-token grant.

Constant Contact's refresh tokens may rotate: each refresh returns a new one and invalidates the old.
So the new refresh token is stored *before* the new access token is used (a crash in between must not
lose the only valid token), an answer without a refresh token keeps the old one, and only one refresher
runs at a time (a lock, which a blob lease replaces across instances). The access token itself is kept
in the secret store too, so other instances re-read it instead of refreshing again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed, wait_random

from .errors import ApiError, AuthorizationError, ConfigError, TransientApiError
from .secrets import SecretNames, SecretStore

log = logging.getLogger(__name__)

EXPIRY_MARGIN_SECONDS = 300.0  # refresh this long before the access token expires
TOKEN_MIN_INTERVAL_SECONDS = 1.1  # the token endpoint allows 1 request/second; keep a margin
TOKEN_ATTEMPTS = 3


class RefreshLock(Protocol):
    """Mutual exclusion for refreshing one connection's token (in-process here; a blob lease in Azure)."""

    def hold(self) -> contextlib.AbstractContextManager[None]: ...


class ThreadRefreshLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            yield


class TokenProvider:
    """Hands out a valid access token; refreshes it when it is about to expire or was refused."""

    def __init__(
        self,
        secrets: SecretStore,
        *,
        token_url: str,
        http: httpx.Client | None = None,
        names: SecretNames | None = None,
        lock: RefreshLock | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = secrets
        self._token_url = token_url
        self._http = http or httpx.Client(timeout=30.0)
        self._names = names or SecretNames()
        self._lock = lock or ThreadRefreshLock()
        self._clock = clock
        self._cached: tuple[str, float] | None = None
        self._last_request = 0.0
        self.refreshes = 0  # token requests made by this provider (for reports and tests)

    def access_token(self) -> str:
        """A token valid for at least EXPIRY_MARGIN_SECONDS."""
        if self._cached and self._fresh(self._cached[1]):
            return self._cached[0]
        stored = self._stored_access_token()
        if stored:
            return stored
        with self._lock.hold():
            stored = self._stored_access_token()  # another instance may have refreshed while we waited
            return stored or self._refresh()

    def invalidate(self, token: str) -> None:
        """Constant Contact answered 401 to ``token``: forget it everywhere, so the next call refreshes."""
        if self._cached and self._cached[0] == token:
            self._cached = None
        with self._lock.hold():
            raw = self._secrets.get(self._names.access_token)
            if raw and _parse_access(raw)[0] == token:
                # Overwrite rather than delete: Key Vault keeps a deleted name reserved until purged.
                self._secrets.set(self._names.access_token, json.dumps({"access_token": "", "expires_at": 0}))

    def _fresh(self, expires_at: float) -> bool:
        return expires_at - EXPIRY_MARGIN_SECONDS > self._clock()

    def _stored_access_token(self) -> str | None:
        raw = self._secrets.get(self._names.access_token)
        if not raw:
            return None
        token, expires_at = _parse_access(raw)
        if token and self._fresh(expires_at):
            self._cached = (token, expires_at)
            return token
        return None

    def _refresh(self) -> str:
        client_id = self._secrets.get(self._names.client_id)
        client_secret = self._secrets.get(self._names.client_secret)
        refresh_token = self._secrets.get(self._names.refresh_token)
        if not client_id:
            raise ConfigError(
                f"Constant Contact client id/secret not found (secrets {self._names.client_id!r}, "
                f"{self._names.client_secret!r}, or CC_CLIENT_ID and CC_CLIENT_SECRET with "
                "EXPORTER_SECRET_STORE=env); store your application's API key (and secret) first"
            )
        if not refresh_token:
            variable = self._names.refresh_token.upper().replace("-", "_")
            raise ConfigError(
                f"no refresh token stored (secret {self._names.refresh_token!r}, or {variable} with "
                "EXPORTER_SECRET_STORE=env): authorize the connection once"
            )
        try:
            body = self._token_request(client_id, client_secret, refresh_token)
        except AuthorizationError:
            # Another process may have rotated the token after we read it: use the newer one once.
            newer = self._secrets.get(self._names.refresh_token)
            if not newer or newer == refresh_token:
                raise
            refresh_token = newer
            body = self._token_request(client_id, client_secret, refresh_token)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise ApiError("the token endpoint answered without an access_token")
        new_refresh = body.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            self._secrets.set(self._names.refresh_token, new_refresh)  # before the access token is used
            if new_refresh != refresh_token and not getattr(self._secrets, "keeps_writes", True):
                log.warning(
                    "Constant Contact rotated the refresh token (%s); this secret store keeps the new one "
                    "only while this process runs, so the next run with the same value will be refused. "
                    "Use a Long Lived refresh token (the application's Refresh Token Type) with "
                    "EXPORTER_SECRET_STORE=env, or the file or keyvault store.",
                    self._names.refresh_token,
                )
        expires_at = _expiry(body.get("expires_in"), self._clock())
        self._secrets.set(
            self._names.access_token, json.dumps({"access_token": access, "expires_at": expires_at})
        )
        self._cached = (access, expires_at)
        return access

    def _token_request(
        self, client_id: str, client_secret: str | None, refresh_token: str
    ) -> dict[str, object]:
        """One refresh grant; a 429 or 5xx from the token endpoint (1 request/second) is retried briefly."""
        retrying = Retrying(
            stop=stop_after_attempt(TOKEN_ATTEMPTS),
            wait=wait_fixed(TOKEN_MIN_INTERVAL_SECONDS) + wait_random(0, 0.25),
            retry=retry_if_exception_type(TransientApiError),
            reraise=True,
        )
        return retrying(self._token_request_once, client_id, client_secret, refresh_token)

    def _token_request_once(
        self, client_id: str, client_secret: str | None, refresh_token: str
    ) -> dict[str, object]:
        wait = self._last_request + TOKEN_MIN_INTERVAL_SECONDS - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()
        self.refreshes += 1
        try:
            form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
            if client_secret:  # a confidential client (authorization code flow): Basic auth
                response = self._http.post(
                    self._token_url,
                    data=form,
                    auth=(client_id, client_secret),
                    headers={"Accept": "application/json"},
                )
            else:  # a public client (device flow, PKCE without a secret): client_id in the form
                response = self._http.post(
                    self._token_url,
                    data={**form, "client_id": client_id},
                    headers={"Accept": "application/json"},
                )
        except httpx.TransportError as exc:
            raise TransientApiError(f"token endpoint unreachable: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200 and isinstance(body, dict):
            log.info("access token refreshed")
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if error == "invalid_grant":
            raise AuthorizationError(
                "the stored refresh token is invalid or expired: authorize the connection again",
                status=response.status_code,
                error_key="invalid_grant",
            )
        if error == "invalid_client" or response.status_code == 401:
            raise AuthorizationError(
                "Constant Contact refused the client id/secret: check the application's API key and secret",
                status=response.status_code,
                error_key=str(error or "invalid_client"),
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientApiError(
                f"token endpoint answered {response.status_code}", status=response.status_code
            )
        raise ApiError(
            f"token endpoint answered {response.status_code} {error or ''}".strip(),
            status=response.status_code,
            error_key=str(error) if error else None,
        )


def _parse_access(raw: str) -> tuple[str, float]:
    try:
        data = json.loads(raw)
        return str(data["access_token"]), float(data["expires_at"])
    except (ValueError, KeyError, TypeError):
        return "", 0.0


def _expiry(expires_in: object, now: float) -> float:
    """Seconds from now, as Constant Contact sends it; the spec calls it an epoch timestamp, so accept both."""
    try:
        value = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return now + 3600.0
    return value if value > 1_000_000_000 else now + value
