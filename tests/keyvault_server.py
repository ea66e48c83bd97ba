"""A local HTTPS server that speaks the Key Vault secrets REST protocol, for tests.

No Key Vault emulator exists, and a mock of ``SecretClient`` would hide exactly what matters: the 401
challenge handshake, version ids, soft delete and its poller, paging, throttling. So tests run the real
``azure-keyvault-secrets`` SDK against this server instead.

    with LocalKeyVault() as vault:
        client = SecretClient(vault.vault_url, vault.credential,
                              connection_verify=vault.ca_bundle_path,   # trust the throwaway CA
                              verify_challenge_resource=False)         # see below
        client.set_secret("cc-client-id", "abc")
        vault.requests      # journal: method, path, query, Authorization present?, status
        vault.secrets       # {name: [SecretVersion, ...]} oldest first

(``vault.secret_client(**kwargs)`` builds exactly that client.)

Two client settings are needed, and both are deliberate:

* TLS is real: the server's certificate is issued by a per-instance ``trustme`` CA whose PEM is at
  ``ca_bundle_path``. Pass ``connection_verify=vault.ca_bundle_path`` to the client, or set
  ``REQUESTS_CA_BUNDLE`` to it (azure-core's requests transport honours it because it passes
  ``verify=True`` and ``trust_env`` is on). ``SSL_CERT_FILE`` does not work: requests verifies against
  certifi's bundle, not OpenSSL's default paths.
* The SDK checks that the challenge's ``resource`` (``https://vault.azure.net``) is a parent domain of the
  vault host. ``127.0.0.1`` is not ``*.vault.azure.net`` (and no ``*.localhost`` name resolves here), so the
  client needs ``verify_challenge_resource=False``. Without it the SDK raises ``ValueError`` after the
  first, unauthenticated request and never sends the token. Production clients keep the default.

Protocol implemented (api-version required on every request, names ``[0-9a-zA-Z-]{1,127}``, compared
case-insensitively like Key Vault does):

* any request without ``Authorization: Bearer <token>`` -> 401 with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``; a wrong token -> the same 401 (the SDK then gives up)
* ``PUT /secrets/{name}`` new version; ``PATCH /secrets/{name}/{version}`` attributes, content type, tags
* ``GET /secrets/{name}[/]`` latest, ``GET /secrets/{name}/{version}``; 404 ``SecretNotFound``;
  403 ``Forbidden`` for a disabled secret
* ``GET /secrets``, ``GET /secrets/{name}/versions``, ``GET /deletedsecrets``: pages of ``maxresults``
  (default 25) linked by ``nextLink``
* ``DELETE /secrets/{name}`` soft delete -> DeletedSecretBundle (recoveryId, deletedDate,
  scheduledPurgeDate); the name cannot be set again (409) until it is purged or recovered
* ``GET /deletedsecrets/{name}`` (404 for ``delete_delay_polls`` polls first, as Key Vault's deletion is
  not instantaneous; purging meanwhile is a 409), ``DELETE /deletedsecrets/{name}`` purge (204),
  ``POST /deletedsecrets/{name}/recover``
* ``fail_next(status, times, retry_after)``: the next authenticated requests get that error instead
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

import trustme
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

NAME_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
MAX_NAME_LENGTH = 127
MAX_VALUE_BYTES = 25 * 1024  # Key Vault's documented limit for a secret value
MAX_PAGE_SIZE = 25  # Key Vault's own default and maximum for maxresults
DEFAULT_TENANT = "00000000-1111-2222-3333-444444444444"  # made up: no real tenant is ever contacted
AUTHORITY = "https://login.microsoftonline.com"
VAULT_RESOURCE = "https://vault.azure.net"
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90

_NOT_FOUND_HINT = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


def valid_name(name: str) -> bool:
    """Key Vault's rule for object names: 1-127 ASCII letters, digits and dashes."""
    return 0 < len(name) <= MAX_NAME_LENGTH and all(c in NAME_ALPHABET for c in name)


