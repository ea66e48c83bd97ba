"""Observability: masked, run-stamped logs; run metrics; telemetry wiring.

The central test runs a full export against the Constant Contact sandbox with every logger in the process
at DEBUG (httpx, httpcore, azure, urllib3 included), injects the failures whose log lines are most likely
to carry personal data or credentials (an error message quoting a contact's email, a refused token), and
reads every line back: no input email address, no access token, refresh token or client secret, and every
line the run emitted carries its run ID.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs

import pytest

from exporter import observability
from exporter.mapping import DataMapping
from exporter.observability import (
    REDACTED,
    JsonFormatter,
    RedactedError,
    configure_logging,
    configure_telemetry,
    current_run,
    mask_secrets,
    record_run_metrics,
    run_context,
    sanitize_record,
)
from exporter.pipeline import ExportRequest
from exporter.privacy import find_emails, mask_text, shorten
from exporter.report import RunReport
from sandbox import DEFAULT_CLIENT_SECRET
from tests.test_export import exporter_for, write_csv

ROOT = Path(__file__).resolve().parents[1]
EMAIL = re.compile(r"[^\s@<>()\[\],;:\"'\\]+@[^\s@<>()\[\],;:\"'\\]+")


# -- fixtures ---------------------------------------------------------------------------------------------


class Capture(logging.Handler):
    """Keeps (thread id, run_id attribute, formatted line) for every record it sees."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[tuple[int, str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.thread or 0, getattr(record, "run_id", None), self.format(record)))


