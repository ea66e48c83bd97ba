"""What the Azure Functions triggers do, kept out of function_app.py so that file stays a list of
bindings. Each handler takes the trigger's azure-functions object and makes one call into the service
(exporter.management for the HTTP API, which checks the caller's role first; see exporter.principals).

HTTP answers are JSON; a refused or bad request gets a 4xx with ``{"error", "code"?, "fields"?}``, never a
stack: 401 no or unreadable principal, 403 role or sharing, 404 unknown, 400 invalid (``fields`` names
each bad field), 409 conflicts such as a run through a connection without the privacy acknowledgement,
502 Constant Contact unreachable while checking or connecting.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import azure.functions as func
import orjson

from .connections import ConflictError, ConnectionNotReadyError
from .errors import ConfigError
from .exports import FieldErrors
from .management import Management, ManagementSettings, VerificationUnavailableError
from .oauth_flow import OAuthFlowError
from .openapi import spec
from .principals import AccessError, Principal, UntrustedPrincipalError, principal_from_headers
from .service import AppSettings, ExportService, NotFoundError, ensure_containers

log = logging.getLogger(__name__)

_service: ExportService | None = None
_management: Management | None = None
_service_lock = threading.Lock()


def service() -> ExportService:
    """The process-wide service, built from app settings on first use (and its containers ensured)."""
    global _service
    with _service_lock:
        if _service is None:
            _service = ExportService(AppSettings.from_env())
            ensure_containers(_service)
        return _service


def management() -> Management:
    """The process-wide management operations (roles, connections, OAuth) around :func:`service`."""
    global _management
    svc = service()
    with _service_lock:
        if _management is None or _management.service is not svc:
            _management = Management(svc, ManagementSettings.from_env())
        return _management


def reset() -> None:
    """Forget the service (tests change app settings between cases)."""
    global _service, _management
    with _service_lock:
        _service = None
        _management = None


def configure(svc: ExportService, settings: ManagementSettings | None = None) -> None:
    """Use this service (tests: a Key Vault store wired to a local vault, say) until :func:`reset`."""
    global _service, _management
    with _service_lock:
        _service = svc
        _management = Management(svc, settings or ManagementSettings.from_env())


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    try:
        payload = orjson.dumps(body, option=orjson.OPT_INDENT_2)
    except TypeError:  # text that is not valid Unicode echoed back in an error: escape it instead
        payload = json.dumps(body, ensure_ascii=True, indent=2, default=str).encode("ascii")
    return func.HttpResponse(
        payload,
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def _error(status: int, message: str, **extra: Any) -> func.HttpResponse:
    return _json({"error": message, **extra}, status)


def _handle(call: Any) -> func.HttpResponse:
    """Map the exception hierarchy to HTTP statuses in one place (subclasses before ConfigError)."""
    try:
        result: func.HttpResponse = call()
        return result
    except AccessError as exc:
        return _error(exc.status, str(exc), code=exc.code)
    except UntrustedPrincipalError as exc:
        log.error("refused a request: App Service authentication is not enabled")
        return _error(500, str(exc), code=exc.code)
    except NotFoundError as exc:
        return _error(404, str(exc), code="not_found")
    except FieldErrors as exc:
        return _error(400, "invalid configuration", fields=exc.errors, code="invalid")
    except ConnectionNotReadyError as exc:
        return _error(409, str(exc), code=exc.code)
    except ConflictError as exc:
        return _error(409, str(exc), code=exc.code)
    except OAuthFlowError as exc:
        return _error(exc.status, str(exc), code=exc.code)
    except VerificationUnavailableError as exc:
        return _error(502, str(exc), code=exc.code)
    except ConfigError as exc:
        return _error(400, str(exc), code="bad_request")
    except Exception:
        log.exception("unexpected error in HTTP handler")
        return _error(500, "internal error; see the function logs")


def _who(req: func.HttpRequest) -> Principal:
    """The caller, from the App Service authentication principal header (401 without one)."""
    return principal_from_headers(req.headers, management().settings.roles)


MAX_BODY_BYTES = 256 * 1024  # a configuration is a few kilobytes; anything bigger is a mistake or an attack


def _body(req: func.HttpRequest) -> Any:
    """The JSON body, or a 400: too big, not JSON, nested too deep, or holding text that is not valid
    Unicode (lone surrogates from \\ud800 escapes), so nothing later trips over it."""
    raw = req.get_body()
    if not raw:
        return {}
    if len(raw) > MAX_BODY_BYTES:
        raise ConfigError(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        body = json.loads(raw)
        orjson.dumps(body)  # refuses lone surrogates and nesting deeper than 254 levels
    except (ValueError, RecursionError, TypeError):
        raise ConfigError("the request body is not valid JSON (or holds invalid characters)") from None
    return body


def _base_url(req: func.HttpRequest) -> str:
    url = str(req.url)
    marker = "/api/"
    return url[: url.index(marker)] if marker in url else url.rstrip("/")


# -- HTTP: runs ----------------------------------------------------------------------------------


def start_run(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/{name}/runs: 202 at once; the run goes on in the background (the HTTP front end
    allows 230 s, a large export takes longer)."""

    def call() -> func.HttpResponse:
        who = _who(req)
        name = req.route_params["name"]
        body = _body(req)
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        options = {key: body.get(key, False) for key in ("dry_run", "full_sync", "allow_shrink")}
        wrong = {
            key: "must be true or false" for key, value in options.items() if not isinstance(value, bool)
        }
        if wrong:
            raise FieldErrors(wrong)
        handle = management().start_run(who, name, **options, trigger="http", background=True)
        status_url = f"{_base_url(req)}/api/exports/{name}/runs/{handle.run_id}"
        return _json(
            {
                "run_id": handle.run_id,
                "status": handle.status,
                "status_url": status_url,
                "already_running": handle.already_running,
            },
            202,
            headers={"Location": status_url},
        )

    return _handle(call)


