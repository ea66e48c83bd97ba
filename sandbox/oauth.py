"""The OAuth2 authorization server (``/oauth2/default/v1``), playing both CC's server and the consenting user.

Grants: authorization code (optionally with PKCE), refresh token (rotating or long-lived) and device
code. There is no client-credentials grant, as on the real server [DOC-AUTH].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from werkzeug.datastructures import MultiDict
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.limits import SlidingWindow
from sandbox.replies import json_reply, oauth_error

KNOWN_SCOPES = frozenset(
    {"account_read", "account_update", "contact_data", "campaign_data", "offline_access", "openid"}
)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
API_AUDIENCE = "https://api.cc.email/v3"
INVALID_REFRESH = "The refresh token is invalid or expired."
INVALID_CODE = "The authorization code is invalid or has expired."
INVALID_CLIENT = "Client authentication failed. Either the client or the client credentials are invalid."


@dataclass
class Grant:
    """One authorization by "the user" of one app; refresh tokens belong to a grant."""

    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    public: bool
    refresh_token: str | None = None
    last_used: float = 0.0


@dataclass
class AccessToken:
    """What the API needs to know about a bearer token."""

    client_id: str
    grant_id: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class _AuthCode:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    expires_at: float
    used: bool = False


@dataclass
class _DeviceAuth:
    device_code: str
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    approved: bool | None = None  # None = waiting for the user, False = denied
    used: bool = False


@dataclass
class _Store:
    grants: dict[str, Grant] = field(default_factory=dict)
    refresh_index: dict[str, str] = field(default_factory=dict)  # refresh token -> grant_id
    access: dict[str, AccessToken] = field(default_factory=dict)
    codes: dict[str, _AuthCode] = field(default_factory=dict)
    devices: dict[str, _DeviceAuth] = field(default_factory=dict)  # device_code -> auth


class OAuthServer:
    """Token bookkeeping plus the four OAuth endpoints, each a ``Request -> Response`` method."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.issuer = "http://127.0.0.1/oauth2/default"
        self.root_url = "http://127.0.0.1"
        self._lock = threading.RLock()
        self._s = _Store()
        self._token_rate = SlidingWindow(config.token_requests_per_second)

    # -- Python-side helpers (seeding) -------------------------------------------------------------
    def issue_refresh_token(self, client_id: str, scope: str) -> str:
        """As if the user had authorized ``client_id`` once with ``scope`` (must include offline_access)."""
        scopes = _split_scopes(scope)
        if client_id not in self.config.clients:
            raise ValueError("unknown client_id")
        if "offline_access" not in scopes:
            raise ValueError("a refresh token needs the offline_access scope")
        with self._lock:
            grant = self._new_grant(client_id, scopes, public=False)
            token = self._rotate_refresh(grant)
            assert token is not None
            return token

    def issue_access_token(self, client_id: str, scope: str) -> str:
        """An access token without going through the token endpoint (saves the 1 rps token budget)."""
        if client_id not in self.config.clients:
            raise ValueError("unknown client_id")
        with self._lock:
            grant = self._new_grant(client_id, _split_scopes(scope), public=False)
            return self._new_access_token(grant)

    def authenticate(self, bearer: str) -> AccessToken | None:
        """The live access token record for ``bearer``, or None if unknown or expired."""
        with self._lock:
            token = self._s.access.get(bearer)
            if token is None or token.expires_at <= self.clock.time():
                return None
            return token

    def expire_access_tokens(self) -> int:
        """Fault switch: every access token expires now."""
        now = self.clock.time()
        with self._lock:
            live = [t for t in self._s.access.values() if t.expires_at > now]
            for token in live:
                token.expires_at = now
            return len(live)

    def approve_device(self, user_code: str, approve: bool = True) -> None:
        """The user enters ``user_code`` and approves (or denies) the device."""
        wanted = _norm_user_code(user_code)
        with self._lock:
            for auth in self._s.devices.values():
                if auth.user_code == wanted:
                    auth.approved = approve
                    return
        raise KeyError("unknown user_code")

    # -- persistence -------------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Grants and their refresh tokens, so a restarted sandbox still honours stored tokens."""
        with self._lock:
            return {
                "grants": [
                    {
                        "grant_id": g.grant_id,
                        "client_id": g.client_id,
                        "scopes": list(g.scopes),
                        "public": g.public,
                        "refresh_token": g.refresh_token,
                        "last_used": g.last_used,
                    }
                    for g in self._s.grants.values()
                ]
            }

    def load(self, data: Mapping[str, Any]) -> None:
        """Inverse of ``dump``."""
        with self._lock:
            for item in data.get("grants", []):
                grant = Grant(
                    grant_id=item["grant_id"],
                    client_id=item["client_id"],
                    scopes=tuple(item["scopes"]),
                    public=bool(item["public"]),
                    refresh_token=item.get("refresh_token"),
                    last_used=float(item.get("last_used", 0.0)),
                )
                self._s.grants[grant.grant_id] = grant
                if grant.refresh_token:
                    self._s.refresh_index[grant.refresh_token] = grant.grant_id

    # -- HTTP endpoints ----------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response:
        """GET /authorize: the sandbox user consents at once and is sent back with a code."""
        args = request.args
        client_id = args.get("client_id", "")
        redirect_uri = args.get("redirect_uri", "")
        if client_id not in self.config.clients:
            return oauth_error(400, "invalid_client", "The client_id is not registered.")
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            return oauth_error(400, "invalid_request", "redirect_uri must be an absolute http(s) URL.")
        state = args.get("state")

        def back(**params: str) -> Response:
            if state is not None:
                params["state"] = state
            sep = "&" if "?" in redirect_uri else "?"
            return redirect(redirect_uri + sep + urlencode(params), code=302)

        if args.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="response_type must be code")
        scopes = _split_scopes(args.get("scope", ""))
        if not scopes or not set(scopes) <= KNOWN_SCOPES:
            return back(error="invalid_scope", error_description="The requested scope is invalid.")
        challenge = args.get("code_challenge")
        if challenge is not None and args.get("code_challenge_method", "S256") != "S256":
            return back(error="invalid_request", error_description="code_challenge_method must be S256")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._s.codes[code] = _AuthCode(
                client_id, redirect_uri, scopes, challenge, self.clock.time() + self.config.auth_code_ttl
            )
        return back(code=code)

    def device_authorize(self, request: Request) -> Response:
        """POST /device/authorize: start the device flow."""
        form = _params(request)
        client_id = form.get("client_id", "")
        if client_id not in self.config.clients:
            return oauth_error(401, "invalid_client", INVALID_CLIENT)
        scopes = _split_scopes(form.get("scope", ""))
        if not scopes or not set(scopes) <= KNOWN_SCOPES:
            return oauth_error(400, "invalid_scope", "The requested scope is invalid.")
        device_code = secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
        with self._lock:
            self._s.devices[device_code] = _DeviceAuth(
                device_code,
                user_code,
                client_id,
                scopes,
                self.clock.time() + self.config.device_code_ttl,
                approved=True if self.config.auto_approve_devices else None,
            )
        verify = f"{self.root_url}/activate"
        return json_reply(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verify,
                "verification_uri_complete": f"{verify}?user_code={user_code}",
                "expires_in": math.ceil(self.config.device_code_ttl),
                "interval": self.config.device_poll_interval,
            },
            {"Cache-Control": "no-store"},
        )

    def activate(self, request: Request) -> Response:
        """GET /activate?user_code=...: the page a person would open; visiting it approves the device."""
        try:
            self.approve_device(request.args.get("user_code", ""))
        except KeyError:
            return Response("Unknown code.\n", status=404, content_type="text/plain")
        return Response("Device approved. You can close this window.\n", content_type="text/plain")

    def token(self, request: Request) -> Response:
        """POST /token for all grants. Parameters may come in the form body or the query string
        (CC's own examples use the query string; most clients use the body)."""
        form = _params(request)
        client_id, secret = _client_credentials(request, form)
        if not self._token_rate.allow(client_id or "-", self.clock.time()):
            # Undocumented shape: we answer in the OAuth error format; clients should key on the 429.
            return oauth_error(429, "too_many_requests", "Too Many Requests")
        if not client_id or client_id not in self.config.clients:
            return oauth_error(401, "invalid_client", INVALID_CLIENT)
        expected = self.config.clients[client_id]
        if secret is not None and not hmac.compare_digest(secret, expected):
            return oauth_error(401, "invalid_client", INVALID_CLIENT)
        authenticated = secret is not None
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._code_grant(form, client_id, authenticated)
        if grant_type == "refresh_token":
            return self._refresh_grant(form, client_id, authenticated)
        if grant_type == DEVICE_GRANT:
            return self._device_grant(form, client_id)
        if not grant_type:
            return oauth_error(400, "invalid_request", "The grant_type parameter is required.")
        return oauth_error(400, "unsupported_grant_type", f"The grant type '{grant_type}' is not supported.")

    # -- grants ------------------------------------------------------------------------------------
    def _code_grant(self, form: MultiDict[str, str], client_id: str, authenticated: bool) -> Response:
        code = form.get("code", "")
        verifier = form.get("code_verifier")
        now = self.clock.time()
        with self._lock:
            auth = self._s.codes.get(code)
            if auth is None or auth.used or auth.expires_at <= now or auth.client_id != client_id:
                return oauth_error(400, "invalid_grant", INVALID_CODE)
            auth.used = True  # single use: a failed redemption burns the code too
            if form.get("redirect_uri", "") != auth.redirect_uri:
                return oauth_error(400, "invalid_grant", "The redirect_uri does not match the authorization.")
            if auth.challenge is None:
                if not authenticated:  # confidential flow: the secret is required
                    return oauth_error(401, "invalid_client", INVALID_CLIENT)
            elif verifier is None or _s256(verifier) != auth.challenge:
                return oauth_error(400, "invalid_grant", "PKCE verification failed.")
            grant = self._new_grant(client_id, auth.scopes, public=auth.challenge is not None)
            return self._token_reply(grant)

    def _refresh_grant(self, form: MultiDict[str, str], client_id: str, authenticated: bool) -> Response:
        presented = form.get("refresh_token", "")
        now = self.clock.time()
        with self._lock:
            grant_id = self._s.refresh_index.get(presented)
            grant = self._s.grants.get(grant_id) if grant_id else None
            if (
                grant is None
                or grant.client_id != client_id
                or grant.refresh_token != presented
                or now - grant.last_used > self.config.refresh_token_idle_ttl
            ):
                return oauth_error(400, "invalid_grant", INVALID_REFRESH)
            if not grant.public and not authenticated:
                return oauth_error(401, "invalid_client", INVALID_CLIENT)
            asked = _split_scopes(form.get("scope", ""))
            if asked and not set(asked) <= set(grant.scopes):
                return oauth_error(400, "invalid_scope", "The requested scope exceeds the granted scope.")
            return self._token_reply(grant)

    def _device_grant(self, form: MultiDict[str, str], client_id: str) -> Response:
        now = self.clock.time()
        with self._lock:
            auth = self._s.devices.get(form.get("device_code", ""))
            if auth is None or auth.used or auth.client_id != client_id:
                return oauth_error(400, "invalid_grant", "The device code is invalid.")
            if auth.expires_at <= now:
                return oauth_error(400, "expired_token", "The device code has expired.")
            if auth.approved is None:
                return oauth_error(400, "authorization_pending", "The device authorization is pending.")
            if auth.approved is False:
                return oauth_error(400, "access_denied", "The user denied the request.")
            auth.used = True
            grant = self._new_grant(client_id, auth.scopes, public=True)
            return self._token_reply(grant)

    # -- token minting (caller holds the lock) -----------------------------------------------------
    def _new_grant(self, client_id: str, scopes: tuple[str, ...], *, public: bool) -> Grant:
        grant = Grant(str(uuid.uuid4()), client_id, scopes, public, last_used=self.clock.time())
        self._s.grants[grant.grant_id] = grant
        return grant

    def _rotate_refresh(self, grant: Grant) -> str | None:
        """Rotating: a new token and every earlier one of the grant dies. Long-lived: the same token."""
        if "offline_access" not in grant.scopes:
            return None
        grant.last_used = self.clock.time()
        if grant.refresh_token and not self.config.rotate_refresh_tokens:
            return grant.refresh_token
        if grant.refresh_token:
            self._s.refresh_index.pop(grant.refresh_token, None)
        grant.refresh_token = secrets.token_urlsafe(32)
        self._s.refresh_index[grant.refresh_token] = grant.grant_id
        return grant.refresh_token

    def _new_access_token(self, grant: Grant) -> str:
        now = self.clock.time()
        token = _jwt_like(
            {
                "ver": 1,
                "jti": "AT." + secrets.token_urlsafe(16),
                "iss": self.issuer,
                "aud": API_AUDIENCE,
                "iat": int(now),
                "exp": int(now + self.config.access_token_ttl),
                "cid": grant.client_id,
                "uid": grant.grant_id,
                "scp": list(grant.scopes),
                "sub": "sandbox-user",
            }
        )
        self._s.access[token] = AccessToken(
            grant.client_id, grant.grant_id, grant.scopes, now + self.config.access_token_ttl
        )
        return token

    def _token_reply(self, grant: Grant) -> Response:
        body: dict[str, Any] = {
            "token_type": "Bearer",
            # Relative seconds, as every client treats it (the spec's "timestamp" wording is a CONFLICT).
            "expires_in": math.ceil(self.config.access_token_ttl),
            "access_token": self._new_access_token(grant),
            "scope": " ".join(grant.scopes),
        }
        refresh = self._rotate_refresh(grant)
        if refresh is not None:
            body["refresh_token"] = refresh
        return json_reply(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})


# -- helpers ---------------------------------------------------------------------------------------
def _params(request: Request) -> MultiDict[str, str]:
    merged: MultiDict[str, str] = MultiDict(request.args)
    if request.mimetype == "application/x-www-form-urlencoded":
        for key, value in request.form.items(multi=True):
            merged.add(key, value)
    return merged


def _client_credentials(request: Request, form: MultiDict[str, str]) -> tuple[str | None, str | None]:
    """Basic ``client_id:secret`` (or just ``client_id`` for PKCE/device clients), else form client_id."""
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, sep, secret = decoded.partition(":")
        return client_id, (secret if sep and secret else None)
    return form.get("client_id"), form.get("client_secret")


def _split_scopes(scope: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in scope.replace("+", " ").split() if s))


def _norm_user_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_like(claims: dict[str, Any]) -> str:
    """A JWT-shaped token a client can decode (e.g. to read ``exp``); the signature is random bytes, so
    do not verify it. The server itself treats the token as opaque."""
    header = {"kid": "sandbox-unsigned", "alg": "RS256", "typ": "JWT"}
    return ".".join((_b64(orjson.dumps(header)), _b64(orjson.dumps(claims)), _b64(secrets.token_bytes(32))))