class PlainFormatter(logging.Formatter):
    """What a plain handler (the Functions worker's, a console's) renders: message and traceback as is."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")


@pytest.fixture
def isolated_logging() -> Iterator[None]:
    """Undo everything configure_logging does to the process (record factory, root handlers, levels)."""
    root = logging.getLogger()
    saved_factory = logging.getLogRecordFactory()
    saved_handlers = list(root.handlers)
    saved_level = root.level
    saved_installed = observability._factory_installed
    saved_levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    observability._factory_installed = False
    try:
        yield
    finally:
        logging.setLogRecordFactory(saved_factory)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        observability._factory_installed = saved_installed
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def reset_telemetry() -> Iterator[None]:
    saved = observability._telemetry_configured
    observability._telemetry_configured = False
    try:
        yield
    finally:
        observability._telemetry_configured = saved


@pytest.fixture
def distro_calls(monkeypatch, reset_telemetry) -> list[dict[str, object]]:
    """A recording stand-in for azure.monitor.opentelemetry: the options of each configure call."""
    calls: list[dict[str, object]] = []
    fake = ModuleType("azure.monitor.opentelemetry")
    fake.configure_azure_monitor = lambda **kw: calls.append(kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", fake)
    return calls


def everything_at_debug() -> None:
    """Root and every known logger at DEBUG, third-party ones named explicitly so they exist."""
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore", "azure", "urllib3", "exporter", "sandbox"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)


def attach_everywhere(handler: logging.Handler) -> list[logging.Logger]:
    """The root logger, plus any logger that does not propagate to it."""
    loggers = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    return loggers


# -- the full run -----------------------------------------------------------------------------------------


def _secrets_seen_on_the_wire(sandbox) -> set[str]:
    """Every credential that crossed the wire during the run, read from the sandbox's request journal."""
    found = {DEFAULT_CLIENT_SECRET}
    for exchange in sandbox.requests:
        auth = exchange.headers.get("Authorization") or exchange.headers.get("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value:
            found.add(value)
        elif scheme.lower() == "basic" and value:
            found.add(value)
            found.add(base64.b64decode(value).decode().partition(":")[2])
        if exchange.path.endswith("/token"):
            for name, values in parse_qs(exchange.body.decode(errors="replace")).items():
                if name in ("refresh_token", "client_secret", "code"):
                    found.update(values)
            if exchange.status == 200 and exchange.response_body:
                body = exchange.response_json()
                found.update(str(body[k]) for k in ("access_token", "refresh_token") if body.get(k))
    return {value for value in found if len(value) >= 8}


def test_a_full_run_logs_no_email_or_token_and_stamps_every_line(
    tmp_path, sandbox, cc_client, isolated_logging
):
    emails = [f"Person.{i}@Example.com" for i in range(30)]
    emails += ["person.3@example.com"]  # a duplicate (case-insensitive)
    emails += ["x" * 90 + "@toolong.example.com"]  # rejected: longer than 80 characters
    emails += ["spaced name@example.com", "trailing.dot.@example.com"]  # rejected: invalid
    rows = [[email, f"First{i}", f"Last{i}"] for i, email in enumerate(emails)]
    segment = write_csv(tmp_path / "segment.csv", ["EMail", "FirstName", "LastName"], rows)
    list_id = sandbox.create_list("Observed")

    # The failures most likely to put personal data or credentials into a log line.
    sandbox.faults.respond(
        401, {"error_key": "unauthorized", "error_message": "Unauthorized"}, path="/v3/contact_lists"
    )
    sandbox.faults.respond(
        500,
        {"error_key": "server_error", "error_message": f"could not import {emails[0]} ({emails[1]})"},
        method="POST",
        path="/v3/activities/contacts_json_import",
    )
    sandbox.faults.throttle(method="GET", path="/v3/activities/")

    configure_logging(logging.DEBUG, json_handler=False)
    everything_at_debug()
    json_lines = Capture(JsonFormatter())
    plain_lines = Capture(PlainFormatter())
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    run_id = "20261203T160501Z-0b5e7a"
    exporter = exporter_for(tmp_path, cc_client)
    request = ExportRequest(
        segments=(segment,),
        list_id=list_id,
        mapping=DataMapping.from_args(email="EMail", first_name="FirstName", last_name="LastName"),
        export_name="newsletter",
    )
    with run_context(run_id, export="newsletter"):
        attached = attach_everywhere(json_lines) + attach_everywhere(plain_lines)
        try:
            report = exporter.run(request, run_id=run_id, trigger="timer")
            # What careless code might log: the guarantee holds for any logger, any handler.
            token = next(iter(_secrets_seen_on_the_wire(sandbox) - {DEFAULT_CLIENT_SECRET}))
            logging.getLogger("azure.core.pipeline").debug(
                "request headers {'Authorization': 'Bearer %s'} for %s", token, emails[2]
            )
            try:
                raise ValueError(f"contact {emails[3]} refused; refresh_token={token}")
            except ValueError:
                logging.getLogger("httpx").exception("wrapped failure for %s", emails[4])
            fields = record_run_metrics(report, meter_provider=provider)
        finally:
            for logger in attached:
                logger.removeHandler(json_lines)
                logger.removeHandler(plain_lines)

    assert report.status == "completed", report.error
    assert report.retries >= 2 and report.rejected == 3 and report.duplicates == 1

    secrets = _secrets_seen_on_the_wire(sandbox)
    assert len(secrets) >= 4, "the run should have used (and rotated) several tokens"
    main = threading.get_ident()
    for capture in (json_lines, plain_lines):
        text = "\n".join(line for _, _, line in capture.lines)
        assert len(capture.lines) > 20, "expected DEBUG output from httpx/httpcore and the exporter"
        for email in emails:
            assert email.lower() not in text.lower(), f"{email} leaked into the logs"
        for secret in secrets:
            assert secret not in text, "a credential leaked into the logs"
        for found in EMAIL.findall(text):  # whatever looks like an address is a masked one
            assert found.split("@")[0].endswith("***"), found
        assert all(rid == run_id for thread, rid, _ in capture.lines if thread == main)

    records = [json.loads(line) for _, _, line in json_lines.lines]
    assert {r["logger"].split(".")[0] for r in records} >= {"httpx", "httpcore", "exporter"}
    assert all(r["run_id"] == run_id and r["export"] == "newsletter" for r in records if r["run_id"])
    assert any(r["level"] == "WARNING" and r["message"].startswith("retrying") for r in records)
    assert any("***@example.com" in r["message"].lower() for r in records)  # the 500, masked
    finished = [r for r in records if r["message"].startswith("run finished")]
    # one line from the run itself, one from the explicit call above with the test's meter provider
    assert len(finished) == 2 and finished[0]["received"] == finished[1]["received"]
    assert finished[0]["received"] == report.received == len(emails)
    assert finished[0]["submitted"] == report.submitted and finished[0]["api_calls"] == report.api_calls
    assert fields["retries"] == report.retries
    points = metric_points(reader)
    assert points["exporter.rows.received"][0].value == report.received
    assert points["exporter.api.retries"][0].value == report.retries


def metric_points(reader) -> dict[str, list]:
    data = reader.get_metrics_data()
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


# -- masking ----------------------------------------------------------------------------------------------

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzYW5kYm94In0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("Authorization: Bearer opaque-token-1234567890", "opaque-token-1234567890"),
        ("Authorization: Basic c2FuZGJveC1jbGllbnQtaWQ6c2VjcmV0", "c2FuZGJveC1jbGllbnQtaWQ6c2VjcmV0"),
        (f"token answer {JWT} stored", JWT),
        ("grant_type=refresh_token&refresh_token=Zm9vYmFyYmF6cXV4cXV1eDEy", "Zm9vYmFyYmF6cXV4cXV1eDEy"),
        ('{"access_token": "at-9f8e7d6c5b4a", "expires_in": 86400}', "at-9f8e7d6c5b4a"),
        ("{'refresh_token': 'rt-0a1b2c3d4e5f'}", "rt-0a1b2c3d4e5f"),
        ("client_secret: s3cr3t-value-42", "s3cr3t-value-42"),
        ("token=abcdefgh12345", "abcdefgh12345"),
        ("AccountName=st1;AccountKey=a2V5a2V5a2V5+/==;EndpointSuffix=x", "a2V5a2V5a2V5+/=="),
        ("POST https://f.azurewebsites.net/runtime/webhooks/blobs?functionName=x&code=K3yK3y==", "K3yK3y=="),
        ("GET https://st.blob.core.windows.net/c/b?sv=2024&sig=c2lnbmF0dXJl%3D&se=2026", "c2lnbmF0dXJl%3D"),
    ],
)
def test_credentials_are_masked(text, secret):
    masked = mask_secrets(text)
    assert secret not in masked and REDACTED in masked
    assert mask_secrets(masked) == masked  # idempotent: masking at creation and on output agree


