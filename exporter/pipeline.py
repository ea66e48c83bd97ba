"""One export run: read the segments, validate, de-duplicate, cut into import requests, deliver them to
Constant Contact, and report.

Two phases, on purpose. *Prepare* streams every segment to the end before anything is sent: a file that
cannot be read, a missing column or an export over the profile limit fails the run with nothing
half-exported. It keeps no contacts in memory: serialised request bodies go to a work folder on disk and
then to the state store. *Deliver* submits those bodies one by one, writing a checkpoint after every
submitted chunk and every finished activity, so that a run stopped by a timeout, a crash or the daily
quota is finished later by ``resume`` instead of being started again, and never resubmits a chunk whose
activity exists.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .chunking import Chunk, Chunker
from .config import Settings
from .constant_contact import TERMINAL_STATES, ActivityPoller, ConstantContactClient, wait_all
from .errors import (
    ApiError,
    AuthorizationError,
    ConfigError,
    ExporterError,
    LimitExceededError,
    QuotaExceededError,
    TransientApiError,
)
from .files import SegmentFiles
from .mapping import ColumnPlan, DataMapping, resolve
from .privacy import find_emails, mask_text
from .readers import open_segment
from .rejects import DUPLICATE_COLUMNS, REJECT_COLUMNS, CsvSpool, safe_cell
from .report import ActivityReport, RunReport, SegmentReport, new_run_id, utc_now
from .storage import ResultStore
from .validation import check_row

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PROGRESS_EVERY_ROWS = 100_000
CHECKPOINT_VERSION = 1

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export where: segment paths (in the segment files), the target list and the data matching."""

    segments: tuple[str, ...]
    list_id: str
    mapping: DataMapping
    dry_run: bool = False
    export_name: str | None = None

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("at least one segment is required")
        if not _UUID.match(self.list_id or ""):
            raise ConfigError(
                f"list ID {self.list_id!r} is not a Constant Contact list ID (a UUID such as "
                "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments),
            "list_id": self.list_id,
            "mapping": self.mapping.to_dict(),
            "dry_run": self.dry_run,
            "export_name": self.export_name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportRequest:
        mapping = data["mapping"]
        return cls(
            segments=tuple(data["segments"]),
            list_id=data["list_id"],
            mapping=DataMapping(
                email=mapping["email"],
                first_name=mapping.get("first_name"),
                last_name=mapping.get("last_name"),
                fields=tuple((k, v) for k, v in (mapping.get("fields") or {}).items()),
            ),
            dry_run=bool(data.get("dry_run")),
            export_name=data.get("export_name"),
        )


@dataclass
class Checkpoint:
    """Everything needed to finish a run elsewhere: the request, the report so far, where the prepared
    import bodies are. Stored as ``<run folder>/state.json`` in the state store."""

    request: ExportRequest
    report: RunReport
    chunks: list[dict[str, Any]] = field(default_factory=list)  # {index, body, rows, contacts, bytes}
    resume_after: str | None = None  # ISO time before which a paused run should not be resumed
    updated_at: str | None = None  # when the checkpoint was last written (read back, never set by hand)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": CHECKPOINT_VERSION,
                "request": self.request.to_dict(),
                "report": self.report.to_dict(),
                "chunks": self.chunks,
                "resume_after": self.resume_after,
                "updated_at": utc_now(),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        data = orjson.loads(raw)
        return cls(
            request=ExportRequest.from_dict(data["request"]),
            report=RunReport.from_dict(data["report"]),
            chunks=list(data.get("chunks") or []),
            resume_after=data.get("resume_after"),
            updated_at=data.get("updated_at"),
        )


@dataclass
class Prepared:
    workdir: Path
    chunks: list[tuple[int, Path, Path, int, int]] = field(default_factory=list)  # index, body, rows, n, size
    rejects: CsvSpool | None = None
    duplicates: CsvSpool | None = None


class Exporter:
    """The export service every entry point calls (CLI, HTTP, timer and blob triggers)."""

    def __init__(
        self,
        settings: Settings,
        *,
        files: SegmentFiles,
        results: ResultStore,
        client: ConstantContactClient | None,
        state: ResultStore | None = None,
        progress: Progress | None = None,
        workdir: str | None = None,
    ) -> None:
        self.settings = settings
        self.files = files
        self.results = results
        self.state = state or results
        self.client = client
        self._progress = progress or (lambda message: None)
        self._workdir = workdir

    # -- entry points --------------------------------------------------------------------------

    def run(
        self, request: ExportRequest, *, run_id: str | None = None, trigger: str | None = None
    ) -> RunReport:
        """Prepare and deliver an export, to the end or to a state worth reporting (failed, pending).
        Never raises an ExporterError: the report says what went wrong."""
        report = self.new_report(request, run_id=run_id, trigger=trigger)
        checkpoint = self._prepare_run(request, report)
        if checkpoint is None:
            return report
        return self._deliver_run(checkpoint)

    def resume(self, run_folder: str) -> RunReport | None:
        """Finish a run from its checkpoint (submits only chunks that have no activity yet)."""
        checkpoint = self.load_checkpoint(run_folder)
        if checkpoint is None:
            return None
        if checkpoint.report.status in ("completed", "failed"):
            return checkpoint.report
        return self._deliver_run(checkpoint)

    def new_report(
        self, request: ExportRequest, *, run_id: str | None = None, trigger: str | None = None
    ) -> RunReport:
        report = RunReport(
            run_id=run_id or new_run_id(),
            list_id=request.list_id,
            export=request.export_name,
            trigger=trigger,
            dry_run=request.dry_run,
        )
        report.limits = {
            "max_profiles": self.settings.max_profiles,
            "chunk_max_contacts": self.settings.chunks.max_contacts,
            "chunk_max_bytes": self.settings.chunks.max_bytes,
            "email_max_length": self.settings.rules.email_max_length,
            "too_long": self.settings.rules.too_long,
        }
        return report

    def load_checkpoint(self, run_folder: str) -> Checkpoint | None:
        raw = self.state.get_bytes(f"{run_folder}/state.json")
        return Checkpoint.from_json(raw) if raw else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        folder = run_folder(checkpoint.report)
        self.state.put_bytes(f"{folder}/state.json", checkpoint.to_json(), content_type="application/json")

    # -- prepare -------------------------------------------------------------------------------

    def _prepare_run(self, request: ExportRequest, report: RunReport) -> Checkpoint | None:
        """Phase one. Returns the checkpoint to deliver from, or None when the run already ended
        (failed, dry run, nothing to send) and its report is written."""
        prepared = Prepared(Path(tempfile.mkdtemp(prefix="export-", dir=self._workdir)))
        folder = run_folder(report)
        try:
            try:
                self._prepare(request, report, prepared)
            except ExporterError as exc:
                self._record_error(report, exc)
            self._upload_row_files(report, prepared)
            if report.status == "failed":
                self._write_report(report)
                return None
            if request.dry_run or not prepared.chunks:
                report.status = "completed"
                report.delivered = None if request.dry_run else 0
                self._write_report(report)
                return None
            checkpoint = Checkpoint(request=request, report=report)
            for index, body, rows, contacts, size in prepared.chunks:
                body_path = f"{folder}/chunks/chunk-{index:05d}.json"
                rows_path = f"{folder}/chunks/chunk-{index:05d}.rows.tsv"
                self.state.put_file(body_path, body, content_type="application/json")
                self.state.put_file(rows_path, rows, content_type="text/tab-separated-values")
                checkpoint.chunks.append(
                    {
                        "index": index,
                        "body": body_path,
                        "rows": rows_path,
                        "contacts": contacts,
                        "bytes": size,
                    }
                )
            self.save_checkpoint(checkpoint)
            self._write_report(report)
            return checkpoint
        finally:
            for spool in (prepared.rejects, prepared.duplicates):
                if spool is not None:
                    spool.discard()
            shutil.rmtree(prepared.workdir, ignore_errors=True)

    def _prepare(self, request: ExportRequest, report: RunReport, prepared: Prepared) -> None:
        settings = self.settings
        rules = settings.rules
        prepared.rejects = rejects = CsvSpool(REJECT_COLUMNS, directory=str(prepared.workdir))
        prepared.duplicates = dups = CsvSpool(DUPLICATE_COLUMNS, directory=str(prepared.workdir))
        chunker = Chunker([request.list_id], settings.chunks)
        seen: dict[str, tuple[str, int]] = {}
        warnings = report.field_warnings
        limit = settings.max_profiles
        received = 0
        dumps = orjson.dumps
        for path in request.segments:
            seg_report = SegmentReport(name=path.rstrip("/").rsplit("/", 1)[-1], path=path)
            report.segments.append(seg_report)  # before opening: a file that cannot be read is named too
            segment = open_segment(self.files, path)
            seg_report.name, seg_report.tables = segment.name, len(segment.tables)
            for table in segment.tables:
                plan = resolve(request.mapping, table.columns, source=table.source)
                source = table.source
                for row, values in table.rows():
                    received += 1
                    if received > limit:
                        raise LimitExceededError(
                            f"the export has more than {limit:,} profiles (the limit per export); nothing "
                            "was sent. Split the segment into smaller ones, or raise EXPORTER_MAX_PROFILES "
                            f"if it was set below {limit:,}."
                        )
                    seg_report.received += 1
                    checked = check_row(values, plan, rules)
                    for issue in checked.issues:
                        if not issue.rejects_row:
                            warnings[issue.reason] = warnings.get(issue.reason, 0) + 1
                    if checked.contact is None or checked.key is None:
                        report.rejected += 1
                        for issue in checked.issues:
                            if issue.rejects_row:
                                value = _value_of(values, plan, issue.field)
                                rejects.add(source, row, issue.field, issue.code, issue.reason, value)
                        continue
                    report.valid += 1
                    first = seen.get(checked.key)
                    if first is not None:
                        report.duplicates += 1
                        dups.add(source, row, checked.key, first[0], first[1])
                        continue
                    seen[checked.key] = (source, row)
                    done = chunker.add(dumps(checked.contact), checked.key, source, row)
                    if done:
                        self._spool(done, prepared)
                    if received % PROGRESS_EVERY_ROWS == 0:
                        self._progress(f"read {received:,} rows, {len(seen):,} contacts to send")
        report.received = received
        last = chunker.finish()
        if last:
            self._spool(last, prepared)
        report.chunks = len(prepared.chunks)
        report.activities = [
            ActivityReport(chunk=index, contacts=contacts, bytes=size)
            for index, _b, _r, contacts, size in prepared.chunks
        ]
        self._progress(
            f"prepared {sum(c[3] for c in prepared.chunks):,} contacts in {len(prepared.chunks)} import "
            f"request(s); {report.rejected:,} rejected, {report.duplicates:,} duplicates"
        )

    def _spool(self, chunk: Chunk, prepared: Prepared) -> None:
        body_path = prepared.workdir / f"chunk-{chunk.index:05d}.json"
        rows_path = prepared.workdir / f"chunk-{chunk.index:05d}.rows.tsv"
        body_path.write_bytes(chunk.body)
        with rows_path.open("w", encoding="utf-8") as fh:
            fh.writelines(f"{email}\t{source}\t{row}\n" for email, source, row in chunk.rows)
        prepared.chunks.append((chunk.index, body_path, rows_path, chunk.count, len(chunk.body)))

    def _upload_row_files(self, report: RunReport, prepared: Prepared) -> None:
        base = run_folder(report)
        for spool, attr, name in (
            (prepared.rejects, "rejects_file", "rejects.csv"),
            (prepared.duplicates, "duplicates_file", "duplicates.csv"),
        ):
            if spool is None:
                continue
            spool.close()
            location = self.results.put_file(f"{base}/{name}", spool.path, content_type="text/csv")
            setattr(report, attr, location)

    # -- deliver -------------------------------------------------------------------------------

    def _deliver_run(self, checkpoint: Checkpoint) -> RunReport:
        report = checkpoint.report
        report.status = "running"
        checkpoint.resume_after = None
        try:
            self._deliver(checkpoint)
        except QuotaExceededError as exc:
            self._record_error(report, exc)
            checkpoint.resume_after = next_utc_midnight()
        except (TransientApiError, ApiError, ExporterError) as exc:
            self._record_error(report, exc)
        finally:
            self._count_calls(report)
            if report.status in ("completed", "failed"):
                self._finish(checkpoint)
            else:
                self.save_checkpoint(checkpoint)
                self._write_report(report)
        return report

    def _deliver(self, checkpoint: Checkpoint) -> None:
        client = self.client
        report = checkpoint.report
        if client is None:
            raise ConfigError("no Constant Contact client configured")
        activities = {a.chunk: a for a in report.activities}
        chunks = {int(c["index"]): c for c in checkpoint.chunks}
        if all(a.activity_id is None for a in report.activities):
            self._check_target(client, checkpoint.request)
        pollers: dict[int, ActivityPoller] = {}
        for index in sorted(chunks):
            activity = activities[index]
            if activity.activity_id is not None:
                if activity.state not in TERMINAL_STATES:
                    pollers[index] = ActivityPoller.resume(client, activity.activity_id)
                continue
            body = self.state.get_bytes(chunks[index]["body"])
            if body is None:
                raise ExporterError(
                    f"prepared import {index} is missing from the state store; start a new run"
                )
            poller = client.begin_import_contacts(body)
            pollers[index] = poller
            activity.activity_id = poller.activity_id
            activity.state = str(poller.status().get("state", "initialized"))
            report.submitted += activity.contacts
            self.save_checkpoint(checkpoint)  # after every submitted chunk: never submitted twice
            self._progress(f"submitted import {index}/{len(chunks)} ({activity.contacts:,} contacts)")
        by_poller = {id(p): i for i, p in pollers.items()}
        for poller in wait_all(list(pollers.values()), timeout=self.settings.api.activity_timeout_seconds):
            index = by_poller[id(poller)]
            self._fold(report, activities[index], poller.status(), chunks[index])
            self.save_checkpoint(checkpoint)
            self._progress(f"import {index} {activities[index].state}")
        for index, poller in pollers.items():
            if not poller.done():
                activities[index].state = str(poller.status().get("state", "processing"))
        self._settle(report)

    def _check_target(self, client: ConstantContactClient, request: ExportRequest) -> None:
        """Fail fast, before any import, on a list or custom field that does not exist."""
        try:
            client.get_list(request.list_id)
        except ApiError as exc:
            if exc.status == 404:
                raise ConfigError(
                    f"Constant Contact list {request.list_id} does not exist in this account; "
                    "check the export's list ID"
                ) from None
            raise
        wanted = {t[3:] for t, _ in request.mapping.fields if t.startswith("cf:")}
        if wanted:
            names = {str(f.get("name")) for f in client.custom_fields()}
            missing = sorted(wanted - names)
            if missing:
                raise ConfigError(
                    f"custom field(s) {', '.join(missing)} do not exist in the Constant Contact account; "
                    "create them (Contacts > Custom fields) or fix the data matching"
                )

    def _fold(
        self, report: RunReport, activity: ActivityReport, status: dict[str, Any], chunk: dict[str, Any]
    ) -> None:
        """Constant Contact's view of one import into the report; refused rows into the rejects file."""
        activity.state = str(status.get("state"))
        percent = status.get("percent_done")
        activity.percent_done = int(percent) if isinstance(percent, int | float) else None
        counts = status.get("status")
        activity.status = (
            {k: int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
        )
        raw_errors = [str(e) for e in status.get("activity_errors") or [] if e]
        activity.errors = [mask_text(e) for e in raw_errors[:100]]
        if activity.state != "completed":
            return
        refused = activity.status.get("error_count", 0) + activity.status.get("correctable_count", 0)
        unsubscribed = activity.status.get("cannot_add_to_list_count", 0)
        activity.refused = refused
        activity.delivered = max(0, activity.contacts - refused - unsubscribed)
        if raw_errors:
            self._reject_refused(report, raw_errors, chunk)

    def _reject_refused(self, report: RunReport, errors: list[str], chunk: dict[str, Any]) -> None:
        """Map Constant Contact's error strings back to input rows, through the chunk's row sidecar."""
        by_email: dict[str, str] = {}
        for text in errors:
            for email in find_emails(text):
                by_email.setdefault(email, text)
        raw_rows = self.state.get_bytes(str(chunk["rows"])) or b""
        lines = []
        for line in raw_rows.decode("utf-8").splitlines():
            email, source, row = line.split("\t")
            if email in by_email:
                reason = f"Constant Contact refused it: {by_email[email]}"
                lines.append([source, row, "email", "refused_by_constant_contact", reason, email])
        if lines:
            self._append_rejects(report, lines)

    def _append_rejects(self, report: RunReport, rows: list[list[str]]) -> None:
        """Rows refused by Constant Contact join the validation rejects in the run's one rejects file."""
        path = f"{run_folder(report)}/rejects.csv"
        existing = self.results.get_bytes(path) or csv_lines([list(REJECT_COLUMNS)])
        report.rejects_file = self.results.put_bytes(
            path, existing + csv_lines(rows), content_type="text/csv"
        )

    @staticmethod
    def _settle(report: RunReport) -> None:
        acts = report.activities
        report.refused_by_constant_contact = sum(a.refused for a in acts)
        report.not_added_unsubscribed = sum(
            a.status.get("cannot_add_to_list_count", 0) for a in acts if a.state == "completed"
        )
        bad = [a for a in acts if a.state in TERMINAL_STATES and a.state != "completed"]
        waiting = [a for a in acts if a.state not in TERMINAL_STATES]
        if bad:
            lost = sum(a.contacts for a in bad)
            states = ", ".join(sorted({a.state for a in bad}))
            noun = "activity" if len(bad) == 1 else "activities"
            report.fail(
                "ActivityFailed",
                f"{len(bad)} import {noun} ended {states}: {lost:,} contacts were not imported",
            )
        elif waiting:
            report.status = "pending"
        else:
            report.status = "completed"
            report.error = None
        if not waiting:
            report.delivered = sum(a.delivered or 0 for a in acts)

    # -- finish --------------------------------------------------------------------------------

    def _record_error(self, report: RunReport, exc: ExporterError) -> None:
        message = mask_text(str(exc))
        kind = type(exc).__name__
        if isinstance(exc, QuotaExceededError | TransientApiError) and not isinstance(
            exc, AuthorizationError
        ):
            report.status = "pending"  # worth another try later: the timer resumes it
            report.error = {"type": kind, "message": message}
        else:
            report.fail(kind, message)
        log.error("run %s %s: %s", report.run_id, report.status, message)

    def _count_calls(self, report: RunReport) -> None:
        if self.client is not None:
            report.api_calls = self.client.api_calls
            report.retries = self.client.retries
            report.token_refreshes = self.client.tokens.refreshes

    def _finish(self, checkpoint: Checkpoint) -> None:
        """A run that ended: final report, and the prepared bodies removed (the checkpoint stays)."""
        self.save_checkpoint(checkpoint)
        self._write_report(checkpoint.report)
        for chunk in checkpoint.chunks:
            self.state.delete(str(chunk["body"]))
            self.state.delete(str(chunk["rows"]))

    def _write_report(self, report: RunReport) -> None:
        if report.status in ("completed", "failed"):
            report.finished_at = utc_now()
        path = f"{run_folder(report)}/report.json"
        report.report_file = self.results.location(path)
        self.results.put_bytes(path, report.to_json(), content_type="application/json")


def run_folder(report: RunReport) -> str:
    """runs/<run_id>, under exports/<name>/ when the run belongs to a configured export."""
    return f"exports/{report.export}/runs/{report.run_id}" if report.export else f"runs/{report.run_id}"


def next_utc_midnight() -> str:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
    return midnight.isoformat().replace("+00:00", "Z")


def _value_of(values: Sequence[str], plan: ColumnPlan, target: str) -> str:
    if target == "email":
        return values[plan.email_index] if plan.email_index < len(values) else ""
    for name, index, _column, _max in plan.fields:
        if name == target and index < len(values):
            return values[index]
    return ""


def csv_lines(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
    return buffer.getvalue().encode("utf-8")
