"""Make every run visible where Azure users look, without leaking what must not leak.

Three pieces, each usable alone:

- ``run_context(run_id, export=...)`` marks everything a run logs, on its thread, with the run ID (a
  ``contextvars.ContextVar``: concurrent runs on other threads keep their own).
- ``configure_logging()`` installs, once per process, a log-record factory that masks email addresses and
  credentials in every record *when it is created* (so every handler sees the masked text: ours, the
  Azure Functions worker's that forwards to the host, OpenTelemetry's) and stamps it with ``run_id`` and
  ``export``; and, outside Azure Functions, a JSON-lines handler on stderr.
- ``configure_telemetry()`` sends logs of the ``exporter`` loggers, traces and metrics to Application
  Insights through ``azure-monitor-opentelemetry`` when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set,
  and costs nothing (not even the import) when it is not. ``record_run_metrics(report)`` records one
  finished run's counts as OpenTelemetry metrics and one structured "run finished" log line.

Masking is deliberately conservative: email addresses (``exporter.privacy.mask_text``), JWTs, ``Bearer``/
``Basic`` credentials, and values that follow a credential-like key (``refresh_token=...``,
``"access_token": "..."``, ``client_secret:``, ``AccountKey=``, ``?code=``/``&sig=`` in URLs). It never
touches run IDs, list IDs, blob names or counts.

Records get ``run_id`` and ``export`` attributes only inside ``run_context``; code inside a run should not
pass those two names in ``extra=`` (logging refuses to overwrite an attribute a record already has).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from .privacy import mask_text

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider

    from .report import RunReport

log = logging.getLogger(__name__)

REDACTED = "[redacted]"

# -- masking ---------------------------------------------------------------------------------------------

# A JSON Web Token: three base64url parts, the first one a JSON object ("eyJ" is base64 for '{"').
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# An HTTP credential: "Bearer <token>", "Basic <base64>".
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# key=value, key: value, "key": "value" for keys that name a credential.
_SECRET_KEYS = (
    r"access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|client[_-]?assertion|device[_-]?code|"
    r"code[_-]?verifier|password|passwd|api[_-]?key|x-functions-key|account[_-]?key|shared[_-]?access[_-]?key|"
    r"shared[_-]?access[_-]?signature|token"
)
_SECRET_VALUE = re.compile(
    rf"(?i)(?P<key>[\"']?\b(?:{_SECRET_KEYS})\b[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])(?P<value>[^\s\"'&,;}}\]]{{4,}})"
)
# Credentials carried in URL query strings: function keys (?code=), SAS signatures (&sig=), tokens.
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&](?:code|sig|token|key|secret)=)(?!\[redacted\])(?P<value>[^&\s\"'#]+)"
)


def mask_secrets(text: str) -> str:
    """Mask credentials and email addresses in free text. Idempotent: masking twice changes nothing."""
    if not text:
        return text
    text = _JWT.sub(REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SECRET_VALUE.sub(lambda m: m.group("key") + REDACTED, text)
    text = _SECRET_QUERY.sub(lambda m: m.group("key") + REDACTED, text)
    return mask_text(text)


class RedactedError(Exception):
    """Stands in for a logged exception whose message held personal data or a credential."""


def _masked_exception(value: BaseException, depth: int = 0) -> BaseException:
    """The same exception, or a stand-in whose message (and chained causes) are masked.

    OpenTelemetry and every text formatter render ``str(exc)`` and the causes' texts from ``exc_info``,
    so masking only the log message is not enough."""
    text = str(value)
    masked = mask_secrets(text)
    cause = value.__cause__
    context = value.__context__
    new_cause = _masked_exception(cause, depth + 1) if cause is not None and depth < 5 else cause
    new_context = _masked_exception(context, depth + 1) if context is not None and depth < 5 else context
    if masked == text and new_cause is cause and new_context is context:
        return value
    clone: BaseException
    try:
        clone = type(value)(masked)
        if str(clone) != masked:
            raise TypeError("the exception renders its arguments differently")
    except Exception:
        clone = RedactedError(f"{type(value).__name__}: {masked}")
    clone.__traceback__ = value.__traceback__
    clone.__cause__ = new_cause
    clone.__context__ = new_context
    clone.__suppress_context__ = value.__suppress_context__
    return clone


# -- run context -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    run_id: str
    export: str | None = None


_CURRENT_RUN: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("exporter_run", default=None)


def current_run() -> RunContext | None:
    """The run this thread (or task) is working on, if any."""
    return _CURRENT_RUN.get()


@contextlib.contextmanager
def run_context(run_id: str, export: str | None = None) -> Iterator[RunContext]:
    """Everything logged inside carries ``run_id`` (and ``export``). Nests; restores the outer run on exit."""
    context = RunContext(run_id=run_id, export=export)
    token = _CURRENT_RUN.set(context)
    try:
        yield context
    finally:
        _CURRENT_RUN.reset(token)


# -- logging ---------------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (or from us).
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def sanitize_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask the record's message, exception and string extras in place, and stamp it with the run.

    Formats the message eagerly (``msg % args``) so no handler can ever render the unmasked arguments."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what we can, masked
        message = f"{record.msg!s} (unformattable arguments: {record.args!r})"
    record.msg = mask_secrets(message)
    record.args = None
    if isinstance(record.exc_info, tuple) and record.exc_info[1] is not None:
        _, value, tb = record.exc_info
        masked = _masked_exception(value)
        if masked is not value:
            record.exc_info = (type(masked), masked, tb)
    if record.exc_text:
        record.exc_text = mask_secrets(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_secrets(record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS and isinstance(value, str):
            setattr(record, key, mask_secrets(value))
    run = _CURRENT_RUN.get()
    if run is not None:
        if getattr(record, "run_id", None) is None:
            record.run_id = run.run_id
        if run.export is not None and getattr(record, "export", None) is None:
            record.export = run.export
    return record


class RunContextFilter(logging.Filter):
    """The record factory's sanitising, on a handler: also reaches ``extra=`` fields, which logging sets
    after the factory has run, and works in a process that did not install the factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        sanitize_record(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, run_id, export, extras, exception.

    Masks again on output, so it is safe even where ``configure_logging`` was not called."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        run = _CURRENT_RUN.get()
        run_id = getattr(record, "run_id", None) or (run.run_id if run else None)
        export = getattr(record, "export", None) or (run.export if run else None)
        if run_id:
            entry["run_id"] = run_id
        if export:
            entry["export"] = export
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key in entry or key.startswith("_"):
                continue
            entry[key] = mask_secrets(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = mask_secrets(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_secrets(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=str).decode()


_logging_lock = threading.Lock()
_factory_installed = False


def _install_record_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return sanitize_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _add_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, RunContextFilter) for f in handler.filters):
        handler.addFilter(RunContextFilter())


def running_in_azure_functions(env: Mapping[str, str] | None = None) -> bool:
    """The Functions worker sets FUNCTIONS_WORKER_RUNTIME; its own root handler forwards logs to the host."""
    env = os.environ if env is None else env
    return bool(env.get("FUNCTIONS_WORKER_RUNTIME"))


def configure_logging(
    level: int | str | None = None,
    *,
    stream: TextIO | None = None,
    json_handler: bool | None = None,
) -> logging.Handler | None:
    """Mask and stamp every log record of the process; add a JSON-lines handler to the root logger.

    Idempotent: a second call installs nothing new (it may still change the level). ``json_handler``
    defaults to False inside Azure Functions, whose worker already forwards root-logger records to the
    host (a second handler there would only duplicate lines in the console log). Returns the JSON handler,
    if there is one."""
    with _logging_lock:
        _install_record_factory()
        root = logging.getLogger()
        # The record factory runs before logging applies ``extra=``; this filter masks those fields too
        # for the handlers already there (the Functions worker's, a test's).
        for existing_handler in root.handlers:
            _add_filter(existing_handler)
        if level is not None:
            root.setLevel(level)
        if json_handler is None:
            json_handler = not running_in_azure_functions()
        existing = next((h for h in root.handlers if isinstance(h.formatter, JsonFormatter)), None)
        if existing is not None or not json_handler:
            return existing
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        return handler


# -- telemetry -------------------------------------------------------------------------------------------

_telemetry_lock = threading.Lock()
_telemetry_configured = False


def _credential_from_authentication_string(value: str | None) -> Any:
    """``Authorization=AAD;ClientId=<id>`` (the Functions host's APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
    -> a managed-identity credential for that client, so the Python exporters use Entra auth too."""
    if not value:
        return None
    parts = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (p.partition("=") for p in value.split(";"))
        if k.strip()
    )
    if parts.get("authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("clientid") or None
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def configure_telemetry(env: Mapping[str, str] | None = None) -> bool:
    """Export to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set; once per process.

    Logs of the ``exporter`` loggers only (third-party chatter stays out), traces of outgoing HTTP and
    Azure SDK calls, and the run metrics. Returns True when telemetry is (or already was) configured.
    Skipped when the Functions worker configures Azure Monitor itself
    (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true): a second configuration would duplicate everything."""
    global _telemetry_configured
    env = os.environ if env is None else env
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if not connection_string:
        return False
    if env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "").lower() == "true":
        return True
    with _telemetry_lock:
        if _telemetry_configured:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        options: dict[str, Any] = {
            "connection_string": connection_string,
            "logger_name": "exporter",
            "enable_live_metrics": False,
        }
        credential = _credential_from_authentication_string(
            env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
        )
        if credential is not None:
            options["credential"] = credential
        configure_azure_monitor(**options)
        # Its log handler sends every extra attribute as a custom dimension: mask those as well.
        for handler in logging.getLogger("exporter").handlers:
            _add_filter(handler)
        _telemetry_configured = True
        log.info("telemetry: exporting to Application Insights")
        return True


