"""The management API through the indexed functions, with real func.HttpRequest objects, against Azurite,
the local Key Vault (real SecretClient over HTTPS) and the Constant Contact sandbox. Every response is
validated against the OpenAPI description (tests/management_world.call)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from exporter import functions
from exporter.openapi import spec
from exporter.principals import encode_principal
from sandbox import Sandbox
from tests.keyvault_server import LocalKeyVault
from tests.management_world import (
    APP_A,
    APP_B,
    MAPPING,
    call,
    follow_authorize,
    make_service,
    sandbox_config,
    upload_segment,
    vault_store,
)


@pytest.fixture
def world(azurite) -> Iterator[dict]:
    """A fresh sandbox, vault and containers; the functions use this service until the test ends."""
    with Sandbox(sandbox_config()) as sb, LocalKeyVault() as vault:
        secrets = vault_store(vault)
        service = make_service(azurite.connection_string, sb, secrets)
        functions.configure(service)
        try:
            yield {"sandbox": sb, "vault": vault, "service": service, "secrets": secrets}
        finally:
            functions.reset()


def wait_for_run(indexed, export: str, run_id: str, who: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        reply = call(indexed, "get_run", f"exports/{export}/runs/{run_id}", who)
        assert reply.status == 200, reply.body
        if reply.body["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return reply.body
        time.sleep(0.05)


def put_acme(indexed, **fields: object):
    """The connection "acme" with application A's credentials, created by an admin; not connected."""
    body = {"client_id": APP_A[0], "client_secret": APP_A[1], **fields}
    return call(indexed, "put_connection", "connections/acme", "admin", body=body)


def connect_acme(indexed) -> None:
    """The connection "acme" (application A), created and connected by an admin."""
    put_acme(indexed, privacy_acknowledged=True)
    connect(indexed, "acme")


def export_a_on_acme(indexed, world) -> None:
    """Export "a": segment a.csv to a new sandbox list through the connected "acme"."""
    upload_segment(world["service"], "a.csv")
    connect_acme(indexed)
    body = {
        "connection": "acme",
        "list_id": world["sandbox"].create_list("L"),
        "mapping": {"email": "EMail"},
        "segments": ["a.csv"],
    }
    assert call(indexed, "put_export", "exports/a", "admin", body=body).status == 200


def connect(indexed, name: str, who: str = "admin") -> dict:
    """GET .../authorize, let the sandbox consent, and call the callback as the browser would."""
    start = call(indexed, "authorize_connection", f"connections/{name}/authorize", who)
    assert start.status == 302, start.body
    back = follow_authorize(start.headers["Location"])
    reply = call(
        indexed,
        "oauth_callback",
        "oauth/callback",
        who,
        query={k: back[k] for k in ("code", "state")},
    )
    assert reply.status == 200, reply.body
    return reply.body


# -- the "done when" -----------------------------------------------------------------------


