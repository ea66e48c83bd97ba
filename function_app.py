"""Azure Functions (Python v2 model): three triggers on one exporter. Each function is one call into
exporter.functions; the bindings below are the whole of this file's job."""

import os

import azure.functions as func

from exporter import functions

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


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return functions.health(req)
