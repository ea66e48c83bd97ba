"""The Functions app as the host runs it: bindings indexed by FunctionApp.get_functions(), and each
function called with real azure-functions objects against Azurite, the Constant Contact sandbox and, for
Key Vault, the real SecretClient talking to a local HTTPS Key Vault."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from dataclasses import replace
from pathlib import Path

import azure.functions as func
import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from exporter import functions
from exporter.config import ApiSettings, Settings
from exporter.connections import Connection
from exporter.leases import BlobLeaseLock
from exporter.principals import encode_principal
from exporter.secrets import FileSecretStore, KeyVaultSecretStore, SecretNames
from exporter.service import AppSettings, ExportService, ensure_containers
from exporter.tokens import TokenProvider
from sandbox import Sandbox, SandboxConfig
from tests.conftest import CONTACT_CSV, requires_sample
from tests.keyvault_server import LocalKeyVault

NAMES = SecretNames()
ADMIN = encode_principal("admin@contoso.com", ["Exporter.Admin"])
# The CLI's original connection, as an admin would have set it up: privacy acknowledged, authorized.
DEFAULT_CONNECTION = Connection(
    name="default",
    display_name="Default",
    client_id="sandbox-client-id",
    privacy_acknowledged=True,
    status="connected",
)
EXPORT = {
    "mapping": {
        "email": "EMail",
        "first_name": "FirstName",
        "last_name": "LastName",
        "fields": {"job_title": "Occupation"},
    },
    "segments": ["contoso/Contact.csv"],
}


def call(indexed, name, *args):
    return indexed[name].get_user_function()(*args)


@pytest.fixture
def app_env(monkeypatch, tmp_path, azurite, sandbox, secret_store):
    """App settings as local.settings.json would give them, on fresh containers."""
    suffix = uuid.uuid4().hex[:10]
    secrets_file = tmp_path / "secrets.json"
    store = FileSecretStore(secrets_file)
    for name in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token):
        store.set(name, secret_store.get(name))
    env = {
        "EXPORTER_STORAGE": azurite.connection_string,
        "SEGMENTS_CONTAINER": f"segments-{suffix}",
        "RESULTS_CONTAINER": f"results-{suffix}",
        "STATE_CONTAINER": f"state-{suffix}",
        "EXPORTER_SECRET_STORE": "file",
        "EXPORTER_SECRETS_FILE": str(secrets_file),
        "CC_API_BASE_URL": sandbox.api_base_url,
        "CC_OAUTH_BASE_URL": sandbox.oauth_base_url,
        "CC_POLL_INTERVAL_SECONDS": "0.02",
        "CC_POLL_INTERVAL_MAX_SECONDS": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    functions.reset()
    functions.service().connections.create(DEFAULT_CONNECTION)
    yield env
    functions.reset()


@pytest.fixture
def blobs(azurite, app_env):
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


def upload(blobs, env, path, data: bytes) -> func.blob.InputStream:
    container = env["SEGMENTS_CONTAINER"]
    blobs.get_container_client(container).upload_blob(path, data, overwrite=True)
    return func.blob.InputStream(
        data=b"", name=f"{container}/{path}", length=len(data), uri=f"http://127.0.0.1/{container}/{path}"
    )


def http(method, url, *, body=b"", route_params=None, params=None):
    return func.HttpRequest(
        method,
        f"http://localhost:7071/api/{url}",
        body=body,
        route_params=route_params or {},
        params=params or {},
        headers={"Content-Type": "application/json", "X-MS-CLIENT-PRINCIPAL": ADMIN},
    )


def put_export(indexed, name, config, list_id):
    body = json.dumps({**config, "list_id": list_id}).encode()
    return call(indexed, "put_export", http("PUT", f"exports/{name}", body=body, route_params={"name": name}))


def report_of(blobs, env, export):
    container = blobs.get_container_client(env["RESULTS_CONTAINER"])
    names = [b.name for b in container.list_blobs(name_starts_with=f"exports/{export}/runs/")]
    reports = sorted(n for n in names if n.endswith("report.json"))
    return [orjson.loads(container.download_blob(n).readall()) for n in reports], names


# -- bindings ------------------------------------------------------------------------------------


def test_bindings_as_the_host_indexes_them(indexed):
    timer = json.loads(indexed["scheduled_exports"].get_function_json())["bindings"][0]
    assert timer == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%EXPORT_TIMER_SCHEDULE%",
        "runOnStartup": False,
        "useMonitor": True,
    }
    blob = json.loads(indexed["segment_arrived"].get_function_json())["bindings"][0]
    assert blob == {
        "direction": "IN",
        "type": "blobTrigger",
        "name": "blob",
        "path": "%SEGMENTS_CONTAINER%/{name}",
        "connection": "EXPORTER_STORAGE",
        "source": "EventGrid",
    }
    routes = {}
    for name, fn in indexed.items():
        trigger = json.loads(fn.get_function_json())["bindings"][0]
        if trigger["type"] == "httpTrigger":
            # The OAuth callback cannot carry a function key: Constant Contact's `code` takes its place.
            assert trigger["authLevel"] == ("ANONYMOUS" if name == "oauth_callback" else "FUNCTION")
            routes[name] = (trigger["route"], tuple(trigger["methods"]))
    assert routes == {
        "start_run": ("exports/{name}/runs", ("POST",)),
        "list_runs": ("exports/{name}/runs", ("GET",)),
        "get_run": ("exports/{name}/runs/{run_id}", ("GET",)),
        "list_exports": ("exports", ("GET",)),
        "get_export": ("exports/{name}", ("GET",)),
        "put_export": ("exports/{name}", ("PUT",)),
        "delete_export": ("exports/{name}", ("DELETE",)),
        "list_connections": ("connections", ("GET",)),
        "get_connection": ("connections/{name}", ("GET",)),
        "put_connection": ("connections/{name}", ("PUT",)),
        "patch_connection": ("connections/{name}", ("PATCH",)),
        "delete_connection": ("connections/{name}", ("DELETE",)),
        "authorize_connection": ("connections/{name}/authorize", ("GET",)),
        "oauth_callback": ("oauth/callback", ("GET",)),
        "openapi": ("openapi.json", ("GET",)),
        "health": ("health", ("GET",)),
    }


def test_host_json_and_example_settings_cover_what_the_app_reads():
    root = Path(__file__).resolve().parents[1]
    host = json.loads((root / "host.json").read_text())
    assert (
        host["version"] == "2.0"
        and host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    )
    assert host["extensions"]["blobs"]["poisonBlobThreshold"] >= 1 and host["functionTimeout"]
    values = json.loads((root / "local.settings.example.json").read_text())["Values"]
    for key in (
        "EXPORTER_STORAGE",
        "SEGMENTS_CONTAINER",
        "RESULTS_CONTAINER",
        "STATE_CONTAINER",
        "EXPORT_TIMER_SCHEDULE",
        "SEGMENTS_BLOB_SOURCE",
        "EXPORTER_SECRET_STORE",
        "KEY_VAULT_URL",
        "CC_API_BASE_URL",
        "CC_OAUTH_BASE_URL",
        "EXPORTER_MAX_PROFILES",
        "EXPORTER_EMAIL_MAX_LENGTH",
    ):
        assert key in values
    assert len(values["EXPORT_TIMER_SCHEDULE"].split()) == 6


# -- blob trigger --------------------------------------------------------------------------------


@requires_sample
def test_segment_upload_ends_as_a_completed_run_in_the_results_container(indexed, app_env, blobs, sandbox):
    list_id = sandbox.create_list("Contoso")
    assert put_export(indexed, "contoso", EXPORT, list_id).status_code == 200
    stream = upload(blobs, app_env, "contoso/Contact.csv", CONTACT_CSV.read_bytes())
    call(indexed, "segment_arrived", stream)
    reports, names = report_of(blobs, app_env, "contoso")
    assert len(reports) == 1 and reports[0]["status"] == "completed" and reports[0]["trigger"] == "blob"
    assert reports[0]["received"] == 5000 and reports[0]["delivered"] == len(sandbox.list_members(list_id))
    assert any(n.endswith("/rejects.csv") for n in names)
    # nothing was written to the segments container, so the trigger cannot fire on our own output
    seg = blobs.get_container_client(app_env["SEGMENTS_CONTAINER"])
    assert [b.name for b in seg.list_blobs()] == ["contoso/Contact.csv"]
    # the same event again (at-least-once delivery): processed once
    imports = sandbox.count("POST", "/v3/activities/contacts_json_import")
    call(indexed, "segment_arrived", stream)
    assert sandbox.count("POST", "/v3/activities/contacts_json_import") == imports
    assert len(report_of(blobs, app_env, "contoso")[0]) == 1


def test_a_mirror_export_configured_over_http_removes_the_leaver(indexed, app_env, blobs, sandbox):
    list_id = sandbox.create_list("Mirror")
    sandbox.add_contact("form@example.com", list_ids=[list_id])  # a sign-up form's member
    config = {**EXPORT, "segments": ["m.csv"], "sync": {"mode": "mirror", "shrink_guard": 0.5}}
    saved = put_export(indexed, "mirror", config, list_id)
    assert saved.status_code == 200 and json.loads(saved.get_body())["sync"]["mode"] == "mirror"
    header = b"EMail,FirstName,LastName,Occupation\n"
    day1 = header + b"a@example.com,A,A,X\nb@example.com,B,B,X\nc@example.com,C,C,X\n"
    call(indexed, "segment_arrived", upload(blobs, app_env, "m.csv", day1))
    day2 = header + b"a@example.com,A,A,X\nb@example.com,B,B,X\n"
    call(indexed, "segment_arrived", upload(blobs, app_env, "m.csv", day2))  # a new version of the blob
    reports, _ = report_of(blobs, app_env, "mirror")
    assert [r["status"] for r in reports] == ["completed", "completed"]
    assert reports[1]["sync"]["removed"] == 1 and reports[1]["submitted"] == 0
    members = sorted(m["email_address"] for m in sandbox.list_members(list_id))
    assert members == ["a@example.com", "b@example.com", "form@example.com"]
    bad = put_export(indexed, "mirror", {**config, "sync": {"mode": "sideways"}}, list_id)
    assert bad.status_code == 400 and "sync" in json.loads(bad.get_body())["fields"]


def test_zero_length_and_unwatched_blobs_start_nothing(indexed, app_env, blobs, sandbox):
    put_export(indexed, "watch", {**EXPORT, "segments": ["watched.csv"]}, sandbox.create_list("L"))
    checked = sandbox.count("*", "/v3")  # saving the export looked the list up
    call(indexed, "segment_arrived", upload(blobs, app_env, "watched.csv", b""))
    call(indexed, "segment_arrived", upload(blobs, app_env, "other.csv", b"email\na@example.com\n"))
    assert report_of(blobs, app_env, "watch")[0] == []
    assert sandbox.count("*", "/v3") == checked


def test_an_unparseable_file_is_reported_not_retried(indexed, app_env, blobs, sandbox):
    put_export(indexed, "bad", {**EXPORT, "segments": ["drop/"]}, sandbox.create_list("L"))
    stream = upload(
        blobs, app_env, "drop/broken.csv", b"EMail,FirstName\nok@example.com,A\nbad\xff@x.com,B\n"
    )
    call(indexed, "segment_arrived", stream)  # returns normally: no retry, no poison queue
    reports, _ = report_of(blobs, app_env, "bad")
    assert reports[0]["status"] == "failed" and reports[0]["error"]["type"] == "SegmentError"
    assert reports[0]["segments"][0]["path"] == "drop/broken.csv"
    assert sandbox.count("POST", "/v3/activities/contacts_json_import") == 0


def cdm_export(indexed, app_env, sandbox, name: str) -> Path:
    """An export ``name`` of the CDM folder ci/Segments, and a local copy of that folder (built by the
    readers' own CDM builder from the sample, not yet uploaded)."""
    from tests.test_readers import build_cdm

    put_export(indexed, name, {**EXPORT, "segments": ["ci/Segments"]}, sandbox.create_list(name))
    folder = Path(app_env["EXPORTER_SECRETS_FILE"]).parent / name
    build_cdm(folder)
    return folder


@requires_sample
def test_cdm_partitions_wait_for_model_json(indexed, app_env, blobs, sandbox):
    folder = cdm_export(indexed, app_env, sandbox, "cdm")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    partitions = [p for p in files if p.suffix == ".csv"]
    for path in partitions:
        stream = upload(
            blobs, app_env, f"ci/Segments/{path.relative_to(folder).as_posix()}", path.read_bytes()
        )
        call(indexed, "segment_arrived", stream)
    assert report_of(blobs, app_env, "cdm")[0] == []  # partitions alone start nothing
    model = folder / "model.json"
    call(indexed, "segment_arrived", upload(blobs, app_env, "ci/Segments/model.json", model.read_bytes()))
    reports, _ = report_of(blobs, app_env, "cdm")
    assert len(reports) == 1 and reports[0]["status"] == "completed", reports[0].get("error")
    assert reports[0]["received"] == 5000 and reports[0]["segments"][0]["tables"] == len(partitions)


@requires_sample
def test_cdm_model_json_first_runs_once_when_the_last_partition_lands(indexed, app_env, blobs, sandbox):
    folder = cdm_export(indexed, app_env, sandbox, "cdm2")
    partitions = sorted(p for p in folder.rglob("*.csv"))
    assert len(partitions) > 1
    call(
        indexed,
        "segment_arrived",
        upload(blobs, app_env, "ci/Segments/model.json", (folder / "model.json").read_bytes()),
    )
    for n, path in enumerate(partitions, start=1):
        name = f"ci/Segments/{path.relative_to(folder).as_posix()}"
        call(indexed, "segment_arrived", upload(blobs, app_env, name, path.read_bytes()))
        reports, _ = report_of(blobs, app_env, "cdm2")
        assert len(reports) == (1 if n == len(partitions) else 0)  # nothing until the run is complete
    assert reports[0]["status"] == "completed" and reports[0]["received"] == 5000
    # the same event delivered again starts nothing more
    call(
        indexed,
        "segment_arrived",
        func.blob.InputStream(data=b"", name=f"{app_env['SEGMENTS_CONTAINER']}/{name}", length=1),
    )
    assert len(report_of(blobs, app_env, "cdm2")[0]) == 1
    # model.json rewritten (a new export version): one more run, which has nothing new to send
    call(
        indexed,
        "segment_arrived",
        upload(blobs, app_env, "ci/Segments/model.json", (folder / "model.json").read_bytes()),
    )
    reports, _ = report_of(blobs, app_env, "cdm2")
    assert len(reports) == 2 and reports[1]["submitted"] == 0 and reports[1]["sync"]["unchanged"] > 4900


# -- HTTP ----------------------------------------------------------------------------------------


@requires_sample
def test_http_start_returns_202_and_the_status_url_shows_the_report(indexed, app_env, blobs, sandbox):
    upload(blobs, app_env, "contoso/Contact.csv", CONTACT_CSV.read_bytes())
    put_export(indexed, "contoso", EXPORT, sandbox.create_list("HTTP"))
    response = call(
        indexed, "start_run", http("POST", "exports/contoso/runs", route_params={"name": "contoso"})
    )
    assert response.status_code == 202
    started = json.loads(response.get_body())
    assert started["status"] == "queued" and response.headers["Location"] == started["status_url"]
    assert started["status_url"] == f"http://localhost:7071/api/exports/contoso/runs/{started['run_id']}"
    deadline = time.monotonic() + 60
    while True:
        got = call(
            indexed,
            "get_run",
            http(
                "GET",
                f"exports/contoso/runs/{started['run_id']}",
                route_params={"name": "contoso", "run_id": started["run_id"]},
            ),
        )
        report = json.loads(got.get_body())
        if report["status"] in ("completed", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got.status_code == 200 and report["status"] == "completed" and report["trigger"] == "http"
    listed = call(indexed, "list_runs", http("GET", "exports/contoso/runs", route_params={"name": "contoso"}))
    runs = json.loads(listed.get_body())["runs"]
    assert [r["run_id"] for r in runs] == [started["run_id"]] and runs[0]["delivered"] == report["delivered"]


@pytest.mark.parametrize(
    "method,fn,url,route,body,status,words",
    [
        ("POST", "start_run", "exports/nope/runs", {"name": "nope"}, b"", 404, "not found"),
        ("GET", "get_run", "exports/x/runs/r", {"name": "x", "run_id": "r"}, b"", 404, "not found"),
        ("GET", "get_export", "exports/nope", {"name": "nope"}, b"", 404, "not found"),
        ("PUT", "put_export", "exports/x", {"name": "x"}, b"{not json", 400, "not valid JSON"),
        (
            "PUT",
            "put_export",
            "exports/Bad_Name",
            {"name": "Bad_Name"},
            b'{"list_id": "x", "mapping": {"email": "e"}, "segments": ["a.csv"]}',
            400,
            "invalid configuration",
        ),
        (
            "PUT",
            "put_export",
            "exports/x",
            {"name": "x"},
            b'{"list_id": "x", "segments": []}',
            400,
            "mapping",
        ),
    ],
)
def test_bad_requests_get_4xx_with_a_json_error(
    indexed, app_env, method, fn, url, route, body, status, words
):
    response = call(indexed, fn, http(method, url, body=body, route_params=route))
    assert response.status_code == status
    payload = json.loads(response.get_body())
    assert words in json.dumps(payload)


@pytest.mark.parametrize(
    "body,field",
    [
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": "e"}, "segments": ["a.csv"],'
            b' "schedul": "0 0 6 * * *"}',
            "schedul",
        ),
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": 123}, "segments": ["a.csv"]}',
            "mapping",
        ),
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": "e", "first_name": true},'
            b' "segments": ["a.csv"]}',
            "mapping",
        ),
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": "e", "fields": {"a=b": "c"}},'
            b' "segments": ["a.csv"]}',
            "mapping",
        ),
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": "e"}, "segments": ["a.csv"],'
            b' "schedule": 5}',
            "schedule",
        ),
        (
            b'{"list_id": "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10", "mapping": {"email": "e"},'
            b' "segments": ["..\\\\x.csv"]}',
            "segments",
        ),
    ],
)
def test_export_configs_are_strict_about_types_and_unknown_fields(indexed, app_env, body, field):
    response = call(
        indexed, "put_export", http("PUT", "exports/strict", body=body, route_params={"name": "strict"})
    )
    assert response.status_code == 400
    assert field in json.loads(response.get_body())["fields"]
    assert (
        call(
            indexed, "get_export", http("GET", "exports/strict", route_params={"name": "strict"})
        ).status_code
        == 404
    )