def test_admin_connects_contributor_exports_viewer_reads(indexed, world):
    sb, vault = world["sandbox"], world["vault"]
    upload_segment(world["service"], "newsletter/contacts.csv")
    list_id = sb.create_list("Newsletter")
    sb.create_custom_field("tier")

    # 1. an admin creates the connection; the client secret goes to the vault and never comes back
    created = call(
        indexed,
        "put_connection",
        "connections/acme",
        "admin",
        body={"display_name": "Acme marketing", "client_id": APP_A[0], "client_secret": APP_A[1]},
    )
    assert created.status == 201, created.body
    assert created.body["status"] == "not_connected" and created.body["privacy_acknowledged"] is False
    assert created.body["secret_names"]["refresh_token"] == "cc-acme-refresh-token"
    assert APP_A[1] not in json.dumps(created.body)
    assert vault.secrets["cc-acme-client-secret"][-1].value == APP_A[1]

    # 2. acknowledges data privacy
    acked = call(
        indexed, "patch_connection", "connections/acme", "admin", body={"privacy_acknowledged": True}
    )
    assert acked.status == 200 and acked.body["privacy_acknowledged"] is True
    assert acked.body["privacy_acknowledged_by"] == "admin@contoso.com"

    # 3. authorizes it: a redirect to Constant Contact with our scopes, state and PKCE...
    start = call(indexed, "authorize_connection", "connections/acme/authorize", "admin")
    assert start.status == 302
    location = start.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(sb.oauth_base_url + "/authorize?")
    assert query["scope"] == ["contact_data offline_access"] and query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == ["http://localhost:7071/api/oauth/callback"]
    assert query["client_id"] == [APP_A[0]] and len(query["state"][0]) >= 32
    # ... the sandbox plays the person who allows access and sends the browser back with a code
    back = follow_authorize(location)
    assert back["url"].startswith("http://localhost:7071/api/oauth/callback?")
    done = call(
        indexed,
        "oauth_callback",
        "oauth/callback",
        "admin",
        query={"code": back["code"], "state": back["state"]},
    )
    assert done.status == 200 and done.body["status"] == "connected", done.body
    assert done.body["connected_by"] == "admin@contoso.com"
    refresh = vault.secrets["cc-acme-refresh-token"][-1].value
    assert refresh and refresh not in json.dumps(done.body)
    exchange = [r for r in sb.requests if r.path.endswith("/token")][-1]
    assert b"code_verifier=" in exchange.body and exchange.headers["Authorization"].startswith("Basic ")
    # the state is single use
    again = call(
        indexed,
        "oauth_callback",
        "oauth/callback",
        "admin",
        query={"code": back["code"], "state": back["state"]},
    )
    assert again.status == 400 and again.body["code"] == "invalid_state"

    # 4. shares it with a contributor
    shared = call(
        indexed,
        "patch_connection",
        "connections/acme",
        "admin",
        body={"access": {"users": ["Carol@Contoso.com"]}},
    )
    assert shared.status == 200 and shared.body["access"] == {"users": ["Carol@Contoso.com"], "roles": []}

    # 5. the contributor creates an export (checked against the account) and runs it
    export = {
        "connection": "acme",
        "list_id": list_id,
        "mapping": MAPPING,
        "segments": ["newsletter/contacts.csv"],
    }
    saved = call(indexed, "put_export", "exports/newsletter", "contributor_shared", body=export)
    assert saved.status == 200, saved.body
    started = call(indexed, "start_run", "exports/newsletter/runs", "contributor_shared", body={})
    assert started.status == 202, started.body

    # 6. a viewer reads the run, and is refused when running it
    report = wait_for_run(indexed, "newsletter", started.body["run_id"], "viewer")
    assert report["status"] == "completed" and report["delivered"] == 3, report.get("error")
    members = {m["email_address"] for m in sb.list_members(list_id)}
    assert members == {"ann@example.com", "bob@example.com", "cy@example.com"}
    assert sb.contact("ann@example.com")["custom_fields"] == {"tier": "Gold"}
    refused = call(indexed, "start_run", "exports/newsletter/runs", "viewer", body={})
    assert refused.status == 403 and "contributor" in refused.body["error"]
    listed = call(indexed, "list_runs", "exports/newsletter/runs", "viewer")
    assert [r["run_id"] for r in listed.body["runs"]] == [started.body["run_id"]]

    # 7. a connection without the privacy acknowledgement: saved and connected, but runs are refused
    call(
        indexed,
        "put_connection",
        "connections/beta",
        "admin",
        body={"client_id": APP_B[0], "client_secret": APP_B[1], "access": {"users": ["carol@contoso.com"]}},
    )
    assert connect(indexed, "beta")["status"] == "connected"
    beta_list = sb.create_list("Beta")
    saved = call(
        indexed,
        "put_export",
        "exports/beta-news",
        "contributor_shared",
        body={**export, "connection": "beta", "list_id": beta_list},
    )
    assert saved.status == 200, saved.body
    imports = sb.count("POST", "/v3/activities/contacts_json_import")
    blocked = call(indexed, "start_run", "exports/beta-news/runs", "contributor_shared", body={})
    assert blocked.status == 409 and blocked.body["code"] == "privacy_not_acknowledged"
    assert "data privacy acknowledgement" in blocked.body["error"] and "beta" in blocked.body["error"]
    assert call(indexed, "list_runs", "exports/beta-news/runs", "viewer").body["runs"] == []
    assert sb.count("POST", "/v3/activities/contacts_json_import") == imports


