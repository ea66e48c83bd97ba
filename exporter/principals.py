"""Who is calling: the App Service authentication (Easy Auth) principal, mapped to the exporter's roles.

App Service authentication validates the caller's Microsoft Entra token and hands the app its claims in
the ``X-MS-CLIENT-PRINCIPAL`` header: base64 JSON ``{auth_typ, claims: [{typ, val}], name_typ, role_typ}``.
External requests cannot set that header when App Service authentication is on, so it can be trusted
there; without it anyone holding the function key could forge it, so in Azure the header is only
believed when ``WEBSITE_AUTH_ENABLED`` says authentication is on (see :func:`trusted_environment`).

Three roles, each an app role of the Entra app registration (names are app settings):

- admin (``EXPORTER_ROLE_ADMIN``, default ``Exporter.Admin``): everything, on every connection;
- contributor (``EXPORTER_ROLE_CONTRIBUTOR``, default ``Exporter.Contributor``): read everything, and
  configure and run exports on the connections shared with them (by user or by role);
- viewer (``EXPORTER_ROLE_VIEWER``, default ``Exporter.Viewer``): read everything.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

HEADER = "X-MS-CLIENT-PRINCIPAL"

ADMIN, CONTRIBUTOR, VIEWER = "admin", "contributor", "viewer"
_RANK = {VIEWER: 1, CONTRIBUTOR: 2, ADMIN: 3}

# Claim types Easy Auth uses for app roles and for the user's name, tried in this order after the
# header's own role_typ / name_typ. The object id comes last: service principals have no user name.
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
NAME_CLAIMS = (
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "upn",
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "oid",
)


class AccessError(ConfigError):
    """A request refused for who made it; ``status`` is 401 (unknown caller) or 403 (not allowed)."""

    status = 403
    code = "forbidden"


class UnauthenticatedError(AccessError):
    """No principal, or a principal header that cannot be read (HTTP 401)."""

    status = 401
    code = "unauthenticated"


class ForbiddenError(AccessError):
    """A known caller without the role or the sharing the operation needs (HTTP 403)."""


class UntrustedPrincipalError(ConfigError):
    """The app runs in Azure without App Service authentication: the header could be forged (HTTP 500)."""

    code = "authentication_not_configured"


@dataclass(frozen=True)
class RoleNames:
    """The app role values that make someone an admin, contributor or viewer (app settings)."""

    admin: str = "Exporter.Admin"
    contributor: str = "Exporter.Contributor"
    viewer: str = "Exporter.Viewer"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RoleNames:
        env = os.environ if env is None else env
        return cls(
            admin=env.get("EXPORTER_ROLE_ADMIN") or cls.admin,
            contributor=env.get("EXPORTER_ROLE_CONTRIBUTOR") or cls.contributor,
            viewer=env.get("EXPORTER_ROLE_VIEWER") or cls.viewer,
        )

    def level(self, roles: Iterable[str]) -> str | None:
        """The highest exporter role among ``roles`` (compared case-insensitively), or None."""
        have = {r.casefold() for r in roles}
        for level, name in ((ADMIN, self.admin), (CONTRIBUTOR, self.contributor), (VIEWER, self.viewer)):
            if name.casefold() in have:
                return level
        return None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user id (for sharing and audit), their roles, and the exporter level."""

    user: str
    roles: frozenset[str]
    level: str | None  # admin, contributor, viewer, or None (signed in, but no exporter role)

    @classmethod
    def system(cls, user: str) -> Principal:
        """An operator at the command line: storage and Key Vault access already is full access."""
        return cls(user=user, roles=frozenset(), level=ADMIN)

    def at_least(self, level: str) -> bool:
        return self.level is not None and _RANK[self.level] >= _RANK[level]

    def require(self, level: str, what: str) -> None:
        if not self.at_least(level):
            have = f"role {self.level}" if self.level else "no exporter role"
            raise ForbiddenError(f"{what} needs the {level} role; you have {have}")

    def matches(self, users: Iterable[str], roles: Iterable[str]) -> bool:
        """True when the caller is one of ``users`` or holds one of ``roles`` (case-insensitive)."""
        mine = {r.casefold() for r in self.roles}
        if self.user and self.user.casefold() in {u.casefold() for u in users}:
            return True
        return any(r.casefold() in mine for r in roles)


