"""What the Azure Functions triggers do, kept out of function_app.py so that file stays a list of
bindings. Each handler takes the trigger's azure-functions object and makes one call into the service.

HTTP answers are JSON; a bad request gets a 4xx with ``{"error": ..., "fields"?: ...}``, never a stack.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import azure.functions as func
import orjson

from .errors import ConfigError
from .exports import ExportConfig, FieldErrors
from .service import AppSettings, ExportService, NotFoundError, ensure_containers

log = logging.getLogger(__name__)

_service: ExportService | None = None
_service_lock = threading.Lock()


def service() -> ExportService:
    """The process-wide service, built from app settings on first use (and its containers ensured)."""
    global _service
    with _service_lock:
        if _service is None:
            _service = ExportService(AppSettings.from_env())
            ensure_containers(_service)
        return _service


def reset() -> None:
    """Forget the service (tests change app settings between cases)."""
    global _service
    with _service_lock:
        _service = None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body, option=orjson.OPT_INDENT_2),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def _error(status: int, message: str, **extra: Any) -> func.HttpResponse:
    return _json({"error": message, **extra}, status)


def _handle(call: Any) -> func.HttpResponse:
    """Map the exception hierarchy to HTTP statuses in one place."""
    try:
        result: func.HttpResponse = call()
        return result
    except NotFoundError as exc:
        return _error(404, str(exc))
    except FieldErrors as exc:
        return _error(400, "invalid configuration", fields=exc.errors)
    except ConfigError as exc:
        return _error(400, str(exc))
    except Exception:
        log.exception("unexpected error in HTTP handler")
        return _error(500, "internal error; see the function logs")


def _body(req: func.HttpRequest) -> Any:
    raw = req.get_body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ConfigError("the request body is not valid JSON") from None


def _base_url(req: func.HttpRequest) -> str:
    url = str(req.url)
    marker = "/api/"
    return url[: url.index(marker)] if marker in url else url.rstrip("/")


# -- HTTP ----------------------------------------------------------------------------------------


def start_run(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/{name}/runs: 202 at once; the run goes on in the background (the HTTP front end
    allows 230 s, a large export takes longer)."""

    def call() -> func.HttpResponse:
        name = req.route_params["name"]
        body = _body(req)
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise FieldErrors({"dry_run": "must be true or false"})
        handle = service().start_run(name, dry_run=dry_run, trigger="http", background=True)
        status_url = f"{_base_url(req)}/api/exports/{name}/runs/{handle.run_id}"
        return _json(
            {"run_id": handle.run_id, "status": handle.status, "status_url": status_url},
            202,
            headers={"Location": status_url},
        )

    return _handle(call)


def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs/{run_id}: the run's report (status queued, running, pending, completed...)."""
    return _handle(lambda: _json(service().run_status(req.route_params["name"], req.route_params["run_id"])))


def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs?limit=20: recent runs, newest first."""

    def call() -> func.HttpResponse:
        raw = req.params.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise FieldErrors({"limit": "an integer from 1 to 100"})
        return _json({"runs": service().list_runs(req.route_params["name"], limit=int(raw))})

    return _handle(call)


def put_export(req: func.HttpRequest) -> func.HttpResponse:
    """PUT exports/{name}: create or replace an export's configuration."""

    def call() -> func.HttpResponse:
        body = _body(req)
        if isinstance(body, dict):
            body = {**body, "name": req.route_params["name"]}
        config = ExportConfig.from_dict(body)
        svc = service()
        svc.exports.put(config)
        return _json(config.to_dict(), 200)

    return _handle(call)


def get_export(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json(service().export(req.route_params["name"]).to_dict()))


def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json({"exports": [c.to_dict() for c in service().exports.list()]}))


def delete_export(req: func.HttpRequest) -> func.HttpResponse:
    def call() -> func.HttpResponse:
        svc = service()
        svc.export(req.route_params["name"])
        svc.exports.delete(req.route_params["name"])
        return func.HttpResponse(status_code=204)

    return _handle(call)


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