# -- connecting ------------------------------------------------------------------------------------


def test_callback_binds_the_state_to_the_admin_who_started_it(indexed, world):
    put_acme(indexed)
    start = call(indexed, "authorize_connection", "connections/acme/authorize", "admin")
    back = follow_authorize(start.headers["Location"])
    params = {"code": back["code"], "state": back["state"]}
    other_admin = encode_principal("eve@contoso.com", ["Exporter.Admin"])
    stolen = call(indexed, "oauth_callback", "oauth/callback", principal=other_admin, query=params)
    assert stolen.status == 403 and "someone else" in stolen.body["error"]
    assert call(indexed, "oauth_callback", "oauth/callback", None, query=params).status == 401
    # neither attempt used the state up: the admin who started still finishes
    assert call(indexed, "oauth_callback", "oauth/callback", "admin", query=params).status == 200
    forged = call(
        indexed, "oauth_callback", "oauth/callback", "admin", query={"code": "x", "state": "made-up"}
    )
    assert forged.status == 400 and forged.body["code"] == "invalid_state"


def test_a_refusal_on_constant_contacts_page_leaves_the_connection_unconnected(indexed, world):
    put_acme(indexed)
    start = call(indexed, "authorize_connection", "connections/acme/authorize", "admin")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    denied = call(
        indexed,
        "oauth_callback",
        "oauth/callback",
        "admin",
        query={"error": "access_denied", "error_description": "The user denied access", "state": state},
    )
    assert denied.status == 400 and denied.body["code"] == "access_denied"
    assert call(indexed, "get_connection", "connections/acme", "viewer").body["status"] == "not_connected"
    assert "cc-acme-refresh-token" not in world["vault"].secrets


def test_a_new_client_id_disconnects_until_authorized_again(indexed, world):
    vault = world["vault"]
    put_acme(indexed)
    connect(indexed, "acme")
    changed = call(
        indexed,
        "patch_connection",
        "connections/acme",
        "admin",
        body={"client_id": APP_B[0], "client_secret": APP_B[1]},
    )
    assert changed.status == 200 and changed.body["status"] == "not_connected"
    assert "client id changed" in changed.body["status_reason"]
    assert vault.secrets["cc-acme-refresh-token"][-1].value == "revoked"  # overwritten, not deleted
    assert vault.secrets["cc-acme-client-id"][-1].value == APP_B[0]
    assert connect(indexed, "acme")["status"] == "connected"
    assert vault.secrets["cc-acme-refresh-token"][-1].value != "revoked"


def test_authorize_needs_the_client_secret_first(indexed, world):
    call(indexed, "put_connection", "connections/acme", "admin", body={"client_id": APP_A[0]})
    reply = call(indexed, "authorize_connection", "connections/acme/authorize", "admin")
    assert reply.status == 409 and "cc-acme-client-secret" in reply.body["error"]


def test_redirect_uri_app_setting_overrides_the_request_host(indexed, world, monkeypatch):
    monkeypatch.setenv("EXPORTER_OAUTH_REDIRECT_URI", "https://exporter.contoso.com/api/oauth/callback")
    functions.configure(world["service"])
    put_acme(indexed)
    start = call(indexed, "authorize_connection", "connections/acme/authorize", "admin")
    assert parse_qs(urlsplit(start.headers["Location"]).query)["redirect_uri"] == [
        "https://exporter.contoso.com/api/oauth/callback"
    ]


