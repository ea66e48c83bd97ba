"""Connections: one Constant Contact account (through one Constant Contact app) that exports may use.

What Customer Insights' connector asks an admin for, kept as JSON in the state container
(``config/connections/<name>.json``): a display name, who may use the connection, the data privacy
acknowledgement, the Constant Contact app's client id, and the connection's status. Its secrets (client
secret, refresh token, cached access token) live in the secret store (Key Vault in Azure) under names
recorded here; they are never in the record and never returned.

Input is validated field by field (``FieldErrors``), so the API can return every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from .errors import ConfigError
from .exports import FieldErrors
from .report import utc_now
from .secrets import SecretNames
from .storage import ConditionalResultStore

CONNECTION_PREFIX = "config/connections/"
CONNECTION_TYPE = "constantcontact"
DEFAULT_CONNECTION = "default"  # the CLI's original connection: its secrets keep the unprefixed names

Status = Literal["not_connected", "connected", "needs_reauthorization"]
STATUSES: tuple[Status, ...] = ("not_connected", "connected", "needs_reauthorization")

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")
MAX_SHARES = 200
MAX_TEXT = 256

# What a caller may send; everything else in a record is kept by the service.
WRITABLE = frozenset({"display_name", "type", "client_id", "client_secret", "access", "privacy_acknowledged"})
READ_ONLY = frozenset(
    {
        "name",
        "secret_names",
        "status",
        "status_reason",
        "connected_at",
        "connected_by",
        "privacy_acknowledged_at",
        "privacy_acknowledged_by",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
    }
)


class ConnectionNotReadyError(ConfigError):
    """An export cannot run through this connection yet (HTTP 409); ``code`` says why."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ConflictError(ConfigError):
    """The request is well formed but clashes with the current state (HTTP 409)."""

    code = "conflict"


def secret_names_for(name: str) -> SecretNames:
    """``default`` keeps the names the CLI has always used (cc-client-id ...); others get a prefix."""
    return SecretNames() if name == DEFAULT_CONNECTION else SecretNames.for_connection(name)


def check_connection_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise FieldErrors({"name": "use 1-63 lower-case letters, digits and dashes"})
    return name


@dataclass(frozen=True, kw_only=True)
class Access:
    """Who, besides admins, may configure and run exports through the connection (as contributors)."""

    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {"users": list(self.users), "roles": list(self.roles)}


@dataclass(frozen=True, kw_only=True)
class Connection:
    name: str
    display_name: str
    client_id: str
    type: str = CONNECTION_TYPE
    access: Access = field(default_factory=Access)
    privacy_acknowledged: bool = False
    privacy_acknowledged_at: str | None = None
    privacy_acknowledged_by: str | None = None
    status: Status = "not_connected"
    status_reason: str | None = None
    connected_at: str | None = None
    connected_by: str | None = None
    created_at: str | None = None
    created_by: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None

    @property
    def secret_names(self) -> SecretNames:
        return secret_names_for(self.name)

    def to_dict(self) -> dict[str, Any]:
        names = self.secret_names
        return {
            "name": self.name,
            "display_name": self.display_name,
            "type": self.type,
            "client_id": self.client_id,
            "access": self.access.to_dict(),
            "privacy_acknowledged": self.privacy_acknowledged,
            "privacy_acknowledged_at": self.privacy_acknowledged_at,
            "privacy_acknowledged_by": self.privacy_acknowledged_by,
            "secret_names": {
                "client_id": names.client_id,
                "client_secret": names.client_secret,
                "refresh_token": names.refresh_token,
                "access_token": names.access_token,
            },
            "status": self.status,
            "status_reason": self.status_reason,
            "connected_at": self.connected_at,
            "connected_by": self.connected_by,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Connection:
        """A record as the store wrote it (trusted: written by :meth:`to_dict`)."""
        access = data.get("access") or {}
        status = data.get("status")
        return cls(
            name=str(data["name"]),
            display_name=str(data.get("display_name") or data["name"]),
            client_id=str(data.get("client_id") or ""),
            type=str(data.get("type") or CONNECTION_TYPE),
            access=Access(users=tuple(access.get("users") or ()), roles=tuple(access.get("roles") or ())),
            privacy_acknowledged=data.get("privacy_acknowledged") is True,
            privacy_acknowledged_at=data.get("privacy_acknowledged_at"),
            privacy_acknowledged_by=data.get("privacy_acknowledged_by"),
            status=status if status in STATUSES else "not_connected",
            status_reason=data.get("status_reason"),
            connected_at=data.get("connected_at"),
            connected_by=data.get("connected_by"),
            created_at=data.get("created_at"),
            created_by=data.get("created_by"),
            updated_at=data.get("updated_at"),
            updated_by=data.get("updated_by"),
        )


@dataclass(frozen=True)
class ConnectionInput:
    """What a caller sent, validated: the fields present (PATCH) or all writable fields (PUT)."""

    values: dict[str, Any]
    client_secret: str | None = None

    @classmethod
    def parse(cls, body: Any, *, partial: bool) -> ConnectionInput:
        """Check every field and report all problems at once. Read-only fields are ignored (so a GET's
        body can be sent back); unknown fields are errors (a typo must not pass as "not acknowledged")."""
        if not isinstance(body, dict):
            raise FieldErrors({"body": "expected a JSON object"})
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for key in body:
            if key not in WRITABLE and key not in READ_ONLY:
                errors[key] = f"unknown field; writable fields are {', '.join(sorted(WRITABLE))}"
        if "display_name" in body:
            text = body["display_name"]
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                errors["display_name"] = f"a non-empty string of at most {MAX_TEXT} characters"
            else:
                values["display_name"] = text.strip()
        if "type" in body and body["type"] != CONNECTION_TYPE:
            errors["type"] = f"must be {CONNECTION_TYPE!r} (the only connection type)"
        if "client_id" in body:
            client_id = body["client_id"]
            if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
                errors["client_id"] = "the Constant Contact application's API key (client id)"
            else:
                values["client_id"] = client_id
        elif not partial:
            errors["client_id"] = "required: the Constant Contact application's API key (client id)"
        secret = body.get("client_secret")
        if "client_secret" in body and (
            not isinstance(secret, str)
            or not secret.strip()
            or len(secret) > 1024
            or secret != secret.strip()
        ):
            errors["client_secret"] = "the Constant Contact application's client secret, as a string"
            secret = None
        if "access" in body:
            try:
                values["access"] = _parse_access(body["access"])
            except ConfigError as exc:
                errors["access"] = str(exc)
        elif not partial:
            values["access"] = Access()
        if "privacy_acknowledged" in body:
            ack = body["privacy_acknowledged"]
            if not isinstance(ack, bool):
                errors["privacy_acknowledged"] = "true or false (JSON booleans, not strings)"
            else:
                values["privacy_acknowledged"] = ack
        elif not partial:
            values["privacy_acknowledged"] = False
        if errors:
            raise FieldErrors(errors)
        return cls(values, secret if isinstance(secret, str) else None)


def _parse_access(data: Any) -> Access:
    if not isinstance(data, dict):
        raise ConfigError('an object {"users": [...], "roles": [...]}')
    unknown = set(data) - {"users", "roles"}
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}; use users and roles")
    out: dict[str, tuple[str, ...]] = {}
    for key in ("users", "roles"):
        items = data.get(key) or []
        if not isinstance(items, list) or not all(
            isinstance(i, str) and i.strip() and len(i) <= MAX_TEXT for i in items
        ):
            raise ConfigError(f"{key} must be a list of non-empty strings")
        if len(items) > MAX_SHARES:
            raise ConfigError(f"at most {MAX_SHARES} {key}")
        seen: dict[str, str] = {}
        for item in items:
            seen.setdefault(item.strip().casefold(), item.strip())
        out[key] = tuple(seen.values())
    return Access(users=out["users"], roles=out["roles"])