def trusted_environment(env: Mapping[str, str] | None = None) -> bool:
    """Whether the principal header can be believed here.

    In Azure (``WEBSITE_INSTANCE_ID`` is set) only when App Service authentication is on
    (``WEBSITE_AUTH_ENABLED=True``), unless ``EXPORTER_TRUST_PRINCIPAL_HEADER=true`` says a front end in
    front of the app strips and sets it. Locally (``func start``, tests) the header is believed as sent.
    """
    env = os.environ if env is None else env
    if (env.get("EXPORTER_TRUST_PRINCIPAL_HEADER") or "").lower() == "true":
        return True
    if not env.get("WEBSITE_INSTANCE_ID"):
        return True
    return (env.get("WEBSITE_AUTH_ENABLED") or "").lower() == "true"


def principal_from_headers(
    headers: Mapping[str, str], roles: RoleNames, *, env: Mapping[str, str] | None = None
) -> Principal:
    """The caller from ``X-MS-CLIENT-PRINCIPAL``; UnauthenticatedError when absent or unreadable."""
    raw = _header(headers, HEADER)
    if not raw:
        raise UnauthenticatedError(
            "sign in first: this API needs an App Service authentication principal (X-MS-CLIENT-PRINCIPAL)"
        )
    if not trusted_environment(env):
        raise UntrustedPrincipalError(
            "App Service authentication is not enabled on this app, so the X-MS-CLIENT-PRINCIPAL header "
            "cannot be trusted; enable it (or set EXPORTER_TRUST_PRINCIPAL_HEADER=true behind a gateway "
            "that sets the header)"
        )
    data = _decode(raw)
    claims = data.get("claims")
    if not isinstance(claims, list):
        raise UnauthenticatedError("the X-MS-CLIENT-PRINCIPAL header has no claims list")
    pairs: list[tuple[str, str]] = []
    for claim in claims:
        if not isinstance(claim, dict) or not isinstance(claim.get("typ"), str):
            raise UnauthenticatedError("the X-MS-CLIENT-PRINCIPAL header has a malformed claim")
        value = claim.get("val")
        if isinstance(value, str):
            pairs.append((claim["typ"], value))
    role_typ = data.get("role_typ") if isinstance(data.get("role_typ"), str) else None
    name_typ = data.get("name_typ") if isinstance(data.get("name_typ"), str) else None
    role_types = {t for t in (role_typ, *ROLE_CLAIMS) if t}
    role_values = frozenset(v for t, v in pairs if t in role_types)
    user = ""
    for wanted in (name_typ, *NAME_CLAIMS):
        user = next((v for t, v in pairs if wanted and t == wanted and v.strip()), "")
        if user:
            break
    return Principal(user=user.strip(), roles=role_values, level=roles.level(role_values))


def encode_principal(user: str, roles: Iterable[str], *, role_typ: str = "roles") -> str:
    """The header value Easy Auth would send for ``user`` with ``roles`` (tests, local calls, docs)."""
    name_typ = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
    claims = [{"typ": name_typ, "val": user}, {"typ": "preferred_username", "val": user}]
    claims += [{"typ": role_typ, "val": r} for r in roles]
    body = {"auth_typ": "aad", "claims": claims, "name_typ": name_typ, "role_typ": role_typ}
    return base64.b64encode(json.dumps(body).encode()).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return (value or "").strip()


def _decode(raw: str) -> dict[str, Any]:
    """Base64 (standard or URL-safe, padding optional) JSON object, else UnauthenticatedError."""
    padded = raw + "=" * (-len(raw) % 4)
    try:
        text = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        data = json.loads(text)
    except (binascii.Error, ValueError, RecursionError):
        raise UnauthenticatedError("the X-MS-CLIENT-PRINCIPAL header is not base64-encoded JSON") from None
    if not isinstance(data, dict):
        raise UnauthenticatedError("the X-MS-CLIENT-PRINCIPAL header is not a JSON object")
    return data
