"""One export run: read the segments, validate, de-duplicate, cut into import requests, deliver them to
Constant Contact, and report.

Two phases, on purpose. *Prepare* streams every segment to the end before anything is sent: a file that
cannot be read, a missing column or an export over the profile limit fails the run with nothing
half-exported. It keeps no contacts in memory: serialised request bodies go to a work folder on disk.
*Deliver* submits those bodies, polls the activities and folds Constant Contact's counts into the report.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .chunking import Chunk, Chunker
from .config import Settings
from .constant_contact import TERMINAL_STATES, ActivityPoller, ConstantContactClient, wait_all
from .errors import (
    ApiError,
    ConfigError,
    ExporterError,
    LimitExceededError,
    QuotaExceededError,
)
from .files import SegmentFiles
from .mapping import ColumnPlan, DataMapping, resolve
from .privacy import find_emails, mask_text
from .readers import open_segment
from .rejects import DUPLICATE_COLUMNS, REJECT_COLUMNS, CsvSpool
from .report import ActivityReport, RunReport, SegmentReport, new_run_id, utc_now
from .storage import ResultStore
from .validation import check_row

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PROGRESS_EVERY_ROWS = 100_000

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


@dataclass
class ChunkFile:
    """A prepared import request on disk, and the sidecar that maps its contacts back to input rows."""

    index: int
    body_path: Path
    rows_path: Path
    contacts: int
    size: int

    def body(self) -> bytes:
        return self.body_path.read_bytes()

    def rows_for(self, emails: set[str]) -> list[tuple[str, str, int]]:
        """(email, source, row) of the given emails in this chunk."""
        found = []
        with self.rows_path.open(encoding="utf-8") as fh:
            for line in fh:
                email, source, row = line.rstrip("\n").split("\t")
                if email in emails:
                    found.append((email, source, int(row)))
        return found


@dataclass
class Prepared:
    workdir: Path
    chunks: list[ChunkFile] = field(default_factory=list)
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
        progress: Progress | None = None,
        workdir: str | None = None,
    ) -> None:
        self.settings = settings
        self.files = files
        self.results = results
        self.client = client
        self._progress = progress or (lambda message: None)
        self._workdir = workdir

    def run(self, request: ExportRequest, *, run_id: str | None = None) -> RunReport:
        """Run an export to the end (or to a state worth reporting: failed, pending). Never raises an
        ExporterError: the report says what went wrong."""
        report = RunReport(
            run_id=run_id or new_run_id(),
            list_id=request.list_id,
            export=request.export_name,
            dry_run=request.dry_run,
        )
        report.limits = {
            "max_profiles": self.settings.max_profiles,
            "chunk_max_contacts": self.settings.chunks.max_contacts,
            "chunk_max_bytes": self.settings.chunks.max_bytes,
            "email_max_length": self.settings.rules.email_max_length,
            "too_long": self.settings.rules.too_long,
        }
        prepared = Prepared(Path(tempfile.mkdtemp(prefix="export-", dir=self._workdir)))
        try:
            self._prepare(request, report, prepared)
            if request.dry_run:
                report.status = "completed"
            else:
                self._deliver(request, report, prepared)
        except ExporterError as exc:
            self._record_error(report, exc)
        finally:
            self._finish(report, prepared)
            shutil.rmtree(prepared.workdir, ignore_errors=True)
        return report

    # -- prepare -------------------------------------------------------------------------------

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
            segment = open_segment(self.files, path)
            seg_report = SegmentReport(name=segment.name, path=path, tables=len(segment.tables))
            report.segments.append(seg_report)
            for table in segment.tables:
                plan = resolve(request.mapping, table.columns, source=table.source)
                source = table.source
                for row, values in table.rows():
                    received += 1
                    if received > limit:
                        raise LimitExceededError(
                            f"the export has more than {limit:,} profiles (the limit per export); nothing was "
                            "sent. Split the segment into smaller ones, or raise EXPORTER_MAX_PROFILES if it "
                            f"was set below {limit:,}."
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
                                value = (
                                    values[plan.email_index]
                                    if issue.field == "email"
                                    else _value_of(values, plan, issue.field)
                                )
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
        report.submitted = 0
        report.chunks = len(prepared.chunks)
        report.activities = [
            ActivityReport(chunk=c.index, contacts=c.contacts, bytes=c.size) for c in prepared.chunks
        ]
        self._progress(
            f"prepared {sum(c.contacts for c in prepared.chunks):,} contacts in {len(prepared.chunks)} import "
            f"request(s); {report.rejected:,} rejected, {report.duplicates:,} duplicates"
        )

    def _spool(self, chunk: Chunk, prepared: Prepared) -> None:
        body_path = prepared.workdir / f"chunk-{chunk.index:05d}.json"
        rows_path = prepared.workdir / f"chunk-{chunk.index:05d}.rows.tsv"
        body_path.write_bytes(chunk.body)
        with rows_path.open("w", encoding="utf-8") as fh:
            fh.writelines(f"{email}\t{source}\t{row}\n" for email, source, row in chunk.rows)
        prepared.chunks.append(ChunkFile(chunk.index, body_path, rows_path, chunk.count, len(chunk.body)))

    # -- deliver -------------------------------------------------------------------------------

    def _deliver(self, request: ExportRequest, report: RunReport, prepared: Prepared) -> None:
        client = self.client
        if client is None:
            raise ConfigError("no Constant Contact client configured")
        if not prepared.chunks:
            report.status = "completed"
            report.delivered = 0
            return
        self._check_target(client, request)
        pollers: dict[int, ActivityPoller] = {}
        by_index = {c.index: c for c in prepared.chunks}
        for chunk, activity in zip(prepared.chunks, report.activities, strict=True):
            poller = client.begin_import_contacts(chunk.body())
            pollers[chunk.index] = poller
            activity.activity_id = poller.activity_id
            activity.state = str(poller.status().get("state", "initialized"))
            report.submitted += chunk.contacts
            self._progress(
                f"submitted import {chunk.index}/{len(prepared.chunks)} ({chunk.contacts:,} contacts)"
            )
        activities = {a.chunk: a for a in report.activities}
        for poller in wait_all(list(pollers.values()), timeout=self.settings.api.activity_timeout_seconds):
            index = next(i for i, p in pollers.items() if p is poller)
            self._fold(activities[index], poller.status(), by_index[index], prepared)
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
                    f"custom field(s) {', '.join(missing)} do not exist in the Constant Contact "
                    "account; create them (Contacts > Custom fields) or fix the data matching"
                )

    def _fold(
        self, activity: ActivityReport, status: dict[str, object], chunk: ChunkFile, prepared: Prepared
    ) -> None:
        """Constant Contact's view of one import into the report; refused rows into the rejects file."""
        activity.state = str(status.get("state"))
        percent = status.get("percent_done")
        activity.percent_done = int(percent) if isinstance(percent, int | float) else None
        counts = status.get("status")
        activity.status = (
            {k: int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
        )
        raw_errors = [str(e) for e in status.get("activity_errors") or [] if e]  # type: ignore[attr-defined]
        activity.errors = [mask_text(e) for e in raw_errors[:100]]
        if activity.state != "completed":
            return
        refused = activity.status.get("error_count", 0) + activity.status.get("correctable_count", 0)
        unsubscribed = activity.status.get("cannot_add_to_list_count", 0)
        activity.refused = refused
        activity.delivered = max(0, chunk.contacts - refused - unsubscribed)
        if raw_errors and prepared.rejects is not None:
            by_email: dict[str, str] = {}
            for text in raw_errors:
                for email in find_emails(text):
                    by_email.setdefault(email, text)
            for email, source, row in chunk.rows_for(set(by_email)):
                prepared.rejects.add(
                    source,
                    row,
                    "email",
                    "refused_by_constant_contact",
                    f"Constant Contact refused it: {by_email[email]}",
                    email,
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
            report.fail(
                "ActivityFailed",
                f"{len(bad)} import activit{'y' if len(bad) == 1 else 'ies'} ended "
                f"{', '.join(sorted({a.state for a in bad}))}: {lost:,} contacts were not imported",
            )
        elif waiting:
            report.status = "pending"
        else:
            report.status = "completed"
        if not waiting:
            report.delivered = sum(a.delivered or 0 for a in acts)

    # -- finish --------------------------------------------------------------------------------

    def _record_error(self, report: RunReport, exc: ExporterError) -> None:
        message = mask_text(str(exc))
        if isinstance(exc, QuotaExceededError):
            report.status = "pending"
            report.error = {"type": type(exc).__name__, "message": message}
        else:
            report.fail(type(exc).__name__, message)
        log.error("run %s %s: %s", report.run_id, report.status, message)

    def _finish(self, report: RunReport, prepared: Prepared) -> None:
        if report.status == "running":
            report.fail("InternalError", "the run stopped unexpectedly")
        if self.client is not None:
            report.api_calls = self.client.api_calls
            report.retries = self.client.retries
            report.token_refreshes = self.client.tokens.refreshes
        base = run_folder(report)
        for spool, attr, name in (
            (prepared.rejects, "rejects_file", "rejects.csv"),
            (prepared.duplicates, "duplicates_file", "duplicates.csv"),
        ):
            if spool is None:
                continue
            spool.close()
            setattr(
                report, attr, self.results.put_file(f"{base}/{name}", spool.path, content_type="text/csv")
            )
        report.finished_at = utc_now()
        report.report_file = self.results.location(f"{base}/report.json")
        self.results.put_bytes(f"{base}/report.json", report.to_json(), content_type="application/json")


def run_folder(report: RunReport) -> str:
    """runs/<run_id>, under exports/<name>/ when the run belongs to a configured export."""
    return f"exports/{report.export}/runs/{report.run_id}" if report.export else f"runs/{report.run_id}"


def _value_of(values: Sequence[str], plan: ColumnPlan, target: str) -> str:
    for name, index, _column, _max in plan.fields:
        if name == target and index < len(values):
            return values[index]
    return ""