# -- run metrics -----------------------------------------------------------------------------------------

_COUNTS: tuple[tuple[str, str, str], ...] = (
    # (report field, instrument name, description)
    ("received", "exporter.rows.received", "Data rows read from the segments"),
    ("submitted", "exporter.contacts.submitted", "Contacts sent to Constant Contact"),
    ("rejected", "exporter.rows.rejected", "Rows rejected by validation"),
    ("duplicates", "exporter.rows.duplicates", "Rows whose email appeared earlier in the export"),
    ("api_calls", "exporter.api.calls", "Constant Contact API requests"),
    ("retries", "exporter.api.retries", "Constant Contact API requests retried"),
)


@dataclass
class _Instruments:
    runs: Counter
    counts: dict[str, Counter]
    duration: Histogram


# Instruments per meter provider (the global one; a test's own). Keeps the provider alive, so ids stay unique.
_instruments: dict[int, tuple[MeterProvider, _Instruments]] = {}
_instruments_lock = threading.Lock()


def _instruments_for(provider: MeterProvider) -> _Instruments:
    with _instruments_lock:
        entry = _instruments.get(id(provider))
        found = entry[1] if entry is not None else None
        if found is None:
            meter = provider.get_meter("exporter")
            found = _Instruments(
                runs=meter.create_counter("exporter.runs", unit="{run}", description="Finished export runs"),
                counts={
                    field: meter.create_counter(name, unit="1", description=description)
                    for field, name, description in _COUNTS
                },
                duration=meter.create_histogram(
                    "exporter.run.duration", unit="s", description="Time from a run's start to its end"
                ),
            )
            _instruments[id(provider)] = (provider, found)
        return found


