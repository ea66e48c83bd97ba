"""Azure Functions (Python v2 model): three triggers on one exporter, and its management API. Each function
is one call into exporter.functions; the bindings below are the whole of this file's job.

HTTP routes need a function key (FUNCTION level) and, except health and openapi.json, a caller role from
App Service authentication (exporter.principals). The OAuth callback alone is ANONYMOUS at the gateway:
Constant Contact's redirect carries ``code``, the query parameter the host reads function keys from."""

import os

import azure.functions as func

from exporter import functions
from exporter.observability import configure_logging, configure_telemetry

configure_logging(json_handler=False)  # the host prints; records get the run id, emails and tokens masked
configure_telemetry()  # OpenTelemetry to Application Insights when its connection string is set

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# Flex Consumption plans need the Event Grid source for blob triggers; local runs against Azurite use
# polling (set SEGMENTS_BLOB_SOURCE=LogsAndContainerScan in local.settings.json).
_BLOB_SOURCE = (
    func.BlobSource.LOGS_AND_CONTAINER_SCAN
    if os.environ.get("SEGMENTS_BLOB_SOURCE") == "LogsAndContainerScan"
    else func.BlobSource.EVENT_GRID
)


@app.timer_trigger(
    arg_name="timer", schedule="%EXPORT_TIMER_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def scheduled_exports(timer: func.TimerRequest) -> None:
    functions.on_timer(timer)


@app.blob_trigger(
    arg_name="blob", path="%SEGMENTS_CONTAINER%/{name}", connection="EXPORTER_STORAGE", source=_BLOB_SOURCE
)
def segment_arrived(blob: func.InputStream) -> None:
    functions.on_segment(blob)


@app.route(route="exports/{name}/runs", methods=["POST"])
def start_run(req: func.HttpRequest) -> func.HttpResponse:
    return functions.start_run(req)


@app.route(route="exports/{name}/runs", methods=["GET"])
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return functions.list_runs(req)


@app.route(route="exports/{name}/runs/{run_id}", methods=["GET"])
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    return functions.get_run(req)


@app.route(route="exports", methods=["GET"])
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return functions.list_exports(req)


@app.route(route="exports/{name}", methods=["GET"])
def get_export(req: func.HttpRequest) -> func.HttpResponse:
    return functions.get_export(req)


@app.route(route="exports/{name}", methods=["PUT"])
def put_export(req: func.HttpRequest) -> func.HttpResponse:
    return functions.put_export(req)


@app.route(route="exports/{name}", methods=["DELETE"])
def delete_export(req: func.HttpRequest) -> func.HttpResponse:
    return functions.delete_export(req)


@app.route(route="connections", methods=["GET"])
def list_connections(req: func.HttpRequest) -> func.HttpResponse:
    return functions.list_connections(req)


@app.route(route="connections/{name}", methods=["GET"])
def get_connection(req: func.HttpRequest) -> func.HttpResponse:
    return functions.get_connection(req)


@app.route(route="connections/{name}", methods=["PUT"])
def put_connection(req: func.HttpRequest) -> func.HttpResponse:
    return functions.put_connection(req)


@app.route(route="connections/{name}", methods=["PATCH"])
def patch_connection(req: func.HttpRequest) -> func.HttpResponse:
    return functions.patch_connection(req)


@app.route(route="connections/{name}", methods=["DELETE"])
def delete_connection(req: func.HttpRequest) -> func.HttpResponse:
    return functions.delete_connection(req)


@app.route(route="connections/{name}/authorize", methods=["GET"])
def authorize_connection(req: func.HttpRequest) -> func.HttpResponse:
    return functions.authorize_connection(req)


@app.route(route="oauth/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    return functions.oauth_callback(req)


@app.route(route="openapi.json", methods=["GET"])
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return functions.openapi(req)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return functions.health(req)