def test_a_refused_refresh_token_marks_the_connection_for_reauthorization(indexed, world):
    sb = world["sandbox"]
    export_a_on_acme(indexed, world)
    world["secrets"].set("cc-acme-refresh-token", "revoked-or-rotated-elsewhere")
    sb.oauth.expire_access_tokens()
    started = call(indexed, "start_run", "exports/a/runs", "admin", body={})
    report = wait_for_run(indexed, "a", started.body["run_id"], "admin")
    assert report["status"] == "failed" and report["error"]["type"] == "AuthorizationError"
    deadline = time.monotonic() + 10  # the report is written a moment before the status
    connection = call(indexed, "get_connection", "connections/acme", "viewer").body
    while connection["status"] == "connected" and time.monotonic() < deadline:
        time.sleep(0.05)
        connection = call(indexed, "get_connection", "connections/acme", "viewer").body
    assert connection["status"] == "needs_reauthorization" and "authorize" in connection["status_reason"]
    refused = call(indexed, "start_run", "exports/a/runs", "admin", body={})
    assert refused.status == 409 and refused.body["code"] == "connection_needs_reauthorization"
    assert connect(indexed, "acme")["status"] == "connected"  # authorizing again fixes it
    again = call(indexed, "start_run", "exports/a/runs", "admin", body={})
    assert again.status == 202
    assert wait_for_run(indexed, "a", again.body["run_id"], "admin")["status"] == "completed"


# -- exports are checked against the account --------------------------------------------------------


def test_saving_an_export_checks_the_list_and_custom_fields(indexed, world):
    sb = world["sandbox"]
    put_acme(indexed)
    body = {"connection": "acme", "list_id": sb.create_list("L"), "mapping": MAPPING, "segments": ["a.csv"]}
    not_connected = call(indexed, "put_export", "exports/a", "admin", body=body)
    assert not_connected.status == 400 and "not connected" in not_connected.body["fields"]["connection"]
    connect(indexed, "acme")
    missing = call(
        indexed,
        "put_export",
        "exports/a",
        "admin",
        body={**body, "list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10"},
    )
    assert missing.status == 400 and set(missing.body["fields"]) == {"list_id", "mapping.fields"}
    assert "cf:tier" in missing.body["fields"]["mapping.fields"]
    sb.create_custom_field("tier")
    assert call(indexed, "put_export", "exports/a", "admin", body=body).status == 200
    unknown = call(indexed, "put_export", "exports/b", "admin", body={**body, "connection": "nope"})
    assert unknown.status == 400 and unknown.body["fields"] == {"connection": "no connection named 'nope'"}
    assert call(indexed, "get_export", "exports/b", "admin").status == 404
    sloppy = call(
        indexed, "put_export", "exports/b", "admin", body={**body, "enabled": "no", "connection": 7}
    )
    assert sloppy.status == 400 and set(sloppy.body["fields"]) == {"enabled", "connection"}


def test_an_export_says_how_its_csv_files_are_encoded_and_delimited(indexed, world):
    connect_acme(indexed)
    rows = ["EMail;FirstName;Born", "jose@example.com;José;01/02/1975", "zoe@example.com;Zoë;31.12.1980"]
    upload_segment(world["service"], "excel.csv", "\r\n".join(rows).encode("cp1252"))
    body = {
        "connection": "acme",
        "list_id": world["sandbox"].create_list("Excel"),
        "mapping": {"email": "EMail", "first_name": "FirstName", "fields": {"birthday": "Born"}},
        "segments": ["excel.csv"],
        "encoding": "cp1252",
        "delimiter": ";",
        "day_first": True,
    }
    bad = call(
        indexed, "put_export", "exports/excel", "admin", body={**body, "encoding": "rot13", "delimiter": ";;"}
    )
    assert bad.status == 400 and set(bad.body["fields"]) == {"encoding", "delimiter"}
    assert "not a text file encoding" in bad.body["fields"]["encoding"]
    saved = call(indexed, "put_export", "exports/excel", "admin", body=body)
    assert saved.status == 200 and (saved.body["encoding"], saved.body["delimiter"]) == ("cp1252", ";")
    assert saved.body["day_first"] is True
    started = call(indexed, "start_run", "exports/excel/runs", "admin", body={})
    report = wait_for_run(indexed, "excel", started.body["run_id"], "admin")
    assert report["status"] == "completed" and report["delivered"] == 2 and report["rejected"] == 0
    members = world["sandbox"].list_members(body["list_id"])
    got = {
        m["email_address"]: (m["first_name"], m.get("birthday_month"), m.get("birthday_day")) for m in members
    }
    assert got == {"jose@example.com": ("José", 2, 1), "zoe@example.com": ("Zoë", 12, 31)}