def test_emails_are_masked_and_ordinary_identifiers_are_not():
    text = (
        "run 20261203T160501Z-3f9a1c of export newsletter: contact Jane.Doe@example.com refused; list "
        "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a, blob segments/ci/Contact_1.csv, 3 retries, HTTP 429"
    )
    masked = mask_secrets(text)
    assert "Jane.Doe@example.com" not in masked and "J***@example.com" in masked
    assert masked.replace("J***@example.com", "Jane.Doe@example.com") == text
    for harmless in (
        "access token refreshed",
        "secret cc-refresh-token not found",
        "status code: 404",
        "Authorization=AAD;ClientId=0f0e0d0c-0b0a-0908-0706-050403020100",
    ):
        assert mask_secrets(harmless) == harmless


@pytest.mark.parametrize(
    ("text", "masked", "found"),
    [
        ("refused: mary.o'connor@example.com.", "refused: m***@example.com.", ["mary.o'connor@example.com"]),
        ('"john doe"@example.com is quoted', '"***"@example.com is quoted', ['"john doe"@example.com']),
        (
            "['ann@example.com', 'bo@x.org']",
            "['a***@example.com', 'b***@x.org']",
            ["ann@example.com", "bo@x.org"],
        ),
        ("<Ann@Example.com>;b@c.de", "<A***@Example.com>;b***@c.de", ["ann@example.com", "b@c.de"]),
        ("a.b@x.com|bo.c@y.org", "a***@x.com|b***@y.org", ["a.b@x.com", "|bo.c@y.org"]),
        ("no address @ here, a@ or @b", "no address @ here, a@ or @b", []),
        ("/data/team@2024/Email@Work, x@localhost", "/data/team@2024/Email@Work, x@localhost", []),
        ("/data/jane.doe@example.com.csv", "/data/j***@example.com.csv", ["jane.doe@example.com.csv"]),
        (
            "C:\\data\\jane.doe@example.com.csv",
            "C:\\data\\j***@example.com.csv",
            ["jane.doe@example.com.csv"],
        ),
        (
            "jane@example\u3002com, jo@ex\u200bample.com",
            "j***@example\u3002com, j***@ex\u200bample.com",
            None,
        ),
        ("pkg@1.2.3 python@3.11", "pkg@1.2.3 python@3.11", []),
        ("columns: 'jane.doe@@example.com'", "columns: 'j***@example.com'", ["jane.doe@@example.com"]),
        ("jane(work)@x.com or (bo@x.org)", "j***@x.com or (b***@x.org)", ["jane(work)@x.com", "bo@x.org"]),
        ("x " + "@" * 100_000, "x " + "@" * 100_000, []),
        ("x" * 100_000, "x" * 100_000, []),
        ("y" * 50_000 + "@example.com", "y***@example.com", ["y" * 50_000 + "@example.com"]),
    ],
    ids=[
        "apostrophe",
        "quoted",
        "repr-quoted",
        "brackets",
        "pipe",
        "no-address",
        "no-dot-in-domain",
        "path",
        "windows-path",
        "idna-dots",
        "versions",
        "double-at",
        "comment",
        "only-ats",
        "long-no-at",
        "long-local",
    ],
)
def test_email_addresses_in_text_are_found_and_masked(text, masked, found):
    assert mask_text(text) == masked
    assert mask_text(masked) == masked  # idempotent
    assert found is None or find_emails(text) == found


