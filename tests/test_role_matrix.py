"""Every HTTP route for every kind of caller: admin, a contributor the connection is shared with, another
contributor, a viewer, a signed-in user without an exporter role, and an anonymous caller.

One world per module (sandbox, local Key Vault, containers, a connected and shared connection, an export
and a run); each case gets its own target where it changes something, so cases stay independent. Every
response is validated against the OpenAPI description as well."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporter import functions
from exporter.connections import Access, Connection
from exporter.exports import ExportConfig
from exporter.management import Management
from exporter.oauth_flow import Tokens, store_tokens
from exporter.principals import Principal
from sandbox import Sandbox
from tests.keyvault_server import LocalKeyVault
from tests.management_world import (
    APP_A,
    BASE,
    MAPPING,
    call,
    follow_authorize,
    make_service,
    sandbox_config,
    upload_segment,
    vault_store,
)

WHO = ("admin", "contributor_shared", "contributor_other", "viewer", "norole", "anonymous")
READ = (200, 200, 200, 200, 403, 401)
ADMIN_ONLY = {
    "put_connection": 201,
    "patch_connection": 200,
    "delete_connection": 200,
    "authorize_connection": 302,
    "oauth_callback": 200,
}
WRITE = {"put_export": 200, "delete_export": 204, "start_run": 202}

EXPECTED: dict[str, tuple[int, ...]] = {
    "health": (200,) * 6,
    "openapi": (200,) * 6,
    "list_connections": READ,
    "get_connection": READ,
    "list_exports": READ,
    "get_export": READ,
    "list_runs": READ,
    "get_run": READ,
    **{fn: (ok, 403, 403, 403, 403, 401) for fn, ok in ADMIN_ONLY.items()},
    **{fn: (ok, ok, 403, 403, 403, 401) for fn, ok in WRITE.items()},
}
CASES = [
    (fn, who, status) for fn, statuses in EXPECTED.items() for who, status in zip(WHO, statuses, strict=True)
]


@pytest.fixture(scope="module")
def world(azurite) -> Iterator[dict[str, Any]]:
    with Sandbox(sandbox_config()) as sb, LocalKeyVault() as vault:
        secrets = vault_store(vault)
        service = make_service(azurite.connection_string, sb, secrets)
        mgmt = Management(service)
        admin = Principal.system("admin@contoso.com")
        sb.create_custom_field("tier")
        list_id = sb.create_list("Matrix")
        upload_segment(service, "m.csv")
        shared, _ = mgmt.put_connection(
            admin,
            "shared",
            {
                "client_id": APP_A[0],
                "client_secret": APP_A[1],
                "privacy_acknowledged": True,
                "access": {"users": ["carol@contoso.com"]},
            },
        )
        refresh = sb.issue_refresh_token(APP_A[0])
        store_tokens(secrets, shared.secret_names, Tokens("", refresh, 0))  # as if authorized once
        service.connections.set_status("shared", "connected")
        config = ExportConfig.from_dict(
            {
                "name": "base",
                "connection": "shared",
                "list_id": list_id,
                "mapping": MAPPING,
                "segments": ["m.csv"],
            }
        )
        service.exports.put(config)
        run = service.start_run("base", dry_run=True, trigger="http")
        yield {"sandbox": sb, "service": service, "mgmt": mgmt, "list_id": list_id, "run_id": run.run_id}
        deadline = time.monotonic() + 20  # let background dry runs finish before the vault goes
        while service.state.list("active/") and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def use_world(world) -> Iterator[None]:
    functions.configure(world["service"])
    yield
    functions.reset()


def _target(fn: str, who: str) -> str:
    return f"{fn.replace('_', '-')}-{who.replace('_', '-')}"[:63]


def prepare(world: dict[str, Any], fn: str, who: str) -> tuple[str, dict[str, Any]]:
    """The path (and call options) for ``fn``, with whatever the call changes made just for this case."""
    service = world["service"]
    name = _target(fn, who)
    export_body = {
        "connection": "shared",
        "list_id": world["list_id"],
        "mapping": MAPPING,
        "segments": ["m.csv"],
    }
    if fn in ("health", "openapi"):
        return {"health": "health", "openapi": "openapi.json"}[fn], {}
    if fn == "list_connections":
        return "connections", {}
    if fn in ("get_connection", "patch_connection"):
        return "connections/shared", {"body": {"display_name": f"Shared ({who})"}} if fn.startswith(
            "patch"
        ) else {}
    if fn == "put_connection":
        return f"connections/{name}", {"body": {"client_id": APP_A[0]}}
    if fn == "delete_connection":
        service.connections.create(Connection(name=name, display_name=name, client_id=APP_A[0]))
        return f"connections/{name}", {}
    if fn == "authorize_connection":
        return "connections/shared/authorize", {}
    if fn == "oauth_callback":
        service.connections.create(
            Connection(
                name=name, display_name=name, client_id=APP_A[0], access=Access(users=("carol@contoso.com",))
            )
        )
        service.secrets.set(f"cc-{name}-client-secret", APP_A[1])
        location = world["mgmt"].begin_authorization(
            Principal.system("admin@contoso.com"), name, redirect_uri=f"{BASE}/oauth/callback"
        )
        back = follow_authorize(location)
        return "oauth/callback", {"query": {"code": back["code"], "state": back["state"]}}
    if fn == "list_exports":
        return "exports", {}
    if fn == "get_export":
        return "exports/base", {}
    if fn == "put_export":
        return f"exports/{name}", {"body": export_body}
    if fn == "delete_export":
        service.exports.put(ExportConfig.from_dict({**export_body, "name": name}))
        return f"exports/{name}", {}
    if fn == "start_run":
        return "exports/base/runs", {"body": {"dry_run": True}}
    if fn == "list_runs":
        return "exports/base/runs", {}
    if fn == "get_run":
        return f"exports/base/runs/{world['run_id']}", {}
    raise AssertionError(f"no case for {fn}")


def test_the_matrix_covers_every_http_function(indexed):
    http = {
        n
        for n, f in indexed.items()
        if json.loads(f.get_function_json())["bindings"][0]["type"] == "httpTrigger"
    }
    assert set(EXPECTED) == http


@pytest.mark.parametrize(("fn", "who", "status"), CASES, ids=[f"{fn}-{who}" for fn, who, _ in CASES])
def test_route_for_role(indexed, world, fn, who, status):
    path, options = prepare(world, fn, who)
    reply = call(indexed, fn, path, None if who == "anonymous" else who, **options)
    assert reply.status == status, reply.body
    if status in (401, 403):
        assert reply.body["code"] in ("unauthenticated", "forbidden") and reply.body["error"]
    if fn == "oauth_callback" and status == 200:
        assert reply.body["status"] == "connected" and reply.body["connected_by"] == "admin@contoso.com"
    if fn == "delete_connection":
        assert (world["service"].connections.get(_target(fn, who)) is None) == (status == 200)
    if fn == "delete_export":
        assert (world["service"].exports.get(_target(fn, who)) is None) == (status == 204)
    if fn == "put_export":
        assert (world["service"].exports.get(_target(fn, who)) is not None) == (status == 200)