def test_names_with_a_trailing_line_break_are_refused(indexed, world):
    put_acme(indexed)
    assert (
        call(indexed, "put_connection", "connections/acme\n", "admin", body={"client_id": "x"}).status == 400
    )
    assert call(indexed, "get_export", "exports/a\n", "admin").status == 404
    body = {
        "list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10\n",
        "mapping": {"email": "EMail"},
        "segments": ["a.csv"],
    }
    for field, value in (("list_id", body["list_id"]), ("connection", "acme\n")):
        fixed = {**body, "list_id": body["list_id"].strip(), "connection": "acme", field: value}
        reply = call(indexed, "put_export", "exports/a", "admin", body=fixed)
        assert reply.status == 400 and set(reply.body["fields"]) == {field}


def test_connection_input_is_checked_field_by_field(indexed, world):
    reply = call(
        indexed,
        "put_connection",
        "connections/acme",
        "admin",
        body={
            "type": "mailchimp",
            "privacy_acknowledgement": True,
            "privacy_acknowledged": "yes",
            "access": {"users": [""]},
        },
    )
    assert reply.status == 400
    assert set(reply.body["fields"]) == {
        "type",
        "privacy_acknowledgement",
        "privacy_acknowledged",
        "access",
        "client_id",
    }
    bad_name = call(indexed, "put_connection", "connections/Bad_Name", "admin", body={"client_id": "x"})
    assert bad_name.status == 400 and "name" in bad_name.body["fields"]
    # a GET body can be sent back as is: read-only fields are ignored
    created = call(indexed, "put_connection", "connections/acme", "admin", body={"client_id": APP_A[0]})
    echoed = {**created.body, "status": "connected", "display_name": "Renamed"}
    replaced = call(indexed, "put_connection", "connections/acme", "admin", body=echoed)
    assert replaced.status == 200 and replaced.body["status"] == "not_connected"
    assert replaced.body["display_name"] == "Renamed"


def test_sharing_by_role_and_moving_exports_between_connections(indexed, world):
    sb = world["sandbox"]
    for name, app, access in (
        ("acme", APP_A, {"roles": ["Exporter.Contributor"]}),
        ("private", APP_B, {}),
    ):
        call(
            indexed,
            "put_connection",
            f"connections/{name}",
            "admin",
            body={"client_id": app[0], "client_secret": app[1], "access": access},
        )
        connect(indexed, name)
    body = {
        "connection": "private",
        "list_id": sb.create_list("L"),
        "mapping": {"email": "EMail"},
        "segments": ["a.csv"],
    }
    assert call(indexed, "put_export", "exports/p", "admin", body=body).status == 200
    # every contributor may use acme (shared with the role), nobody but admins private
    assert (
        call(
            indexed, "put_export", "exports/p", "contributor_other", body={**body, "connection": "acme"}
        ).status
        == 403
    )
    assert call(indexed, "delete_export", "exports/p", "contributor_other").status == 403
    assert (
        call(
            indexed, "put_export", "exports/q", "contributor_other", body={**body, "connection": "acme"}
        ).status
        == 200
    )


def test_deleting_a_connection_removes_its_secrets_and_stops_its_exports(indexed, world):
    sb, vault, service = world["sandbox"], world["vault"], world["service"]
    connect_acme(indexed)
    body = {
        "connection": "acme",
        "list_id": sb.create_list("L"),
        "mapping": {"email": "EMail"},
        "segments": ["a.csv"],
        "schedule": "0 0 3 * * *",
    }
    assert call(indexed, "put_export", "exports/a", "admin", body=body).status == 200
    assert {"cc-acme-refresh-token", "cc-acme-client-secret", "cc-acme-client-id"} <= set(vault.secrets)
    deleted = call(indexed, "delete_connection", "connections/acme", "admin")
    assert deleted.status == 200 and deleted.body["disabled_exports"] == ["a"]
    assert not any(name.startswith("cc-acme-") for name in vault.secrets)
    assert {"cc-acme-refresh-token", "cc-acme-client-secret"} <= set(vault.deleted_secrets)
    assert call(indexed, "get_connection", "connections/acme", "admin").status == 404
    assert call(indexed, "get_export", "exports/a", "viewer").body["enabled"] is False
    # the timer starts nothing for it, and a manual run is refused
    service.state.put_bytes("schedules/a.json", b'{"last_fire": "2000-01-01T03:00:00Z"}')
    assert service.on_timer()["started"] == []
    assert call(indexed, "start_run", "exports/a/runs", "admin", body={}).status == 400
    # Key Vault keeps deleted names (soft delete, purge protection): creating the connection again
    # recovers the names it writes and overwrites them; it starts unconnected, the old token unused
    again = call(indexed, "put_connection", "connections/acme", "admin", body={"client_id": APP_A[0]})
    assert again.status in (200, 201) and again.body["status"] == "not_connected"
    assert vault.secrets["cc-acme-client-id"][-1].value == APP_A[0]
    assert "cc-acme-refresh-token" in vault.deleted_secrets  # not written, so not brought back