def _seconds_between(started: str | None, finished: str | None) -> float | None:
    try:
        start = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(finished).replace("Z", "+00:00")) if finished else datetime.now(UTC)
    except ValueError:
        return None
    return max(0.0, (end - start).total_seconds())


def record_run_metrics(report: RunReport, *, meter_provider: MeterProvider | None = None) -> dict[str, Any]:
    """Record one run's counts and duration as metrics, and log them as one "run finished" line.

    Call it once per run, when the run reaches a final status (completed or failed). Attributes are the
    export name, status, trigger and dry-run flag: no personal data. Without OpenTelemetry installed only
    the log line is written. Returns the logged fields."""
    duration = _seconds_between(report.started_at, report.finished_at)
    attributes: dict[str, str | bool] = {
        "export": report.export or "adhoc",
        "status": report.status,
        "trigger": report.trigger or "unknown",
        "dry_run": bool(report.dry_run),
    }
    counts = {field: int(getattr(report, field) or 0) for field, _, _ in _COUNTS}
    try:
        from opentelemetry import metrics
    except ImportError:  # azure-monitor-opentelemetry (which brings it) is a deployed dependency
        pass
    else:
        instruments = _instruments_for(meter_provider or metrics.get_meter_provider())
        instruments.runs.add(1, attributes)
        for field, value in counts.items():
            instruments.counts[field].add(value, attributes)
        if duration is not None:
            instruments.duration.record(duration, attributes)
    fields: dict[str, Any] = {
        "status": report.status,
        "trigger": report.trigger,
        "dry_run": bool(report.dry_run),
        **counts,
        "duration_seconds": round(duration, 3) if duration is not None else None,
    }
    # None is not a valid OpenTelemetry attribute value: leave such fields out of the record.
    extra = {key: value for key, value in fields.items() if value is not None}
    run = _CURRENT_RUN.get()
    # Called outside the run's own context (or inside another's): stamp the line with this run.
    stamp = (
        run_context(report.run_id, report.export)
        if run is None or run.run_id != report.run_id
        else contextlib.nullcontext()
    )
    with stamp:
        log.info(
            "run finished: %s, received %d, submitted %d, rejected %d, duplicates %d, %d API calls, %d retries",
            report.status,
            counts["received"],
            counts["submitted"],
            counts["rejected"],
            counts["duplicates"],
            counts["api_calls"],
            counts["retries"],
            extra=extra,
        )
    return fields


__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactedError",
    "RunContext",
    "RunContextFilter",
    "configure_logging",
    "configure_telemetry",
    "current_run",
    "mask_secrets",
    "record_run_metrics",
    "run_context",
    "running_in_azure_functions",
    "sanitize_record",
]