def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs/{run_id}: the run's report (status queued, running, pending, completed...)."""
    return _handle(
        lambda: _json(management().get_run(_who(req), req.route_params["name"], req.route_params["run_id"]))
    )


def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs?limit=20: recent runs, newest first."""

    def call() -> func.HttpResponse:
        who = _who(req)
        raw = req.params.get("limit", "20")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
            raise FieldErrors({"limit": "an integer from 1 to 100"})
        return _json({"runs": management().list_runs(who, req.route_params["name"], limit=int(raw))})

    return _handle(call)


# -- HTTP: exports -------------------------------------------------------------------------------


def put_export(req: func.HttpRequest) -> func.HttpResponse:
    """PUT exports/{name}: create or replace an export's configuration, checked against Constant Contact."""

    def call() -> func.HttpResponse:
        who = _who(req)
        config, _created = management().put_export(who, req.route_params["name"], _body(req))
        return _json(config.to_dict(), 200)

    return _handle(call)


def get_export(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json(management().get_export(_who(req), req.route_params["name"]).to_dict()))


def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json({"exports": [c.to_dict() for c in management().list_exports(_who(req))]}))


def delete_export(req: func.HttpRequest) -> func.HttpResponse:
    def call() -> func.HttpResponse:
        management().delete_export(_who(req), req.route_params["name"])
        return func.HttpResponse(status_code=204)

    return _handle(call)


# -- HTTP: connections ---------------------------------------------------------------------------


def list_connections(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(
        lambda: _json({"connections": [c.to_dict() for c in management().list_connections(_who(req))]})
    )


def get_connection(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json(management().get_connection(_who(req), req.route_params["name"]).to_dict()))


def put_connection(req: func.HttpRequest) -> func.HttpResponse:
    """PUT connections/{name}: create (201) or replace (200) a connection; client_secret is write-only."""

    def call() -> func.HttpResponse:
        who = _who(req)
        connection, created = management().put_connection(who, req.route_params["name"], _body(req))
        return _json(connection.to_dict(), 201 if created else 200)

    return _handle(call)


def patch_connection(req: func.HttpRequest) -> func.HttpResponse:
    """PATCH connections/{name}: change the fields given (acknowledge privacy, share, new secret...)."""

    def call() -> func.HttpResponse:
        who = _who(req)
        return _json(management().patch_connection(who, req.route_params["name"], _body(req)).to_dict())

    return _handle(call)


def delete_connection(req: func.HttpRequest) -> func.HttpResponse:
    """DELETE connections/{name}: its exports are disabled and its secrets deleted from the vault."""
    return _handle(lambda: _json(management().delete_connection(_who(req), req.route_params["name"])))


def authorize_connection(req: func.HttpRequest) -> func.HttpResponse:
    """GET connections/{name}/authorize: 302 to Constant Contact's sign-in and consent page."""

    def call() -> func.HttpResponse:
        who = _who(req)
        mgmt = management()
        redirect_uri = mgmt.redirect_uri(_base_url(req))
        url = mgmt.begin_authorization(who, req.route_params["name"], redirect_uri=redirect_uri)
        return func.HttpResponse(status_code=302, headers={"Location": url, "Cache-Control": "no-store"})

    return _handle(call)


def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    """GET oauth/callback?code&state: where Constant Contact sends the browser back; connects the account.

    Anonymous at the gateway: Constant Contact's ``code`` parameter is the name the Functions host reads
    a function key from, so no key can ride along. The single-use state, bound to the admin who started
    the authorization (and their App Service sign-in), protects it instead."""

    def call() -> func.HttpResponse:
        who = _who(req)
        params = {k: str(v) for k, v in req.params.items()}
        return _json(management().complete_authorization(who, params).to_dict())

    return _handle(call)


def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """GET openapi.json: the management API's OpenAPI 3.0 description (function key only, no role)."""
    return _handle(lambda: _json(spec(server_url=f"{_base_url(req)}/api")))


def health(req: func.HttpRequest) -> func.HttpResponse:
    def call() -> func.HttpResponse:
        result = service().health()
        return _json(result, 200 if result["status"] == "ok" else 503)

    return _handle(call)


# -- timer and blob ------------------------------------------------------------------------------


def on_timer(timer: func.TimerRequest) -> None:
    outcome = service().on_timer(past_due=timer.past_due)
    log.info("timer: resumed %d run(s), started %d", len(outcome["resumed"]), len(outcome["started"]))


def on_segment(blob: func.InputStream) -> None:
    """A new segment blob. The binding's stream is not read: the exporter streams the blob itself with
    azure-storage-blob, so a large file never sits in memory. A file that cannot be parsed ends as a
    failed run with its report; nothing is raised, so the host does not retry it into the poison queue."""
    runs = service().on_segment_blob(blob.name or "", length=blob.length)
    log.info("segment blob: %d export run(s)", len(runs))