@pytest.mark.parametrize(
    "fn,kind,body",
    [
        (
            "put_connection",
            "connections",
            b'{"client_id": "abc", "client_secret": "s", "display_name": "\\ud800"}',
        ),
        ("put_export", "exports", b"[" * 1000 + b"]" * 1000),
        ("put_export", "exports", b"{" + b" " * 300_000 + b"}"),
    ],
)
def test_bodies_with_invalid_text_deep_nesting_or_excess_size_get_a_400(indexed, app_env, fn, kind, body):
    response = call(indexed, fn, http("PUT", f"{kind}/x", body=body, route_params={"name": "x"}))
    assert response.status_code == 400 and "error" in json.loads(response.get_body())
    assert (
        call(indexed, f"get_{kind[:-1]}", http("GET", f"{kind}/x", route_params={"name": "x"})).status_code
        == 404
    )


def test_run_ids_sort_by_time_within_a_second():
    from datetime import UTC, datetime, timedelta

    from exporter.report import is_run_id, new_run_id

    first = datetime(2026, 12, 3, 16, 5, 1, 999_000, tzinfo=UTC)
    ids = [new_run_id(first + timedelta(milliseconds=n)) for n in (-998, -1, 0, 1)]  # 1.001 .. 2.000 s
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert ids[2].startswith("20261203T160501999Z-")
    assert all(map(is_run_id, [*ids, "20261203T160501Z-3f9a1c"]))  # and the older form
    assert not any(map(is_run_id, ["", "../x", ids[0] + "\n", ids[0][:-1]]))


