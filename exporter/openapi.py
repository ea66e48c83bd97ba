"""The management API's OpenAPI 3.0 description, served at ``GET /api/openapi.json``.

Written as Python data (PyYAML is not deployed) next to the handlers it describes;
tests/test_management_api.py keeps it true: every route in function_app.py is here, every path here is a
route, and real responses of every route validate against it.
"""

from __future__ import annotations

from typing import Any

from .connections import MAX_SHARES, MAX_TEXT, STATUSES
from .principals import RoleNames

VERSION = "1.0.0"

_NAME = {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"}
_TEXT_OR_NULL = {"type": "string", "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ERRORS = {
    "400": _error("Invalid request; ``fields`` names each bad field."),
    "401": _error("No App Service authentication principal, or one that cannot be read."),
    "403": _error("The caller's role, or the connection's sharing, does not allow this."),
    "404": _error("No such connection, export or run."),
    "409": _error("Conflicts with the current state (e.g. the connection is not ready for runs)."),
    "500": _error("Server misconfiguration (e.g. App Service authentication is off) or an unexpected error."),
    "502": _error("Constant Contact could not be reached or answered with an error; try again."),
}


def _responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    """``ok`` is one 200 response, or {status: response}; the error statuses are added (500 always)."""
    out = {"200": ok} if "description" in ok else dict(ok)
    for status in (*errors, "500"):
        out[status] = _ERRORS[status]
    return out


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, *, required: bool
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_KEY_ONLY: list[dict[str, list[str]]] = [{"functionKey": []}, {"functionKeyQuery": []}]
_PATH_NAME = _param("name", "path", _NAME, "Connection or export name.", required=True)
_RUN_ID = _param("run_id", "path", {"type": "string"}, "Run id, as returned by POST .../runs.", required=True)


def _op(
    op_id: str,
    summary: str,
    roles: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "description": f"Who may call it: {roles}.",
        "x-roles": roles,
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if security is not None:
        op["security"] = security
    return op


def _schemas() -> dict[str, Any]:
    access = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            key: {
                "type": "array",
                "maxItems": MAX_SHARES,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
                "description": desc,
            }
            for key, desc in (
                (
                    "users",
                    "User names (as in the sign-in, e.g. UPNs) who may use the connection as contributors.",
                ),
                ("roles", "App roles whose members may use the connection as contributors."),
            )
        },
    }
    connection_props: dict[str, Any] = {
        "name": _NAME,
        "display_name": {"type": "string"},
        "type": {"type": "string", "enum": ["constantcontact"]},
        "client_id": {"type": "string", "description": "The Constant Contact application's API key."},
        "access": _ref("Access"),
        "privacy_acknowledged": {
            "type": "boolean",
            "description": "Must be true before any export through the connection can run.",
        },
        "privacy_acknowledged_at": _TEXT_OR_NULL,
        "privacy_acknowledged_by": _TEXT_OR_NULL,
        "secret_names": {
            "type": "object",
            "additionalProperties": False,
            "required": ["client_id", "client_secret", "refresh_token", "access_token"],
            "properties": {
                k: {"type": "string"} for k in ("client_id", "client_secret", "refresh_token", "access_token")
            },
            "description": "Names of the connection's secrets in the vault (values are never returned).",
        },
        "status": {"type": "string", "enum": list(STATUSES)},
        "status_reason": _TEXT_OR_NULL,
        "connected_at": _TEXT_OR_NULL,
        "connected_by": _TEXT_OR_NULL,
        "created_at": _TEXT_OR_NULL,
        "created_by": _TEXT_OR_NULL,
        "updated_at": _TEXT_OR_NULL,
        "updated_by": _TEXT_OR_NULL,
    }
    writable = {
        "display_name": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
        "type": {"type": "string", "enum": ["constantcontact"]},
        "client_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "client_secret": {
            "type": "string",
            "writeOnly": True,
            "description": "Stored in the vault under secret_names.client_secret; never returned.",
        },
        "access": _ref("Access"),
        "privacy_acknowledged": {"type": "boolean"},
    }
    mapping = {
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": {
                "type": "string",
                "minLength": 1,
                "description": "Segment column with the email address.",
            },
            "first_name": _TEXT_OR_NULL,
            "last_name": _TEXT_OR_NULL,
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Constant Contact field (e.g. job_title, or cf:<custom field>) -> segment column.",
            },
        },
    }
    export_props: dict[str, Any] = {
        "name": _NAME,
        "connection": {"type": "string"},
        "list_id": {"type": "string", "format": "uuid"},
        "mapping": _ref("Mapping"),
        "segments": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "schedule": {**_TEXT_OR_NULL, "description": "6-field NCRONTAB, UTC, e.g. '0 0 6 * * *'."},
        "enabled": {"type": "boolean"},
        "encoding": {
            **_TEXT_OR_NULL,
            "description": "Encoding of CSV segment files when not UTF-8, e.g. 'cp1252' (a CDM folder names its own).",
        },
        "delimiter": {
            **_TEXT_OR_NULL,
            "description": "One character, or 'tab'; default: found from the header.",
        },
        "day_first": {
            "type": "boolean",
            "description": "Dates such as 01/02/1975 are day/month/year (default: month/day/year).",
        },
        "sync": {
            "type": "object",
            "additionalProperties": False,
            "description": "add_only never removes; mirror removes leavers this export added (see README).",
            "properties": {
                "mode": {"type": "string", "enum": ["add_only", "mirror"]},
                "shrink_guard": {"type": "number", "minimum": 0, "maximum": 1},
                "consent_field": _TEXT_OR_NULL,
            },
        },
    }
    run_summary: dict[str, Any] = {
        "type": "object",
        "required": ["run_id", "status"],
        "properties": {
            "run_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "completed", "pending", "failed"]},
            "trigger": _TEXT_OR_NULL,
            "started_at": _TEXT_OR_NULL,
            "finished_at": _TEXT_OR_NULL,
            **{
                k: {"type": "integer", "nullable": True}
                for k in ("received", "submitted", "rejected", "delivered")
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "code": {
                    "type": "string",
                    "description": "Machine-readable reason, e.g. privacy_not_acknowledged.",
                },
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Access": access,
        "Connection": {
            "type": "object",
            "additionalProperties": False,
            "required": list(connection_props),
            "properties": connection_props,
        },
        "ConnectionPut": {
            "type": "object",
            "required": ["client_id"],
            "description": "Writable fields; read-only fields of a Connection are accepted and ignored.",
            "properties": {**connection_props, **writable},
        },
        "ConnectionPatch": {
            "type": "object",
            "description": "Only the fields given change.",
            "properties": {**connection_props, **writable},
        },
        "ConnectionList": {
            "type": "object",
            "required": ["connections"],
            "properties": {"connections": {"type": "array", "items": _ref("Connection")}},
        },
        "ConnectionDeleted": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "disabled_exports", "deleted_secrets"],
            "properties": {
                "name": _NAME,
                "disabled_exports": {"type": "array", "items": {"type": "string"}},
                "deleted_secrets": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Mapping": mapping,
        "Export": {
            "type": "object",
            "additionalProperties": False,
            "required": list(export_props),
            "properties": export_props,
        },
        "ExportPut": {
            "type": "object",
            "required": ["list_id", "mapping", "segments"],
            "properties": {
                **export_props,
                "connection": {"type": "string", "default": "default"},
                "segments": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "enabled": {"type": "boolean", "default": True},
            },
        },
        "ExportList": {
            "type": "object",
            "required": ["exports"],
            "properties": {"exports": {"type": "array", "items": _ref("Export")}},
        },
        "RunStart": {
            "type": "object",
            "properties": {
                "dry_run": {"type": "boolean", "default": False},
                "full_sync": {"type": "boolean", "default": False},
                "allow_shrink": {"type": "boolean", "default": False},
            },
        },
        "RunStarted": {
            "type": "object",
            "additionalProperties": False,
            "required": ["run_id", "status", "status_url"],
            "properties": {
                "run_id": {"type": "string"},
                "status": {"type": "string", "enum": ["queued", "running", "pending"]},
                "status_url": {"type": "string"},
                "already_running": {
                    "type": "boolean",
                    "description": "true when the export already had a run in progress: this is that run",
                },
            },
        },
        "RunSummary": run_summary,
        "RunList": {
            "type": "object",
            "required": ["runs"],
            "properties": {"runs": {"type": "array", "items": _ref("RunSummary")}},
        },
        "RunReport": {
            "type": "object",
            "required": ["run_id", "status", "list_id"],
            "description": "The full run report (counts, activities, error); see exporter/report.py.",
            "properties": {
                **run_summary["properties"],
                "list_id": {"type": "string"},
                "export": _TEXT_OR_NULL,
                "dry_run": {"type": "boolean"},
                "error": {
                    "type": "object",
                    "nullable": True,
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks", "time"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                "time": {"type": "string"},
            },
        },
    }


def _paths() -> dict[str, Any]:
    anyone = "anyone with the function key (no role needed)"
    readers = "viewer, contributor, admin"
    writers = "admin; contributor when the export's connection is shared with them"
    admins = "admin"
    connection = _json(_ref("Connection"), "The connection.")
    export = _json(_ref("Export"), "The export.")
    limit = _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        "How many runs.",
        required=False,
    )
    callback_params = [
        _param(n, "query", {"type": "string"}, d, required=False)
        for n, d in (
            ("code", "The authorization code."),
            ("state", "The state sent with the authorization request."),
            ("error", "Set when the person or Constant Contact refused."),
            ("error_description", "Constant Contact's explanation of error."),
        )
    ]
    return {
        "/health": {
            "get": _op(
                "health",
                "Storage reachable?",
                anyone,
                {
                    "200": _json(_ref("Health"), "Healthy."),
                    "503": _json(_ref("Health"), "Degraded."),
                    "500": _ERRORS["500"],
                },
                security=_KEY_ONLY,
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This description.",
                anyone,
                _responses(_json({"type": "object"}, "The OpenAPI document.")),
                security=_KEY_ONLY,
            )
        },
        "/connections": {
            "get": _op(
                "list_connections",
                "List connections.",
                readers,
                _responses(_json(_ref("ConnectionList"), "All connections."), "401", "403"),
            )
        },
        "/connections/{name}": {
            "parameters": [_PATH_NAME],
            "get": _op(
                "get_connection", "Read a connection.", readers, _responses(connection, "401", "403", "404")
            ),
            "put": _op(
                "put_connection",
                "Create or replace a connection (client_secret is stored in the vault, never returned).",
                admins,
                _responses(
                    {"200": connection, "201": _json(_ref("Connection"), "Created.")},
                    "400",
                    "401",
                    "403",
                    "409",
                ),
                body=_ref("ConnectionPut"),
            ),
            "patch": _op(
                "patch_connection",
                "Change some fields: acknowledge data privacy, share, set a new client secret...",
                admins,
                _responses(connection, "400", "401", "403", "404", "409"),
                body=_ref("ConnectionPatch"),
            ),
            "delete": _op(
                "delete_connection",
                "Delete a connection: its exports are disabled and its secrets deleted from the vault.",
                admins,
                _responses(_json(_ref("ConnectionDeleted"), "Deleted."), "401", "403", "404"),
            ),
        },
        "/connections/{name}/authorize": {
            "parameters": [_PATH_NAME],
            "get": _op(
                "authorize_connection",
                "Start connecting a Constant Contact account: redirects to Constant Contact's consent page "
                "(scopes contact_data offline_access, state, PKCE S256).",
                admins,
                _responses(
                    {
                        "302": {
                            "description": "Go to Constant Contact's authorize URL.",
                            "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                        }
                    },
                    "401",
                    "403",
                    "404",
                    "409",
                ),
            ),
        },
        "/oauth/callback": {
            "get": _op(
                "oauth_callback",
                "Where Constant Contact sends the browser back: checks state, redeems the code, stores the "
                "refresh token in the vault. Anonymous at the gateway (``code`` is Constant Contact's).",
                "the admin who started the authorization",
                _responses(connection, "400", "401", "403", "404", "409", "502"),
                params=callback_params,
                security=[{"appServiceAuthentication": []}],
            )
        },
        "/exports": {
            "get": _op(
                "list_exports",
                "List exports.",
                readers,
                _responses(_json(_ref("ExportList"), "All exports."), "401", "403"),
            )
        },
        "/exports/{name}": {
            "parameters": [_PATH_NAME],
            "get": _op("get_export", "Read an export.", readers, _responses(export, "401", "403", "404")),
            "put": _op(
                "put_export",
                "Create or replace an export; the list and custom fields are checked in the connection's "
                "Constant Contact account, so the connection must be connected.",
                writers,
                _responses(export, "400", "401", "403", "502"),
                body=_ref("ExportPut"),
            ),
            "delete": _op(
                "delete_export",
                "Delete an export (its run reports stay).",
                writers,
                _responses({"204": {"description": "Deleted."}}, "401", "403", "404"),
            ),
        },
        "/exports/{name}/runs": {
            "parameters": [_PATH_NAME],
            "post": _op(
                "start_run",
                "Start a run (202 at once; poll status_url). Refused (409) while the connection lacks the "
                "data privacy acknowledgement or is not connected.",
                writers,
                _responses(
                    {
                        "202": {
                            **_json(_ref("RunStarted"), "Queued."),
                            "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                        }
                    },
                    "400",
                    "401",
                    "403",
                    "404",
                    "409",
                ),
                body=_ref("RunStart"),
            ),
            "get": _op(
                "list_runs",
                "Recent runs, newest first.",
                readers,
                _responses(_json(_ref("RunList"), "Runs."), "400", "401", "403", "404"),
                params=[limit],
            ),
        },
        "/exports/{name}/runs/{run_id}": {
            "parameters": [_PATH_NAME, _RUN_ID],
            "get": _op(
                "get_run",
                "A run's report.",
                readers,
                _responses(_json(_ref("RunReport"), "The report."), "401", "403", "404"),
            ),
        },
    }


def spec(*, server_url: str = "/api", roles: RoleNames | None = None) -> dict[str, Any]:
    """The OpenAPI document; ``server_url`` is where this deployment serves the API."""
    roles = roles or RoleNames.from_env()
    description = (
        "Manage Constant Contact connections and segment exports.\n\n"
        "Every call needs a function key (`x-functions-key` header or `code` query parameter), except "
        "/oauth/callback. Callers sign in with App Service authentication (Microsoft Entra ID); their app "
        f"roles decide what they may do: `{roles.admin}` (admin), `{roles.contributor}` (contributor: exports "
        f"on connections shared with them), `{roles.viewer}` (viewer: read only). No principal: 401; a "
        "principal without the needed role or sharing: 403."
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Constant Contact segment exporter: management API",
            "version": VERSION,
            "description": description,
        },
        "servers": [{"url": server_url}],
        "security": [
            {"functionKey": [], "appServiceAuthentication": []},
            {"functionKeyQuery": [], "appServiceAuthentication": []},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "appServiceAuthentication": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Microsoft Entra token (or sign-in cookie) checked by App Service "
                    "authentication, which passes the caller to the app as X-MS-CLIENT-PRINCIPAL.",
                },
            },
        },
    }
