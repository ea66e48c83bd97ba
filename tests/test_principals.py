"""Reading the App Service authentication principal (X-MS-CLIENT-PRINCIPAL) and mapping it to roles."""

from __future__ import annotations

import base64
import json

import pytest

from exporter.principals import (
    ADMIN,
    CONTRIBUTOR,
    VIEWER,
    RoleNames,
    UnauthenticatedError,
    UntrustedPrincipalError,
    principal_from_headers,
    trusted_environment,
)

ROLES = RoleNames()
LOCAL: dict[str, str] = {}  # not in Azure: the header is believed


def header(body: dict, *, urlsafe: bool = False) -> dict[str, str]:
    raw = json.dumps(body).encode()
    value = (base64.urlsafe_b64encode(raw).rstrip(b"=") if urlsafe else base64.b64encode(raw)).decode()
    return {"x-ms-client-principal": value}  # the host may hand headers over in lower case


def aad(claims: list[tuple[str, str]], **extra: str) -> dict:
    """Roughly what Easy Auth sends for a Microsoft Entra sign-in."""
    return {
        "auth_typ": "aad",
        "claims": [{"typ": t, "val": v} for t, v in claims],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        **extra,
    }


def test_entra_user_with_app_roles():
    who = principal_from_headers(
        header(
            aad(
                [
                    ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "Carol@Contoso.com"),
                    ("roles", "Exporter.Viewer"),
                    ("roles", "Exporter.Contributor"),
                ]
            )
        ),
        ROLES,
        env=LOCAL,
    )
    assert who.user == "Carol@Contoso.com" and who.level == CONTRIBUTOR  # the highest role wins
    assert who.at_least(VIEWER) and not who.at_least(ADMIN)
    assert who.matches(["carol@contoso.com"], []) and not who.matches(["dave@contoso.com"], ["Other"])


def test_role_typ_and_name_fallbacks():
    body = {
        "claims": [
            {"typ": "role", "val": "exporter.admin"},
            {"typ": "preferred_username", "val": "ann@x.com"},
        ],
        "role_typ": "role",
        "name_typ": "name",  # absent from the claims: fall back to preferred_username
    }
    who = principal_from_headers(header(body, urlsafe=True), ROLES, env=LOCAL)
    assert who.level == ADMIN and who.user == "ann@x.com"
    service_principal = {
        "claims": [{"typ": "roles", "val": "Exporter.Viewer"}, {"typ": "oid", "val": "1234"}]
    }
    assert principal_from_headers(header(service_principal), ROLES, env=LOCAL).user == "1234"


def test_configured_role_names():
    roles = RoleNames.from_env({"EXPORTER_ROLE_ADMIN": "Ops.Admin"})
    admin = header(aad([("roles", "Ops.Admin")]))
    default_admin = header(aad([("roles", "Exporter.Admin")]))
    assert principal_from_headers(admin, roles, env=LOCAL).level == ADMIN
    assert principal_from_headers(default_admin, roles, env=LOCAL).level is None
    assert roles.contributor == "Exporter.Contributor"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-MS-CLIENT-PRINCIPAL": ""}, {"X-MS-CLIENT-PRINCIPAL": "%%%"}, header({"claims": "x"})],
    ids=["absent", "empty", "not-base64", "claims-not-a-list"],
)
def test_missing_or_malformed_headers_are_unauthenticated(headers):
    with pytest.raises(UnauthenticatedError):
        principal_from_headers(headers, ROLES, env=LOCAL)


def test_the_header_is_only_trusted_in_azure_when_app_service_authentication_is_on():
    assert trusted_environment({})
    assert not trusted_environment({"WEBSITE_INSTANCE_ID": "x"})
    assert trusted_environment({"WEBSITE_INSTANCE_ID": "x", "WEBSITE_AUTH_ENABLED": "True"})
    assert trusted_environment({"WEBSITE_INSTANCE_ID": "x", "EXPORTER_TRUST_PRINCIPAL_HEADER": "true"})
    with pytest.raises(UntrustedPrincipalError):
        principal_from_headers(header(aad([])), ROLES, env={"WEBSITE_INSTANCE_ID": "x"})