@pytest.mark.parametrize(
    "run_id", ["..", "../x", "20261203T000000Z-zzzzzz", "20261203T0000001Z-abcdef", "x\x00y"]
)
def test_odd_run_ids_are_not_found_not_a_500(indexed, app_env, sandbox, run_id):
    put_export(indexed, "odd", {**EXPORT, "segments": ["a.csv"]}, sandbox.create_list("Odd"))
    response = call(
        indexed,
        "get_run",
        http("GET", f"exports/odd/runs/{run_id}", route_params={"name": "odd", "run_id": run_id}),
    )
    assert response.status_code == 404


def test_simultaneous_starts_of_one_export_make_one_run(indexed, app_env, blobs, monkeypatch):
    import concurrent.futures

    with Sandbox(SandboxConfig(activity_step_seconds=0.5)) as slow:
        monkeypatch.setenv("CC_API_BASE_URL", slow.api_base_url)
        monkeypatch.setenv("CC_OAUTH_BASE_URL", slow.oauth_base_url)
        FileSecretStore(app_env["EXPORTER_SECRETS_FILE"]).set(NAMES.refresh_token, slow.issue_refresh_token())
        functions.reset()
        put_export(indexed, "busy", {**EXPORT, "segments": ["b.csv"]}, slow.create_list("Busy"))
        upload(blobs, app_env, "b.csv", b"EMail,FirstName,LastName,Occupation\na@example.com,A,B,C\n")
        request = http("POST", "exports/busy/runs", route_params={"name": "busy"})
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: call(indexed, "start_run", request), range(4)))
        started = [json.loads(a.get_body()) for a in answers]
        assert all(a.status_code == 202 for a in answers)
        assert len({s["run_id"] for s in started}) == 1
        assert sum(not s["already_running"] for s in started) == 1
        deadline = time.monotonic() + 30
        while report_of(blobs, app_env, "busy")[0][0]["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_field_errors_name_each_field(indexed, app_env):
    body = b'{"list_id": "123", "mapping": {"email": "e"}, "segments": ["a.csv"], "schedule": "* * *"}'
    response = call(indexed, "put_export", http("PUT", "exports/ok", body=body, route_params={"name": "ok"}))
    fields = json.loads(response.get_body())["fields"]
    assert set(fields) == {"schedule", "list_id"}


def test_health(indexed, app_env):
    response = call(indexed, "health", http("GET", "health"))
    assert response.status_code == 200
    assert json.loads(response.get_body())["checks"] == {"segments": "ok", "results": "ok", "state": "ok"}


# -- timer ---------------------------------------------------------------------------------------


def test_timer_runs_a_due_export_once_even_when_past_due(indexed, app_env, blobs, sandbox):
    list_id = sandbox.create_list("Timer")
    put_export(indexed, "nightly", {**EXPORT, "segments": ["n.csv"], "schedule": "0 0 3 * * *"}, list_id)
    upload(blobs, app_env, "n.csv", b"EMail,FirstName,LastName,Occupation\na@example.com,A,B,C\n")
    call(indexed, "scheduled_exports", func.timer.TimerRequest(past_due=False))
    assert report_of(blobs, app_env, "nightly")[0] == []  # a new schedule waits for its next fire
    state = blobs.get_container_client(app_env["STATE_CONTAINER"])
    state.upload_blob("schedules/nightly.json", b'{"last_fire": "2000-01-01T03:00:00Z"}', overwrite=True)
    call(indexed, "scheduled_exports", func.timer.TimerRequest(past_due=True))
    call(indexed, "scheduled_exports", func.timer.TimerRequest(past_due=False))  # the regular tick after it
    reports, _ = report_of(blobs, app_env, "nightly")
    assert len(reports) == 1 and reports[0]["status"] == "completed" and reports[0]["trigger"] == "timer"
    assert [m["email_address"] for m in sandbox.list_members(list_id)] == ["a@example.com"]


def test_timer_completes_a_pending_run(indexed, app_env, blobs, monkeypatch):
    with Sandbox(SandboxConfig(activity_step_seconds=1.0)) as slow:
        monkeypatch.setenv("CC_API_BASE_URL", slow.api_base_url)
        monkeypatch.setenv("CC_OAUTH_BASE_URL", slow.oauth_base_url)
        monkeypatch.setenv("CC_ACTIVITY_TIMEOUT_SECONDS", "0.3")
        store = FileSecretStore(app_env["EXPORTER_SECRETS_FILE"])
        store.set(NAMES.refresh_token, slow.issue_refresh_token())
        functions.reset()
        list_id = slow.create_list("Slow")
        put_export(indexed, "slow", {**EXPORT, "segments": ["s.csv"]}, list_id)
        stream = upload(
            blobs, app_env, "s.csv", b"EMail,FirstName,LastName,Occupation\na@example.com,A,B,C\n"
        )
        call(indexed, "segment_arrived", stream)
        reports, _ = report_of(blobs, app_env, "slow")
        assert reports[0]["status"] == "pending" and reports[0]["activities"][0]["state"] != "completed"
        # one run at a time per export: a second start joins the pending run instead of sending again
        again = call(indexed, "start_run", http("POST", "exports/slow/runs", route_params={"name": "slow"}))
        joined = json.loads(again.get_body())
        assert again.status_code == 202 and joined["already_running"] is True
        assert (joined["run_id"], joined["status"]) == (reports[0]["run_id"], "pending")
        monkeypatch.setenv("CC_ACTIVITY_TIMEOUT_SECONDS", "30")
        functions.reset()
        call(indexed, "scheduled_exports", func.timer.TimerRequest(past_due=False))
        reports, _ = report_of(blobs, app_env, "slow")
        assert len(reports) == 1 and reports[0]["status"] == "completed" and reports[0]["delivered"] == 1
        assert slow.count("POST", "/v3/activities/contacts_json_import") == 1  # resumed, not resubmitted
        state = blobs.get_container_client(app_env["STATE_CONTAINER"])
        assert [b.name for b in state.list_blobs(name_starts_with="active/")] == []
        assert [b.name for b in state.list_blobs(name_starts_with="running/")] == []  # claim released


# -- tokens across processes and Key Vault -------------------------------------------------------


def _refresh_in_child(secrets_file, connection_string, container, token_url, barrier, out):
    lock = BlobLeaseLock(
        BlobServiceClient.from_connection_string(connection_string).get_container_client(container),
        "locks/token-default",
        lease_seconds=15,
    )
    tokens = TokenProvider(FileSecretStore(secrets_file), token_url=token_url, lock=lock)
    barrier.wait()
    out.put(tokens.access_token())


def test_two_processes_refreshing_the_same_token_make_one_token_request(
    tmp_path, azurite, sandbox, secret_store
):
    secrets_file = tmp_path / "secrets.json"
    store = FileSecretStore(secrets_file)
    for name in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token):
        store.set(name, secret_store.get(name))
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    container = f"state-{uuid.uuid4().hex[:10]}"
    args = (
        str(secrets_file),
        azurite.connection_string,
        container,
        sandbox.oauth_base_url + "/token",
        barrier,
        out,
    )
    procs = [ctx.Process(target=_refresh_in_child, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    tokens = [out.get(timeout=60), out.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
    assert tokens[0] == tokens[1]
    assert sandbox.count("POST", "/oauth2/default/v1/token") == 1
    assert json.loads(secrets_file.read_text())[NAMES.refresh_token] != secret_store.get(NAMES.refresh_token)


@requires_sample
def test_export_with_credentials_in_key_vault(azurite, sandbox, secret_store, tmp_path):
    with LocalKeyVault() as vault:
        for name in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token):
            vault.seed(name, secret_store.get(name))
        secrets = KeyVaultSecretStore(
            vault.vault_url,
            credential=vault.credential,
            connection_verify=vault.ca_bundle_path,
            verify_challenge_resource=False,
        )
        suffix = uuid.uuid4().hex[:10]
        api = ApiSettings(
            api_base_url=sandbox.api_base_url,
            oauth_base_url=sandbox.oauth_base_url,
            poll_interval_seconds=0.02,
            poll_interval_max_seconds=0.1,
        )
        app = AppSettings(
            settings=replace(Settings(secret_store="env"), api=api),
            storage_connection_string=azurite.connection_string,
            segments_container=f"s-{suffix}",
            results_container=f"r-{suffix}",
            state_container=f"t-{suffix}",
        )
        service = ExportService(app, secrets=secrets)
        ensure_containers(service)
        service.connections.create(DEFAULT_CONNECTION)
        service.blob_service.get_container_client(app.segments_container).upload_blob(
            "c.csv", CONTACT_CSV.read_bytes()
        )
        from exporter.exports import ExportConfig

        config = ExportConfig.from_dict(
            {**EXPORT, "name": "kv", "segments": ["c.csv"], "list_id": sandbox.create_list("KV")}
        )
        service.exports.put(config)
        service.start_run("kv", trigger="http")
        report = service.run_status("kv", service.list_runs("kv")[0]["run_id"])
        assert report["status"] == "completed" and report["delivered"] > 4900
        versions = vault.secrets[NAMES.refresh_token]
        assert len(versions) == 2 and versions[-1].value != secret_store.get(NAMES.refresh_token)
        assert any(r.method == "PUT" and NAMES.refresh_token in r.path for r in vault.requests)
