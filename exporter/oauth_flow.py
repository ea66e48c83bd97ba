"""Connecting a Constant Contact account: the OAuth2 authorization-code flow with PKCE, and the device flow.

Both end the same way: the refresh token (and the first access token) go to the secret store under the
connection's names, where exporter.tokens.TokenProvider finds them for every later run.

Authorization code (browser): :func:`authorize_url` builds the URL a person is sent to, with a random
``state`` and an S256 PKCE challenge; the verifier stays on our side (:class:`PendingStore`, in the state
container, single use, :data:`PENDING_TTL_SECONDS`). Constant Contact redirects back with ``code`` and
``state``; :func:`exchange_code` redeems the code at the token endpoint with HTTP Basic client
authentication, the redirect URI and the verifier.

Device flow (no browser on this machine): :func:`start_device` asks for a user code, a person enters it
at the verification URI on any device, :func:`poll_device` waits for the token at the given interval.

Tokens and codes are never logged; errors carry Constant Contact's error key and description only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from .errors import ConfigError
from .secrets import SecretNames, SecretStore
from .storage import ConditionalResultStore

SCOPES = "contact_data offline_access"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PENDING_PREFIX = "oauth/pending/"
PENDING_TTL_SECONDS = 600  # Constant Contact's codes live 5 minutes; a sign-in can take a while first


class OAuthFlowError(ConfigError):
    """The flow cannot complete (HTTP 400 unless ``status`` says otherwise); ``code`` is machine-readable."""

    def __init__(self, message: str, *, code: str = "authorization_failed", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) per RFC 7636: 64 random bytes, base64url without padding."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(
    oauth_base_url: str, *, client_id: str, redirect_uri: str, state: str, challenge: str
) -> str:
    """Constant Contact's authorize URL with our scopes, state and PKCE challenge."""
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": SCOPES,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{oauth_base_url.rstrip('/')}/authorize?{query}"


@dataclass(frozen=True)
class Pending:
    """An authorization in flight: which connection, the PKCE verifier, and who started it."""

    connection: str
    client_id: str
    verifier: str = field(repr=False)
    redirect_uri: str
    user: str
    expires_at: str

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= _iso(now)