def test_user_text_in_messages_is_shortened():
    assert shorten("Email") == "Email"
    assert shorten("x" * 81) == "x" * 79 + "…" and len(shorten("y" * 10_000, 40)) == 40


def test_records_are_masked_when_created_so_every_handler_sees_masked_text(isolated_logging):
    # A handler that was there first (as the Functions worker's is) and renders an extra field.
    plain = Capture(logging.Formatter("%(levelname)s %(name)s %(message)s [%(detail)s]"))
    root = logging.getLogger()
    root.addHandler(plain)
    configure_logging(logging.INFO, json_handler=False)
    logger = logging.getLogger("exporter.test")
    # Addresses in variables, not literals: a traceback quotes source lines, which hold no run data.
    cause, address = "cause.person@example.org", "a.person@example.org"
    try:
        try:
            try:
                raise KeyError(cause)
            except KeyError as exc:
                raise RuntimeError(f"import failed for {address} with token={JWT}") from exc
        except RuntimeError:
            logger.exception(
                "failed for %s", "b.person@example.org", extra={"detail": "c.person@example.org"}
            )
    finally:
        root.removeHandler(plain)
    (_, _, line) = plain.lines[0]
    for leaked in ("cause.person@", "a.person@", "b.person@", "c.person@", JWT):
        assert leaked not in line
    assert "b***@example.org" in line and "a***@example.org" in line and "c***@example.org" in line


def test_a_masked_exception_keeps_its_type_when_it_can():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    address = "d.person@example.net"
    try:
        raise ValueError(f"bad address {address}")
    except ValueError:
        record.exc_info = sys.exc_info()
    sanitize_record(record)
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError and str(record.exc_info[1]) == "bad address d***@example.net"

    class Picky(Exception):
        def __init__(self, message: str, status: int) -> None:
            super().__init__(f"{status}: {message}")

    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    try:
        raise Picky("e.person@example.net", 400)
    except Picky:
        record.exc_info = sys.exc_info()
    sanitize_record(record)
    assert record.exc_info is not None
    assert record.exc_info[0] is RedactedError
    assert str(record.exc_info[1]) == "Picky: 400: e***@example.net"


# -- run context and the JSON format ----------------------------------------------------------------------


def test_run_context_nests_and_does_not_cross_threads():
    assert current_run() is None
    seen: dict[str, object] = {}
    with run_context("outer", export="a"):
        with run_context("inner"):
            assert current_run() is not None and current_run().run_id == "inner"  # type: ignore[union-attr]
        assert current_run().run_id == "outer"  # type: ignore[union-attr]
        worker = threading.Thread(target=lambda: seen.setdefault("run", current_run()))
        worker.start()
        worker.join()
    assert current_run() is None and seen["run"] is None


def test_json_lines_carry_run_id_export_and_extras(isolated_logging):
    stream = io.StringIO()
    handler = configure_logging(logging.INFO, stream=stream, json_handler=True)
    assert handler is not None
    assert configure_logging(logging.INFO, stream=stream, json_handler=True) is handler  # idempotent
    assert sum(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers) == 1
    logger = logging.getLogger("exporter.test")
    with run_context("20261203T160501Z-aaaaaa", export="newsletter"):
        logger.info("chunk %d submitted", 2, extra={"contacts": 400})
    logger.warning("no run here")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "chunk 2 submitted" and first["contacts"] == 400
    assert first["run_id"] == "20261203T160501Z-aaaaaa" and first["export"] == "newsletter"
    assert first["level"] == "INFO" and first["logger"] == "exporter.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])
    assert "run_id" not in second and second["level"] == "WARNING"