def test_a_paused_run_of_a_deleted_connection_is_closed_not_resumed(indexed, world):
    """The timer resumes paused runs; one whose connection went away ends failed, with the reason."""
    sb, service = world["sandbox"], world["service"]
    export_a_on_acme(indexed, world)
    sb.faults.quota_exceeded(method="POST", path="/v3/activities/contacts_json_import")
    handle = service.start_run("a", trigger="http")
    assert service.run_status("a", handle.run_id)["status"] == "pending"  # waits for the next UTC day
    assert call(indexed, "delete_connection", "connections/acme", "admin").status == 200
    service.on_timer()
    report = service.run_status("a", handle.run_id)
    assert report["status"] == "failed" and report["error"]["type"] == "ConnectionNotReadyError"
    assert "does not exist" in report["error"]["message"]
    assert service.state.list("active/") == []


# -- roles -----------------------------------------------------------------------------------------


def test_principal_header_problems_are_401_with_a_json_error(indexed, world):
    cases = {
        "not base64": "not base64 ~~",
        "not an object": base64.b64encode(b"[]").decode(),
        "claims not a list": base64.b64encode(b'{"claims": 1}').decode(),
        "claim without typ": base64.b64encode(b'{"claims": [{"val": "x"}]}').decode(),
    }
    for case, value in cases.items():
        reply = call(indexed, "list_exports", "exports", principal=value)
        assert reply.status == 401 and reply.body["code"] == "unauthenticated", case
        assert "X-MS-CLIENT-PRINCIPAL" in reply.body["error"], case


def test_in_azure_without_app_service_authentication_the_header_is_not_trusted(indexed, world, monkeypatch):
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    reply = call(indexed, "list_exports", "exports", "admin")
    assert reply.status == 500 and reply.body["code"] == "authentication_not_configured"
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert call(indexed, "list_exports", "exports", "admin").status == 200


def test_role_names_are_app_settings(indexed, world, monkeypatch):
    monkeypatch.setenv("EXPORTER_ROLE_VIEWER", "Something.Else")
    functions.configure(world["service"])
    assert call(indexed, "list_exports", "exports", "norole").status == 200
    assert "Something.Else" in call(indexed, "openapi", "openapi.json").body["info"]["description"]


# -- the description ---------------------------------------------------------------------------------


def test_every_route_is_described_and_every_described_route_exists(indexed):
    routes = set()
    for fn in indexed.values():
        binding = json.loads(fn.get_function_json())["bindings"][0]
        if binding["type"] == "httpTrigger":
            for method in binding["methods"]:
                routes.add((method.lower(), "/" + binding["route"]))
    document = spec()
    described = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert routes == described
    op_ids = {
        item[m]["operationId"] for item in document["paths"].values() for m in item if m != "parameters"
    }
    assert op_ids == {
        n
        for n, f in indexed.items()
        if json.loads(f.get_function_json())["bindings"][0]["type"] == "httpTrigger"
    }


def test_the_description_is_served(indexed, world):
    reply = call(indexed, "openapi", "openapi.json", None)
    assert reply.status == 200 and reply.body["openapi"].startswith("3.0")
    assert reply.body["servers"] == [{"url": "http://localhost:7071/api"}]