class PendingStore:
    """Pending authorizations keyed by a hash of ``state`` (the state itself is not stored)."""

    def __init__(self, store: ConditionalResultStore, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    @staticmethod
    def _path(state: str) -> str:
        return f"{PENDING_PREFIX}{hashlib.sha256(state.encode()).hexdigest()}.json"

    def begin(self, *, connection: str, client_id: str, redirect_uri: str, user: str) -> tuple[str, str]:
        """Record a new authorization; returns (state, PKCE challenge)."""
        self._sweep()
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        expires = _iso(self._clock() + timedelta(seconds=PENDING_TTL_SECONDS))
        body = {
            "connection": connection,
            "client_id": client_id,
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "user": user,
            "expires_at": expires,
        }
        self._store.put_bytes_if(
            self._path(state), orjson.dumps(body), etag=None, content_type="application/json"
        )
        return state, challenge

    def peek(self, state: str) -> Pending | None:
        """The live pending authorization for ``state``, without using it up (None if unknown/expired)."""
        found = self._store.get_with_etag(self._path(state)) if state else None
        if found is None:
            return None
        data = orjson.loads(found[0])
        if data.get("used"):
            return None
        pending = Pending(**{k: str(data[k]) for k in Pending.__dataclass_fields__})
        return None if pending.expired(self._clock()) else pending

    def consume(self, state: str) -> Pending | None:
        """Use ``state`` up: only one caller ever gets it (a conditional write marks it used first)."""
        found = self._store.get_with_etag(self._path(state)) if state else None
        if found is None:
            return None
        raw, etag = found
        data = orjson.loads(raw)
        if data.get("used"):
            return None
        if (
            self._store.put_bytes_if(self._path(state), orjson.dumps({**data, "used": True}), etag=etag)
            is None
        ):
            return None  # someone else consumed it first
        self._store.delete(self._path(state))
        pending = Pending(**{k: str(data[k]) for k in Pending.__dataclass_fields__})
        return None if pending.expired(self._clock()) else pending

    def _sweep(self) -> None:
        """Forget authorizations nobody finished (few: one per abandoned sign-in)."""
        now = _iso(self._clock())
        for path in self._store.list(PENDING_PREFIX)[:50]:
            raw = self._store.get_bytes(path)
            try:
                expires = str(orjson.loads(raw or b"{}").get("expires_at", ""))
            except orjson.JSONDecodeError:
                expires = ""
            if expires <= now:
                self._store.delete(path)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float

    def __repr__(self) -> str:  # never show tokens, e.g. in a traceback or an assertion
        return f"Tokens(expires_at={self.expires_at})"


def exchange_code(
    http: httpx.Client,
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> Tokens:
    """Redeem an authorization code (Basic client authentication, PKCE verifier)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    body = _token_call(http, token_url, form, auth=(client_id, client_secret))
    return _tokens(body)


@dataclass(frozen=True)
class DeviceStart:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float


def start_device(http: httpx.Client, oauth_base_url: str, *, client_id: str) -> DeviceStart:
    """POST /device/authorize: a user code for a person to enter, and a device code to poll with."""
    url = f"{oauth_base_url.rstrip('/')}/device/authorize"
    try:
        response = http.post(
            url, data={"client_id": client_id, "scope": SCOPES}, headers={"Accept": "application/json"}
        )
    except httpx.TransportError as exc:
        raise OAuthFlowError(
            f"Constant Contact's device endpoint is unreachable: {type(exc).__name__}", status=502
        ) from None
    body = _json(response)
    if response.status_code != 200 or not body.get("device_code"):
        raise OAuthFlowError(_describe("device authorization", response.status_code, body))
    return DeviceStart(
        device_code=str(body["device_code"]),
        user_code=str(body.get("user_code", "")),
        verification_uri=str(body.get("verification_uri", "")),
        verification_uri_complete=body.get("verification_uri_complete"),
        interval=float(body.get("interval") or 5),
        expires_in=float(body.get("expires_in") or 600),
    )


def poll_device(
    http: httpx.Client,
    token_url: str,
    start: DeviceStart,
    *,
    client_id: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Tokens:
    """Poll the token endpoint until the person approves, denies, or the device code expires.

    ``slow_down`` adds 5 seconds to the interval (RFC 8628); a 429 from the token endpoint (1 request per
    second per app) adds one."""
    interval = max(1.0, start.interval)
    deadline = clock() + start.expires_in
    form = {"grant_type": DEVICE_GRANT, "client_id": client_id, "device_code": start.device_code}
    while clock() < deadline:
        sleep(interval)
        try:
            response = http.post(token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError:
            continue  # a blip while waiting for a person is not worth failing for
        body = _json(response)
        error = body.get("error")
        if response.status_code == 200:
            return _tokens(body)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if response.status_code == 429:
            interval += 1
            continue
        if error == "access_denied":
            raise OAuthFlowError("the person denied access on Constant Contact's page", code="access_denied")
        if error == "expired_token":
            break
        raise OAuthFlowError(_describe("device token", response.status_code, body))
    raise OAuthFlowError(
        "no one approved the device code in time (it expired, or the wait ran out); start again",
        code="expired_token",
    )


def store_tokens(secrets_store: SecretStore, names: SecretNames, tokens: Tokens) -> None:
    """Refresh token first (it is the one that matters), then the access token in TokenProvider's form."""
    secrets_store.set(names.refresh_token, tokens.refresh_token)
    secrets_store.set(
        names.access_token, json.dumps({"access_token": tokens.access_token, "expires_at": tokens.expires_at})
    )


REVOKED = "revoked"  # what a forgotten refresh token is overwritten with; Constant Contact refuses it


def forget_tokens(secrets_store: SecretStore, names: SecretNames) -> None:
    """Make the stored tokens unusable. Overwritten, not deleted: Key Vault keeps a deleted name reserved
    until it is purged, and the next authorization must be able to write it again."""
    secrets_store.set(names.refresh_token, REVOKED)
    secrets_store.set(names.access_token, json.dumps({"access_token": "", "expires_at": 0}))


# -- internals -------------------------------------------------------------------------------------


def _token_call(
    http: httpx.Client, token_url: str, form: dict[str, str], *, auth: tuple[str, str]
) -> dict[str, Any]:
    try:
        response = http.post(token_url, data=form, auth=auth, headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        raise OAuthFlowError(
            f"Constant Contact's token endpoint is unreachable: {type(exc).__name__}", status=502
        ) from None
    body = _json(response)
    if response.status_code == 200:
        return body
    error = body.get("error")
    if error == "invalid_grant":
        raise OAuthFlowError(
            "Constant Contact refused the authorization code (expired, already used, or issued for another "
            "redirect URI): start the authorization again",
            code="invalid_grant",
        )
    if error == "invalid_client" or response.status_code == 401:
        raise OAuthFlowError(
            "Constant Contact refused the client id/secret: check the connection's client id and the client "
            "secret stored for it",
            code="invalid_client",
        )
    status = 502 if response.status_code == 429 or response.status_code >= 500 else 400
    raise OAuthFlowError(_describe("token", response.status_code, body), status=status)


def _tokens(body: dict[str, Any]) -> Tokens:
    access = body.get("access_token")
    refresh = body.get("refresh_token")
    if not isinstance(access, str) or not access:
        raise OAuthFlowError("Constant Contact's token endpoint answered without an access token", status=502)
    if not isinstance(refresh, str) or not refresh:
        raise OAuthFlowError(
            "Constant Contact returned no refresh token: the application must allow refresh tokens and the "
            "offline_access scope",
            code="no_refresh_token",
        )
    try:
        expires_in = float(body.get("expires_in") or 0)
    except (TypeError, ValueError):
        expires_in = 0.0
    now = time.time()
    expires_at = expires_in if expires_in > 1_000_000_000 else now + (expires_in or 3600.0)
    return Tokens(access_token=access, refresh_token=refresh, expires_at=expires_at)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(what: str, status: int, body: dict[str, Any]) -> str:
    error = str(body.get("error") or body.get("error_key") or "")
    text = str(body.get("error_description") or body.get("error_message") or "")[:300]
    return f"Constant Contact's {what} endpoint answered {status} {error}: {text}".strip().rstrip(":")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