def test_inside_azure_functions_no_second_handler_is_added(isolated_logging, monkeypatch):
    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
    before = list(logging.getLogger().handlers)
    assert configure_logging(logging.INFO) is None
    assert logging.getLogger().handlers == before
    assert observability._factory_installed


# -- metrics ----------------------------------------------------------------------------------------------


def test_run_metrics_are_counters_and_a_duration_without_personal_data(isolated_logging):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    report = RunReport(
        run_id="20261203T160501Z-bbbbbb",
        list_id="04fe9a97-a579-43c5-bb1a-58ed29bf0a6a",
        export="newsletter",
        trigger="blob",
        status="completed",
        started_at="2026-12-03T16:05:01Z",
        finished_at="2026-12-03T16:06:31Z",
        received=1200,
        submitted=1100,
        rejected=60,
        duplicates=40,
        api_calls=17,
        retries=3,
    )
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream, json_handler=True)
    fields = record_run_metrics(report, meter_provider=provider)  # outside any run context
    points = metric_points(reader)
    expected = {
        "exporter.runs": 1,
        "exporter.rows.received": 1200,
        "exporter.contacts.submitted": 1100,
        "exporter.rows.rejected": 60,
        "exporter.rows.duplicates": 40,
        "exporter.api.calls": 17,
        "exporter.api.retries": 3,
    }
    for name, value in expected.items():
        (point,) = points[name]
        assert point.value == value, name
        assert dict(point.attributes) == {
            "export": "newsletter",
            "status": "completed",
            "trigger": "blob",
            "dry_run": False,
        }
    (duration,) = points["exporter.run.duration"]
    assert duration.count == 1 and duration.sum == pytest.approx(90.0)
    assert fields["duration_seconds"] == pytest.approx(90.0)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"].startswith("run finished: completed, received 1200, submitted 1100")
    assert line["run_id"] == report.run_id and line["export"] == "newsletter"
    assert line["duration_seconds"] == pytest.approx(90.0) and line["retries"] == 3


# -- telemetry --------------------------------------------------------------------------------------------


def test_without_a_connection_string_telemetry_is_not_even_imported():
    code = (
        "import sys, exporter.observability as o\n"
        "assert o.configure_telemetry({}) is False\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_with_a_connection_string_azure_monitor_is_configured_once(distro_calls):
    calls = distro_calls
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555",
    }
    assert configure_telemetry(env) is True
    assert configure_telemetry(env) is True
    assert len(calls) == 1
    options = calls[0]
    assert options["connection_string"] == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert options["logger_name"] == "exporter"
    assert options["enable_live_metrics"] is False
    from azure.identity import ManagedIdentityCredential

    assert isinstance(options["credential"], ManagedIdentityCredential)


def test_telemetry_is_left_to_the_functions_worker_when_it_configures_it(distro_calls):
    calls = distro_calls
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    }
    assert configure_telemetry(env) is True and calls == []


def test_the_real_azure_monitor_distro_accepts_our_configuration(tmp_path):
    """configure_azure_monitor for real, in a child process (it sets process-wide providers). Telemetry goes
    to a closed loopback port; statsbeat, the control plane and the VM metadata probe are switched off, so
    nothing leaves the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env.pop("FUNCTIONS_WORKER_RUNTIME", None)
    env.update(
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
        ),
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true",
        APPLICATIONINSIGHTS_SDKSTATS_DISABLED="true",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel",
        TMPDIR=str(tmp_path),
    )
    code = (
        "import logging\n"
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from exporter.observability import configure_telemetry, record_run_metrics\n"
        "from exporter.report import RunReport\n"
        "assert configure_telemetry() is True and configure_telemetry() is True\n"
        "assert isinstance(metrics.get_meter_provider(), MeterProvider)\n"
        "handlers = [type(h).__name__ for h in logging.getLogger('exporter').handlers]\n"
        "assert handlers == ['LoggingHandler'], handlers\n"
        "filters = logging.getLogger('exporter').handlers[0].filters\n"
        "assert [type(f).__name__ for f in filters] == ['RunContextFilter'], filters\n"
        "assert not any(type(h).__name__ == 'LoggingHandler' for h in logging.getLogger().handlers)\n"
        "record_run_metrics(RunReport(run_id='r', list_id='l', status='completed'))\n"
        "print('configured')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "configured" in done.stdout, done.stderr[-3000:]