class ConnectionStore:
    """Connection records in the state store, updated with ETag conditions (no lost updates)."""

    def __init__(self, store: ConditionalResultStore) -> None:
        self._store = store

    @staticmethod
    def _path(name: str) -> str:
        return f"{CONNECTION_PREFIX}{name}.json"

    def get(self, name: str) -> Connection | None:
        if not _NAME.fullmatch(name or ""):
            return None
        raw = self._store.get_bytes(self._path(name))
        return Connection.from_stored(orjson.loads(raw)) if raw else None

    def list(self) -> list[Connection]:
        out = []
        for path in self._store.list(CONNECTION_PREFIX):
            raw = self._store.get_bytes(path)
            if raw:
                out.append(Connection.from_stored(orjson.loads(raw)))
        return out

    def create(self, connection: Connection) -> bool:
        """Write a new record; False when one with that name exists already."""
        body = orjson.dumps(connection.to_dict(), option=orjson.OPT_INDENT_2)
        path = self._path(check_connection_name(connection.name))
        return self._store.put_bytes_if(path, body, etag=None, content_type="application/json") is not None

    def update(self, name: str, change: Callable[[Connection], Connection]) -> Connection | None:
        """Apply ``change`` to the current record and write it if nobody wrote meanwhile (else retry).

        None when there is no such connection."""
        for _ in range(10):
            current = self._store.get_with_etag(self._path(name)) if _NAME.fullmatch(name or "") else None
            if current is None:
                return None
            raw, etag = current
            updated = change(Connection.from_stored(orjson.loads(raw)))
            body = orjson.dumps(updated.to_dict(), option=orjson.OPT_INDENT_2)
            if self._store.put_bytes_if(self._path(name), body, etag=etag, content_type="application/json"):
                return updated
        raise ConflictError(f"connection {name!r} is being changed by someone else; try again")

    def set_status(self, name: str, status: Status, *, reason: str | None = None) -> Connection | None:
        return self.update(
            name, lambda c: replace(c, status=status, status_reason=reason, updated_at=utc_now())
        )

    def delete(self, name: str) -> None:
        self._store.delete(self._path(name))


__all__ = [
    "CONNECTION_TYPE",
    "DEFAULT_CONNECTION",
    "Access",
    "ConflictError",
    "Connection",
    "ConnectionInput",
    "ConnectionNotReadyError",
    "ConnectionStore",
    "secret_names_for",
]
