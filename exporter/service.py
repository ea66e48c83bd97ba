"""The export service behind the Azure Functions triggers: one object, one call per trigger.

Storage layout (three containers, so results can never re-trigger the blob trigger on segments):
- segments: what the customer data platform drops (read only);
- results:  ``exports/<export>/runs/<run_id>/report.json``, ``rejects.csv``, ``duplicates.csv``;
- state:    export configurations, run checkpoints and prepared import bodies, the active-run index,
            schedule marks, processed-blob marks and the token-refresh lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from .alerts import alert_for, send_alert
from .blobfiles import BlobFiles
from .config import Settings
from .connections import ConnectionNotReadyError, ConnectionStore, Status, secret_names_for
from .constant_contact import ConstantContactClient
from .errors import ConfigError, SegmentError
from .exports import ExportConfig, ExportStore, previous_fire
from .leases import BlobLeaseLock
from .pipeline import Checkpoint, Exporter, ExportRequest, read_checkpoint, run_folder
from .privacy import mask_text
from .readers import open_segment
from .report import RunReport, is_run_id, new_run_id, utc_now
from .secrets import SecretStore, secret_store_from_settings
from .storage import BlobResultStore, blob_service_client
from .tokens import TokenProvider

log = logging.getLogger(__name__)

ACTIVE_PREFIX = "active/"
RUNNING_PREFIX = "running/"  # one claim per export: the run that may send to its list now
SCHEDULE_PREFIX = "schedules/"
PROCESSED_PREFIX = "processed/"


class NotFoundError(ConfigError):
    """An export or run that does not exist (HTTP 404)."""


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """App settings of the Functions app (local.settings.json locally, app settings in Azure)."""

    settings: Settings = field(default_factory=Settings)
    storage_connection_string: str | None = None  # EXPORTER_STORAGE: Azurite and local runs
    storage_account: str | None = None  # EXPORTER_STORAGE__accountName: managed identity in Azure
    storage_blob_uri: str | None = None  # EXPORTER_STORAGE__blobServiceUri: idem, sovereign clouds
    segments_container: str = "segments"
    results_container: str = "results"
    state_container: str = "state"
    alert_webhook_url: str | None = None  # ALERT_WEBHOOK_URL: failed, partial and re-authorization alerts
    stale_after_seconds: float = 900.0  # a running run whose checkpoint is older is resumed by the timer

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppSettings:
        env = os.environ if env is None else env
        return cls(
            settings=Settings.from_env(env),
            storage_connection_string=env.get("EXPORTER_STORAGE") or None,
            storage_account=env.get("EXPORTER_STORAGE__accountName") or None,
            storage_blob_uri=env.get("EXPORTER_STORAGE__blobServiceUri") or None,
            segments_container=env.get("SEGMENTS_CONTAINER") or "segments",
            results_container=env.get("RESULTS_CONTAINER") or "results",
            state_container=env.get("STATE_CONTAINER") or "state",
            stale_after_seconds=float(env.get("EXPORTER_STALE_AFTER_SECONDS") or 900),
            alert_webhook_url=env.get("ALERT_WEBHOOK_URL") or None,
        )


@dataclass(frozen=True)
class RunHandle:
    export: str
    run_id: str
    status: str
    already_running: bool = False  # another request started this run; this one joined it


class ExportService:
    """What every trigger calls. Thread-safe enough for one Functions worker process."""

    def __init__(
        self,
        app: AppSettings,
        *,
        blob_service: BlobServiceClient | None = None,
        secrets: SecretStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.blob_service = blob_service or blob_service_client(
            connection_string=app.storage_connection_string,
            account_name=app.storage_account,
            account_url=app.storage_blob_uri,
        )
        self.segments = BlobFiles(self.blob_service.get_container_client(app.segments_container))
        self.results = BlobResultStore(self.blob_service.get_container_client(app.results_container))
        self._state_container = self.blob_service.get_container_client(app.state_container)
        self.state = BlobResultStore(self._state_container)
        self.exports = ExportStore(self.state)
        self.connections = ConnectionStore(self.state)
        self.secrets = secrets or secret_store_from_settings(self.settings)
        self._clock = clock
        self._clients: dict[str, ConstantContactClient] = {}
        self._lock = threading.Lock()

    # -- building blocks -----------------------------------------------------------------------

    def client(self, connection: str) -> ConstantContactClient:
        """One client per connection per process: the access token stays cached in memory. The secrets
        are the connection's own (``default`` keeps the CLI's unprefixed names, see secret_names_for)."""
        with self._lock:
            if connection not in self._clients:
                record = self.connections.get(connection)
                names = record.secret_names if record else secret_names_for(connection)
                lock = BlobLeaseLock(self._state_container, f"locks/token-{connection}")
                tokens = TokenProvider(
                    self.secrets,
                    token_url=self.settings.api.oauth_base_url.rstrip("/") + "/token",
                    names=names,
                    lock=lock,
                )
                self._clients[connection] = ConstantContactClient(self.settings.api, tokens)
            return self._clients[connection]

    def forget_client(self, connection: str) -> None:
        """Drop the cached client (and its in-memory access token): the connection was re-authorized,
        changed or deleted, so the next run must read the secrets again."""
        with self._lock:
            client = self._clients.pop(connection, None)
        if client is not None:
            client.close()

    # -- connections ---------------------------------------------------------------------------

    def check_connection_ready(self, connection: str, *, dry_run: bool = False) -> None:
        """Refuse a run through a connection that does not exist, whose data privacy acknowledgement is
        not given, or (unless a dry run, which sends nothing) that is not connected."""
        record = self.connections.get(connection)
        if record is None:
            raise ConnectionNotReadyError(
                f"connection {connection!r} does not exist: an admin must create it (PUT "
                f"/api/connections/{connection}, or python -m exporter connections create {connection})",
                code="connection_not_found",
            )
        if not record.privacy_acknowledged:
            raise ConnectionNotReadyError(
                f"connection {connection!r} has no data privacy acknowledgement: exports send personal data "
                "to Constant Contact, outside this tenant's compliance boundary, so an admin must "
                f"acknowledge that first (PATCH /api/connections/{connection} with "
                '{"privacy_acknowledged": true})',
                code="privacy_not_acknowledged",
            )
        if not dry_run and record.status != "connected":
            hint = f" ({record.status_reason})" if record.status_reason else ""
            raise ConnectionNotReadyError(
                f"connection {connection!r} is {record.status.replace('_', ' ')}{hint}: an admin must "
                f"authorize it (GET /api/connections/{connection}/authorize, or python -m exporter "
                f"connections authorize {connection})",
                code=f"connection_{record.status}",
            )

    def mark_connection(self, connection: str, status: Status, *, reason: str | None = None) -> None:
        """Record a connection's status, e.g. needs_reauthorization when Constant Contact refused its
        refresh token; the cached client goes too."""
        current = self.connections.get(connection)
        if current is None or (current.status == status and current.status_reason == reason):
            return
        self.connections.set_status(connection, status, reason=reason)
        self.forget_client(connection)
        log.warning("connection %s is now %s", connection, status)

    def exporter(self, connection: str, *, dry_run: bool = False) -> Exporter:
        return Exporter(
            self.settings,
            files=self.segments,
            results=self.results,
            state=self.state,
            client=None if dry_run else self.client(connection),
        )

    def export(self, name: str) -> ExportConfig:
        config = self.exports.get(name)
        if config is None:
            raise NotFoundError(f"export {name!r} not found")
        return config

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        name: str,
        *,
        dry_run: bool = False,
        segments: tuple[str, ...] | None = None,
        full_sync: bool = False,
        allow_shrink: bool = False,
        trigger: str = "http",
        background: bool = False,
    ) -> RunHandle:
        """Record a queued run, then execute it now (or on a background thread, for HTTP's 202).

        If the worker dies before the run starts, the timer finds it in the active index and runs it."""
        config = self.export(name)
        if not config.enabled:
            raise ConfigError(f"export {name!r} is disabled")
        self.check_connection_ready(config.connection, dry_run=dry_run)
        request = config.request(
            dry_run=dry_run, segments=segments, full_sync=full_sync, allow_shrink=allow_shrink
        )
        exporter = self.exporter(config.connection, dry_run=dry_run)
        report = exporter.new_report(request, run_id=new_run_id(self._clock()), trigger=trigger)
        if not dry_run:
            running = self._claim_export(name, report.run_id)
            if running is not None:  # one run at a time per export: the caller gets the running one
                return running
        report.status = "queued"
        checkpoint = Checkpoint(request=request, report=report)
        exporter.save_checkpoint(checkpoint)
        self._write_report(report)
        self._touch_active(report)
        handle = RunHandle(name, report.run_id, "queued")
        if background:
            threading.Thread(target=self._execute, args=(config, checkpoint), daemon=True).start()
        else:
            self._execute(config, checkpoint)
        return handle

    def _execute(self, config: ExportConfig, checkpoint: Checkpoint) -> RunReport:
        exporter = self.exporter(config.connection, dry_run=checkpoint.request.dry_run)
        try:
            if checkpoint.report.status == "queued":
                report = exporter.run(
                    checkpoint.request, run_id=checkpoint.report.run_id, trigger=checkpoint.report.trigger
                )
            else:
                report = exporter.resume(run_folder(checkpoint.report)) or checkpoint.report
        except Exception:
            log.exception("run %s stopped unexpectedly; the timer will resume it", checkpoint.report.run_id)
            raise
        if report.status in ("completed", "failed"):
            self.state.delete(_active_path(report))
            self._release_export(config.name, report.run_id)
            alert = alert_for(report)
            if alert is not None:
                send_alert(alert, webhook_url=self.app.alert_webhook_url)
        if report.status == "failed" and (report.error or {}).get("type") == "AuthorizationError":
            # Constant Contact refused the refresh token or the client: a person has to act.
            self.mark_connection(
                config.connection, "needs_reauthorization", reason=(report.error or {}).get("message")
            )
        log.info("run %s of export %s: %s", report.run_id, config.name, report.status)
        return report

    def _claim_export(self, name: str, run_id: str) -> RunHandle | None:
        """Take the export's run claim (a create-only or ETag-matched write), or return the run that
        holds it. A claim whose run has ended or vanished is taken over."""
        path = f"{RUNNING_PREFIX}{name}.json"
        for _ in range(3):
            current = self.state.get_with_etag(path)
            etag = None
            if current is not None:
                data, etag = current
                claim_data = orjson.loads(data)
                holder = str(claim_data.get("run_id", ""))
                checkpoint = read_checkpoint(self.state, f"exports/{name}/runs/{holder}")
                if checkpoint is not None and checkpoint.report.status not in ("completed", "failed"):
                    return RunHandle(name, holder, checkpoint.report.status, already_running=True)
                claimed_at = str(claim_data.get("at", ""))
                fresh = _iso(self._clock() - timedelta(seconds=self.app.stale_after_seconds))
                if checkpoint is None and claimed_at > fresh:
                    return RunHandle(name, holder, "queued", already_running=True)  # being created now
            claim = orjson.dumps({"run_id": run_id, "at": utc_now()})
            if self.state.put_bytes_if(path, claim, etag=etag) is not None:
                return None
        raise ConfigError(f"export {name!r} is being started by another request; try again")

    def _release_export(self, name: str, run_id: str) -> None:
        current = self.state.get_with_etag(f"{RUNNING_PREFIX}{name}.json")
        if current is not None and orjson.loads(current[0]).get("run_id") == run_id:
            self.state.delete(f"{RUNNING_PREFIX}{name}.json")

    def run_status(self, name: str, run_id: str) -> dict[str, Any]:
        if not is_run_id(run_id) or self.exports.get(name) is None:
            raise NotFoundError(f"run {run_id!r} of export {name!r} not found")
        raw = self.results.get_bytes(f"exports/{name}/runs/{run_id}/report.json")
        if raw is None:
            raise NotFoundError(f"run {run_id!r} of export {name!r} not found")
        data: dict[str, Any] = orjson.loads(raw)
        return data

    def list_runs(self, name: str, *, limit: int = 20) -> list[dict[str, Any]]:
        self.export(name)
        folders = sorted(
            {
                p.split("/")[3]
                for p in self.results.list(f"exports/{name}/runs/")
                if p.endswith("/report.json")
            },
            reverse=True,
        )
        runs = []
        for run_id in folders[:limit]:
            data = self.run_status(name, run_id)
            runs.append(
                {
                    k: data.get(k)
                    for k in (
                        "run_id",
                        "status",
                        "trigger",
                        "started_at",
                        "finished_at",
                        "received",
                        "submitted",
                        "rejected",
                        "delivered",
                    )
                }
            )
        return runs

    # -- triggers ------------------------------------------------------------------------------

    def on_timer(self, *, past_due: bool = False) -> dict[str, list[str]]:
        """Finish pending work first (runs waiting on activities, a rate limit or a dead worker), then
        start every export whose schedule fired since it last ran. A past-due invocation and the regular
        one that follows compute the same fire time, and only one of them can record it."""
        now = self._clock()
        resumed = self._resume_pending(now)
        started = []
        for config in self.exports.list():
            if not config.enabled or not config.schedule:
                continue
            fire = previous_fire(config.schedule, now)
            if self._claim_fire(config.name, fire):
                try:
                    started.append(self.start_run(config.name, trigger="timer").run_id)
                except ConnectionNotReadyError as exc:
                    log.warning("scheduled run of export %s not started: %s", config.name, exc)
        if past_due:
            log.warning("timer was past due; ran pending work once")
        return {"resumed": resumed, "started": started}

    def _resume_pending(self, now: datetime) -> list[str]:
        resumed = []
        for path in self.state.list(ACTIVE_PREFIX):
            marker = orjson.loads(self.state.get_bytes(path) or b"{}")
            folder = str(marker.get("folder", ""))
            checkpoint = read_checkpoint(self.state, folder) if folder else None
            if checkpoint is None:
                self.state.delete(path)
                continue
            report = checkpoint.report
            config = self.exports.get(report.export or "")
            if config is None or report.status in ("completed", "failed"):
                self.state.delete(path)
                continue
            updated = checkpoint.updated_at or str(marker.get("updated_at") or "")
            if report.status in ("queued", "running") and updated > _iso(
                now - timedelta(seconds=self.app.stale_after_seconds)
            ):
                continue  # another invocation is working on it
            try:
                self.check_connection_ready(config.connection, dry_run=checkpoint.request.dry_run)
            except ConnectionNotReadyError as exc:
                if exc.code in ("connection_not_connected", "connection_needs_reauthorization"):
                    continue  # it can go on once an admin has authorized the connection again
                # Deleted, or the privacy acknowledgement withdrawn: end the run and say why.
                report.fail("ConnectionNotReadyError", str(exc))
                report.finished_at = utc_now()
                self._write_report(report)
                self.state.delete(path)
                continue
            if checkpoint.resume_after and checkpoint.resume_after > _iso(now):
                continue
            self._touch_active(report)
            self._execute(config, checkpoint)
            resumed.append(report.run_id)
        return resumed

    def _claim_fire(self, name: str, fire: datetime) -> bool:
        """Record that the schedule's fire at ``fire`` was handled; True for the one caller that did."""
        path = f"{SCHEDULE_PREFIX}{name}.json"
        current = self.state.get_with_etag(path)
        stamp = _iso(fire)
        if current is None:
            # A new schedule starts from its next fire, not with an immediate catch-up run.
            self.state.put_bytes_if(path, orjson.dumps({"last_fire": stamp}), etag=None)
            return False
        data, etag = current
        if orjson.loads(data).get("last_fire", "") >= stamp:
            return False
        return self.state.put_bytes_if(path, orjson.dumps({"last_fire": stamp}), etag=etag) is not None

    def on_segment_blob(self, name: str, *, length: int | None) -> list[RunReport | RunHandle]:
        """A new segment file: run the exports that watch it, once per blob version."""
        path = name.split("/", 1)[1] if name.startswith(self.app.segments_container + "/") else name
        if not length:
            log.info("ignoring zero-length blob %s", path)
            return []
        blob = self.blob_service.get_blob_client(self.app.segments_container, path)
        props = blob.get_blob_properties()
        version = str(props.version_id or props.etag)
        if not self._claim_blob(path, version):
            log.info("blob %s version already processed", path)
            return []
        started: list[RunReport | RunHandle] = []
        for config in self.exports.list():
            if not config.enabled:
                continue
            segments = config.matches(path, is_cdm_folder=self._is_cdm_folder)
            if segments is not None and not self._cdm_complete(config.name, segments):
                continue
            if segments is not None:
                try:
                    started.append(self.start_run(config.name, segments=segments, trigger="blob"))
                except ConnectionNotReadyError as exc:
                    log.warning("export %s not started for a new segment file: %s", config.name, exc)
        if not started:
            log.info("no export watches %s", path)
        return started

    def _is_cdm_folder(self, folder: str) -> bool:
        return self.segments.exists(f"{folder}/model.json")

    def _cdm_complete(self, export: str, segments: tuple[str, ...]) -> bool:
        """For CDM folders among ``segments``: True once model.json lists a run whose partitions are all
        there, and only for the first event that sees it so (Customer Insights may write model.json
        before or after the partitions; each of their events lands here)."""
        folders = [s.rstrip("/") for s in segments if self._is_cdm_folder(s.rstrip("/"))]
        if not folders:
            return True
        identity = []
        for folder in folders:
            try:
                segment = open_segment(self.segments, folder)
            except SegmentError as exc:
                log.info("CDM export %s not complete yet: %s", folder, mask_text(str(exc)))
                return False
            model = self.blob_service.get_blob_client(self.app.segments_container, f"{folder}/model.json")
            props = model.get_blob_properties()
            identity.append(
                f"{folder}|{props.version_id or props.etag}|{'|'.join(t.source for t in segment.tables)}"
            )
        key = hashlib.sha256("\n".join([export, *identity]).encode()).hexdigest()
        marker = orjson.dumps({"export": export, "cdm": folders, "at": utc_now()})
        return self.state.put_bytes_if(f"{PROCESSED_PREFIX}cdm-{key}.json", marker, etag=None) is not None

    def _claim_blob(self, path: str, version: str) -> bool:
        key = hashlib.sha256(f"{path}\n{version}".encode()).hexdigest()
        marker = orjson.dumps({"blob": path, "version": version, "at": utc_now()})
        return self.state.put_bytes_if(f"{PROCESSED_PREFIX}{key}.json", marker, etag=None) is not None

    def health(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        for label, container in (
            ("segments", self.app.segments_container),
            ("results", self.app.results_container),
            ("state", self.app.state_container),
        ):
            try:
                self.blob_service.get_container_client(container).get_container_properties()
                checks[label] = "ok"
            except Exception as exc:  # a health check reports, it does not raise
                checks[label] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "degraded", "checks": checks, "time": utc_now()}

    # -- bookkeeping ---------------------------------------------------------------------------

    def _write_report(self, report: RunReport) -> None:
        path = f"{run_folder(report)}/report.json"
        report.report_file = self.results.location(path)
        self.results.put_bytes(path, report.to_json(), content_type="application/json")

    def _touch_active(self, report: RunReport) -> None:
        body = orjson.dumps({"folder": run_folder(report), "updated_at": utc_now()})
        self.state.put_bytes(_active_path(report), body, content_type="application/json")


def _active_path(report: RunReport) -> str:
    return f"{ACTIVE_PREFIX}{report.export}--{report.run_id}.json"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ensure_containers(service: ExportService) -> None:
    """Create the three containers if missing (first start, Azurite)."""
    for container in (
        service.app.segments_container,
        service.app.results_container,
        service.app.state_container,
    ):
        with contextlib.suppress(ResourceExistsError):
            service.blob_service.create_container(container)


__all__ = ["AppSettings", "ExportRequest", "ExportService", "NotFoundError", "RunHandle", "ensure_containers"]