# --------------------------------------------------------------------------------------------- credential


@dataclass(frozen=True)
class TokenCall:
    """One request for a token, as the SDK made it (scopes and tenant come from the parsed challenge)."""

    scopes: tuple[str, ...]
    tenant_id: str | None
    claims: str | None
    enable_cae: bool


class StaticTokenCredential:
    """A TokenCredential that always returns one fixed bearer token, the one the local vault accepts.

    Implements both azure-core protocols (``TokenCredential.get_token`` and ``SupportsTokenInfo``) so any
    SDK client takes it; ``calls`` records what each token request asked for, never the token itself.
    """

    def __init__(self, token: str, *, lifetime: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self.calls: list[TokenCall] = []

    def __repr__(self) -> str:  # never show the token, e.g. in pytest's assertion output
        return f"StaticTokenCredential(calls={len(self.calls)})"

    def _record(self, scopes: tuple[str, ...], tenant_id: str | None, claims: str | None, cae: bool) -> None:
        with self._lock:
            self.calls.append(TokenCall(scopes, tenant_id, claims, cae))

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """The fixed token, valid for ``lifetime`` seconds from now."""
        self._record(scopes, tenant_id, claims, enable_cae)
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """The fixed token; azure-core prefers this method when a credential has it."""
        opts = options or {}
        self._record(scopes, opts.get("tenant_id"), opts.get("claims"), bool(opts.get("enable_cae", False)))
        return AccessTokenInfo(self._token, int(time.time()) + self._lifetime)

    def close(self) -> None:
        """Nothing to release (part of the SupportsTokenInfo protocol)."""

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class SecretVersion:
    """One stored version of a secret (times are Unix seconds, as Key Vault reports them)."""

    version: str
    value: str
    content_type: str | None
    tags: Mapping[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int


@dataclass(frozen=True)
class RecordedRequest:
    """One request the vault received. Whether it carried Authorization is kept; the token never is."""

    method: str
    path: str  # as sent, still percent-encoded
    query: Mapping[str, str]
    has_authorization: bool
    status: int


@dataclass
class _Secret:
    name: str  # as first created; lookups are case-insensitive
    versions: list[SecretVersion] = field(default_factory=list)


@dataclass
class _DeletedSecret:
    secret: _Secret
    deleted_date: int
    scheduled_purge_date: int
    polls_until_visible: int


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: str | None


class _KeyVaultError(Exception):
    """Turned into Key Vault's error body: {"error": {"code": ..., "message": ...}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_FAULT_CODES = {
    429: ("Throttled", "Request was not processed because too many requests were received. Retry later."),
    500: ("InternalServerError", "An unexpected error occurred."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Retry later."),
}


class _QuietHandler(WSGIRequestHandler):
    """No access log: the journal records requests, and pytest output stays readable."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# ------------------------------------------------------------------------------------------------- server


class LocalKeyVault:
    """An in-memory Key Vault (secrets only) on https://127.0.0.1:<free port>; a context manager."""

    def __init__(
        self,
        *,
        tenant_id: str = DEFAULT_TENANT,
        token: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        delete_delay_polls: int = 0,
    ) -> None:
        """``delete_delay_polls``: how many GET /deletedsecrets/{name} answer 404 after a delete before the
        deleted secret appears, as in a real vault (keep 0 unless a test wants the poller to wait)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        self.tenant_id = tenant_id
        self.page_size = page_size
        self.delete_delay_polls = delete_delay_polls
        self._token = token or secrets.token_urlsafe(32)
        self.credential = StaticTokenCredential(self._token)
        self._lock = threading.RLock()
        self._live: dict[str, _Secret] = {}
        self._deleted: dict[str, _DeletedSecret] = {}
        self._journal: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None
        self.port = 0
        self.ca_bundle_path = ""

    # ---------------------------------------------------------------- lifecycle

    @property
    def vault_url(self) -> str:
        """The vault's base URL, as a SecretClient wants it (no trailing slash)."""
        if not self.port:
            raise RuntimeError("LocalKeyVault is not running")
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> LocalKeyVault:
        """Issue a throwaway CA and server certificate, bind a free loopback port, serve in a thread."""
        if self._server is not None:
            return self
        ca = trustme.CA()
        server_cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_cert.configure_cert(context)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="local-keyvault-"))
        ca_path = self._tmpdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        self.ca_bundle_path = str(ca_path)

        server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler, ssl_context=context
        )
        # Clients keep idle keep-alive connections open; closing the server must not wait for them.
        server.block_on_close = False  # type: ignore[attr-defined]
        self._server = server
        self.port = server.port
        self._forget_cached_challenge()
        self._thread = threading.Thread(
            target=server.serve_forever,
            name=f"LocalKeyVault:{self.port}",
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delete the CA file (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> LocalKeyVault:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _forget_cached_challenge(self) -> None:
        # The SDK caches challenges process-wide by host:port. A port reused from an earlier LocalKeyVault
        # would otherwise skip the challenge handshake, which tests assert on.
        with contextlib.suppress(ImportError):
            from azure.keyvault.secrets._shared import http_challenge_cache

            http_challenge_cache.remove_challenge_for_url(self.vault_url)

    def client_kwargs(self) -> dict[str, Any]:
        """What a SecretClient needs, beyond URL and credential, to talk to this vault."""
        return {"connection_verify": self.ca_bundle_path, "verify_challenge_resource": False}

    def secret_client(self, **kwargs: Any) -> SecretClient:
        """A real SecretClient for this vault; ``kwargs`` (e.g. retry settings) override the defaults."""
        from azure.keyvault.secrets import SecretClient

        options = {**self.client_kwargs(), **kwargs}
        return SecretClient(self.vault_url, options.pop("credential", self.credential), **options)

    # ---------------------------------------------------------------- inspection and control

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._journal)

    def clear_requests(self) -> None:
        """Forget the journal, so a test can look at just what follows."""
        with self._lock:
            self._journal.clear()

    @property
    def secrets(self) -> dict[str, list[SecretVersion]]:
        """Live secrets: name -> versions, oldest first (a snapshot)."""
        with self._lock:
            return {s.name: list(s.versions) for s in self._live.values()}

    @property
    def deleted_secrets(self) -> dict[str, list[SecretVersion]]:
        """Soft-deleted secrets not yet purged or recovered (a snapshot)."""
        with self._lock:
            return {d.secret.name: list(d.secret.versions) for d in self._deleted.values()}

    def seed(self, name: str, value: str, *, content_type: str | None = None) -> SecretVersion:
        """Add a version directly, without HTTP: arranging state for tests of other code."""
        if not valid_name(name):
            raise ValueError(f"invalid secret name {name!r}")
        with self._lock:
            return self._add_version(name, value, content_type, None, {})

    def fail_next(self, status: int, times: int = 1, retry_after: float | str | None = None) -> None:
        """Answer the next ``times`` authenticated requests with ``status`` (e.g. 429, 500, 503).

        Faults apply after authentication, so the challenge handshake never consumes one. ``retry_after``
        (seconds) becomes a Retry-After header, which azure-core's retry policy honours.
        """
        if not 400 <= status <= 599 or status == 401:
            raise ValueError("fail_next takes a 4xx/5xx status other than 401")
        header = None if retry_after is None else str(retry_after)
        with self._lock:
            self._faults.extend(_Fault(status, header) for _ in range(times))

    @property
    def pending_faults(self) -> int:
        """Faults armed by fail_next and not yet served."""
        with self._lock:
            return len(self._faults)

    # ---------------------------------------------------------------- HTTP

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data()  # always drain, so a keep-alive connection stays in sync
        raw_path = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(request.path))
        raw_path = raw_path.split("?", 1)[0]
        query = dict(parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True))
        authorization = request.headers.get("Authorization")
        try:
            response = self._handle(request.method, raw_path, query, authorization, body)
        except _KeyVaultError as exc:
            response = self._error(exc.status, exc.code, exc.message)
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        response.headers["x-ms-keyvault-service-version"] = "local"
        with self._lock:
            self._journal.append(
                RecordedRequest(
                    request.method, raw_path, query, authorization is not None, response.status_code
                )
            )
        return response(environ, start_response)

    def _error(self, status: int, code: str, message: str) -> Response:
        return self._json({"error": {"code": code, "message": message}}, status)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> Response:
        return Response(json.dumps(payload), status=status, content_type="application/json; charset=utf-8")

    def _challenge(self, message: str) -> Response:
        response = self._error(401, "Unauthorized", message)
        response.headers["WWW-Authenticate"] = (
            f'Bearer authorization="{AUTHORITY}/{self.tenant_id}", resource="{VAULT_RESOURCE}"'
        )
        return response

    def _handle(
        self, method: str, raw_path: str, query: dict[str, str], authorization: str | None, body: bytes
    ) -> Response:
        if authorization is None:
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self._token):
            return self._challenge("AKV10032: Invalid issuer. The access token is not valid for this vault.")
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            code, message = _FAULT_CODES.get(fault.status, ("Error", f"Injected failure {fault.status}."))
            response = self._error(fault.status, code, message)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if not query.get("api-version"):
            raise _KeyVaultError(400, "BadParameter", "The api-version query parameter is missing.")

        segments = [unquote(s) for s in raw_path.strip("/").split("/")]
        if raw_path.endswith("/") and len(segments) == 2:
            segments.append("")  # GET /secrets/{name}/ means "latest version"
        collection, rest = segments[0], segments[1:]
        if rest and not valid_name(rest[0]):
            raise _KeyVaultError(400, "BadParameter", f"The request URI contains an invalid name: {rest[0]}")
        with self._lock:
            if collection == "secrets":
                return self._secrets_route(method, rest, query, body)
            if collection == "deletedsecrets":
                return self._deleted_route(method, rest, query)
        raise _KeyVaultError(404, "NotFound", f"No such resource: {raw_path}")

    def _secrets_route(self, method: str, rest: list[str], query: dict[str, str], body: bytes) -> Response:
        route = (method, len(rest))
        if route == ("GET", 0):
            items = [self._item(s, None) for s in sorted(self._live.values(), key=lambda s: s.name.lower())]
            return self._page(items, "secrets", query)
        if route == ("PUT", 1):
            return self._set(rest[0], body)
        if route == ("DELETE", 1):
            return self._delete(rest[0])
        if route in (("GET", 1), ("GET", 2)) and (len(rest) == 1 or rest[1] != "versions"):
            secret = self._get_live(rest[0])
            version = self._find_version(secret, rest[1] if len(rest) == 2 else "")
            if not version.enabled:
                raise _KeyVaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
            return self._json(self._bundle(secret, version, with_value=True))
        if route == ("GET", 2):  # /secrets/{name}/versions
            secret = self._get_live(rest[0])
            items = [self._item(secret, v) for v in secret.versions]
            return self._page(items, f"secrets/{quote(secret.name)}/versions", query)
        if route == ("PATCH", 2):
            return self._update(rest[0], rest[1], body)
        raise _KeyVaultError(405, "MethodNotAllowed", f"{method} is not supported here.")

    def _deleted_route(self, method: str, rest: list[str], query: dict[str, str]) -> Response:
        route = (method, len(rest))
        if route == ("GET", 0):
            visible = [d for d in self._deleted.values() if d.polls_until_visible == 0]
            items = [self._deleted_item(d) for d in sorted(visible, key=lambda d: d.secret.name.lower())]
            return self._page(items, "deletedsecrets", query)
        if route == ("GET", 1):
            deleted = self._get_deleted(rest[0])
            if deleted.polls_until_visible > 0:  # still being deleted: not yet in the deleted collection
                deleted.polls_until_visible -= 1
                raise self._deleted_not_found(rest[0])
            return self._json(self._deleted_bundle(deleted))
        if route == ("DELETE", 1):
            deleted = self._get_deleted(rest[0])
            if deleted.polls_until_visible > 0:
                raise _KeyVaultError(409, "Conflict", f"Secret {rest[0]} is currently being deleted.")
            del self._deleted[rest[0].lower()]
            return Response(status=204)
        if route == ("POST", 2) and rest[1] == "recover":
            deleted = self._get_deleted(rest[0])
            if deleted.polls_until_visible > 0:
                raise _KeyVaultError(409, "Conflict", f"Secret {rest[0]} is currently being deleted.")
            del self._deleted[rest[0].lower()]
            self._live[rest[0].lower()] = deleted.secret
            return self._json(self._bundle(deleted.secret, deleted.secret.versions[-1], with_value=False))
        raise _KeyVaultError(405, "MethodNotAllowed", f"{method} is not supported here.")

    # ---------------------------------------------------------------- operations (lock held)

    def _set(self, name: str, body: bytes) -> Response:
        params = self._parse_body(body)
        value = params.get("value")
        if not isinstance(value, str):
            raise _KeyVaultError(400, "BadParameter", "Property value is required.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise _KeyVaultError(400, "BadParameter", "Secret value is too large.")
        if name.lower() in self._deleted:
            raise _KeyVaultError(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                "reused; in this state, the secret can only be recovered or purged.",
            )
        attributes = params.get("attributes") or {}
        content_type = params.get("contentType")
        version = self._add_version(
            name,
            value,
            content_type if isinstance(content_type, str) else None,
            params.get("tags"),
            attributes,
        )
        return self._json(self._bundle(self._live[name.lower()], version, with_value=True))

    def _add_version(
        self, name: str, value: str, content_type: str | None, tags: Any, attributes: Mapping[str, Any]
    ) -> SecretVersion:
        now = int(time.time())
        secret = self._live.setdefault(name.lower(), _Secret(name))
        version = SecretVersion(
            version=uuid.uuid4().hex,
            value=value,
            content_type=content_type,
            tags=dict(tags) if isinstance(tags, dict) else None,
            enabled=bool(attributes.get("enabled", True)),
            not_before=attributes.get("nbf"),
            expires=attributes.get("exp"),
            created=now,
            updated=now,
        )
        secret.versions.append(version)
        return version

    def _update(self, name: str, version_id: str, body: bytes) -> Response:
        params = self._parse_body(body)
        secret = self._get_live(name)
        version = self._find_version(secret, version_id)
        attributes = params.get("attributes") or {}
        changes: dict[str, Any] = {"updated": int(time.time())}
        if "contentType" in params:
            changes["content_type"] = params["contentType"]
        if "tags" in params:
            changes["tags"] = params["tags"]
        for wire, attr in (("enabled", "enabled"), ("nbf", "not_before"), ("exp", "expires")):
            if wire in attributes:
                changes[attr] = attributes[wire]
        updated = dataclasses.replace(version, **changes)
        secret.versions[secret.versions.index(version)] = updated
        return self._json(self._bundle(secret, updated, with_value=False))

    def _delete(self, name: str) -> Response:
        secret = self._get_live(name)
        del self._live[name.lower()]
        now = int(time.time())
        deleted = _DeletedSecret(secret, now, now + RECOVERABLE_DAYS * 86400, self.delete_delay_polls)
        self._deleted[name.lower()] = deleted
        return self._json(self._deleted_bundle(deleted))

    # ---------------------------------------------------------------- lookups and wire shapes (lock held)

    @staticmethod
    def _parse_body(body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise _KeyVaultError(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise _KeyVaultError(400, "BadParameter", "The request body must be a JSON object.")
        return params

    def _get_live(self, name: str) -> _Secret:
        secret = self._live.get(name.lower())
        if secret is None:
            raise _KeyVaultError(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. {_NOT_FOUND_HINT}",
            )
        return secret

    @staticmethod
    def _find_version(secret: _Secret, version_id: str) -> SecretVersion:
        if not version_id:
            return secret.versions[-1]
        for version in secret.versions:
            if version.version == version_id.lower():
                return version
        raise _KeyVaultError(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {secret.name}/{version_id} was not found in this key vault. "
            f"{_NOT_FOUND_HINT}",
        )

    @staticmethod
    def _deleted_not_found(name: str) -> _KeyVaultError:
        return _KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")

    def _get_deleted(self, name: str) -> _DeletedSecret:
        deleted = self._deleted.get(name.lower())
        if deleted is None:
            raise self._deleted_not_found(name)
        return deleted

    @staticmethod
    def _attributes(version: SecretVersion) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": version.enabled,
            "created": version.created,
            "updated": version.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": RECOVERABLE_DAYS,
        }
        if version.not_before is not None:
            attributes["nbf"] = version.not_before
        if version.expires is not None:
            attributes["exp"] = version.expires
        return attributes

    def _secret_id(self, secret: _Secret, version: SecretVersion | None) -> str:
        base = f"{self.vault_url}/secrets/{secret.name}"
        return f"{base}/{version.version}" if version is not None else base

    def _bundle(self, secret: _Secret, version: SecretVersion, *, with_value: bool) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "id": self._secret_id(secret, version),
            "attributes": self._attributes(version),
        }
        if with_value:
            bundle["value"] = version.value
        if version.content_type is not None:
            bundle["contentType"] = version.content_type
        if version.tags is not None:
            bundle["tags"] = dict(version.tags)
        return bundle

    def _item(self, secret: _Secret, version: SecretVersion | None) -> dict[str, Any]:
        """A list entry: /secrets lists each secret by its latest version's attributes, without values."""
        shown = version if version is not None else secret.versions[-1]
        item = self._bundle(secret, shown, with_value=False)
        item["id"] = self._secret_id(secret, version)
        return item

    def _deleted_bundle(self, deleted: _DeletedSecret) -> dict[str, Any]:
        bundle = self._bundle(deleted.secret, deleted.secret.versions[-1], with_value=False)
        bundle.update(
            recoveryId=f"{self.vault_url}/deletedsecrets/{deleted.secret.name}",
            deletedDate=deleted.deleted_date,
            scheduledPurgeDate=deleted.scheduled_purge_date,
        )
        return bundle

    def _deleted_item(self, deleted: _DeletedSecret) -> dict[str, Any]:
        item = self._deleted_bundle(deleted)
        item["id"] = self._secret_id(deleted.secret, None)
        return item

    def _page(self, items: list[dict[str, Any]], path: str, query: dict[str, str]) -> Response:
        try:
            size = int(query.get("maxresults") or self.page_size)
            skiptoken = query.get("$skiptoken")
            start = int(base64.urlsafe_b64decode(skiptoken).decode()) if skiptoken else 0
        except (ValueError, binascii.Error):
            raise _KeyVaultError(400, "BadParameter", "Invalid maxresults or $skiptoken.") from None
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise _KeyVaultError(400, "BadParameter", f"maxresults must be between 1 and {MAX_PAGE_SIZE}.")
        end = start + size
        next_link = None
        if end < len(items):
            token = base64.urlsafe_b64encode(str(end).encode()).decode()
            next_link = (
                f"{self.vault_url}/{path}?api-version={query['api-version']}"
                f"&$skiptoken={quote(token)}&maxresults={size}"
            )
        return self._json({"value": items[start:end], "nextLink": next_link})
