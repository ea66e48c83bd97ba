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
import gc
import io
import logging
import re
import shutil
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import and_, eq, itemgetter, not_, or_
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .chunking import Chunk, Chunker, item_sizes, join_cores, read_row_map, serialise
from .config import Settings
from .constant_contact import TERMINAL_STATES, ActivityPoller, ConstantContactClient, wait_all
from .errors import (
    ApiError,
    AuthorizationError,
    ConfigError,
    ExporterError,
    LimitExceededError,
    QuotaExceededError,
    SegmentError,
    TransientApiError,
)
from .files import SegmentFiles
from .mapping import ColumnPlan, DataMapping, resolve
from .observability import record_run_metrics, run_context
from .privacy import find_emails, mask_email, mask_text
from .readers import check_delimiter, check_encoding, find_column, open_segment
from .rejects import DUPLICATE_COLUMNS, REJECT_COLUMNS, CsvSpool, safe_cell
from .report import ActivityReport, RunReport, SegmentReport, new_run_id, utc_now
from .snapshot import CLEAR, FLAGS, NEW, OURS, Snapshot, SnapshotBuilder, email_key, email_keys, fields_hash
from .validation import check_batch

if TYPE_CHECKING:
    from .storage import ResultStore

log = logging.getLogger(__name__)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PROGRESS_EVERY_ROWS = 100_000
CHECKPOINT_VERSION = 1

Progress = Callable[[str], None]
SyncMode = Literal["add_only", "mirror"]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export where: segment paths (in the segment files), the target list and the data matching."""

    segments: tuple[str, ...]
    list_id: str
    mapping: DataMapping
    dry_run: bool = False
    export_name: str | None = None
    # Sync: send only new and changed contacts (unless full_sync); in mirror mode also remove from the
    # list the contacts this export added that have left the segment, unless the segment shrank by more
    # than shrink_guard (a share) and allow_shrink was not given.
    mode: SyncMode = "add_only"
    full_sync: bool = False
    allow_shrink: bool = False
    shrink_guard: float = 0.5
    consent_field: str | None = None  # a column whose "no" keeps a profile out of the export
    encoding: str | None = None  # CSV encoding when not UTF-8 (CDM folders say theirs in model.json)
    delimiter: str | None = None
    day_first: bool = False  # slashed dates are D/M/YYYY, not M/D/YYYY (see ValidationRules)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("at least one segment is required")
        if self.mode not in ("add_only", "mirror"):
            raise ConfigError(f"mode must be add_only or mirror, got {self.mode!r}")
        if not 0.0 <= self.shrink_guard <= 1.0:
            raise ConfigError(f"shrink_guard is a share between 0 and 1, got {self.shrink_guard}")
        check_encoding(self.encoding)
        check_delimiter(self.delimiter)
        if not isinstance(self.list_id, str) or not _UUID.fullmatch(self.list_id):
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
            "mode": self.mode,
            "full_sync": self.full_sync,
            "allow_shrink": self.allow_shrink,
            "shrink_guard": self.shrink_guard,
            "consent_field": self.consent_field,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "day_first": self.day_first,
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
            mode=data.get("mode") or "add_only",
            full_sync=bool(data.get("full_sync")),
            allow_shrink=bool(data.get("allow_shrink")),
            shrink_guard=float(data.get("shrink_guard", 0.5)),
            consent_field=data.get("consent_field"),
            encoding=data.get("encoding"),
            delimiter=data.get("delimiter"),
            day_first=bool(data.get("day_first")),
        )

    @property
    def snapshot_path(self) -> str:
        """What this export last delivered; ad hoc runs (the CLI) keep one per list."""
        owner = f"exports/{self.export_name}" if self.export_name else f"lists/{self.list_id}"
        return f"{owner}/snapshot.bin"


@dataclass
class Checkpoint:
    """Everything needed to finish a run elsewhere: the request, the report so far, where the prepared
    import bodies are. Stored as ``<run folder>/state.json`` in the state store."""

    request: ExportRequest
    report: RunReport
    chunks: list[dict[str, Any]] = field(default_factory=list)  # {index, body, rows, contacts, bytes}
    # mirror mode: {"leavers": path, "resolved": bool, "contact_ids": [...], "activity_ids": [...], "done": bool}
    removals: dict[str, Any] = field(default_factory=dict)
    refused_keys: list[int] = field(default_factory=list)  # email keys Constant Contact refused
    resume_after: str | None = None  # ISO time before which a paused run should not be resumed
    updated_at: str | None = None  # when the checkpoint was last written (read back, never set by hand)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": CHECKPOINT_VERSION,
                "request": self.request.to_dict(),
                "report": self.report.to_dict(),
                "chunks": self.chunks,
                "removals": self.removals,
                "refused_keys": self.refused_keys,
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
            removals=dict(data.get("removals") or {}),
            refused_keys=[int(k) for k in data.get("refused_keys") or []],
            resume_after=data.get("resume_after"),
            updated_at=data.get("updated_at"),
        )


@dataclass
class Prepared:
    workdir: Path
    chunks: list[tuple[int, Path, Path, int, int]] = field(default_factory=list)  # index, body, rows, n, size
    rejects: CsvSpool | None = None
    duplicates: CsvSpool | None = None
    snapshot: Snapshot | None = None  # what this run leaves delivered (NEW flags resolved at the end)
    leavers: array[int] = field(default_factory=lambda: array("Q"))  # keys this export may remove


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
        with run_context(report.run_id, export=request.export_name):  # every log line carries the run id
            checkpoint = self._prepare_run(request, report)
            if checkpoint is not None:
                report = self._deliver_run(checkpoint)
            _observe(report)
        return report

    def resume(self, run_folder: str) -> RunReport | None:
        """Finish a run from its checkpoint (submits only chunks that have no activity yet)."""
        checkpoint = self.load_checkpoint(run_folder)
        if checkpoint is None:
            return None
        if checkpoint.report.status in ("completed", "failed"):
            return checkpoint.report
        with run_context(checkpoint.report.run_id, export=checkpoint.request.export_name):
            report = self._deliver_run(checkpoint)
            _observe(report)
        return report

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
        return read_checkpoint(self.state, run_folder)

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
            if request.dry_run or (not prepared.chunks and not self._removals_due(report)):
                if not request.dry_run and self.client is not None:
                    try:  # nothing to send, but a list that does not exist is still an error to report
                        self._check_target(self.client, request)
                    except ExporterError as exc:
                        self._record_error(report, exc)
                        self._write_report(report)
                        return None
                report.status = "completed"
                report.delivered = None if request.dry_run else 0
                if not request.dry_run and prepared.snapshot is not None:
                    self._promote_snapshot(request, prepared.snapshot, refused=())
                self._write_report(report)
                return None
            checkpoint = Checkpoint(request=request, report=report)
            if prepared.snapshot is not None:
                self.state.put_bytes(f"{folder}/snapshot.next.bin", prepared.snapshot.to_bytes())
            if self._removals_due(report):
                self.state.put_bytes(f"{folder}/leavers.bin", prepared.leavers.tobytes())
                checkpoint.removals = {"leavers": f"{folder}/leavers.bin", "resolved": False, "done": False}
            for index, body, rows, contacts, size in prepared.chunks:
                body_path = f"{folder}/chunks/chunk-{index:05d}.json"
                rows_path = f"{folder}/chunks/chunk-{index:05d}.rows.json"
                self.state.put_file(body_path, body, content_type="application/json")
                self.state.put_file(rows_path, rows, content_type="application/json")
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
        """Stream every row once: validate, de-duplicate, compare with the snapshot, chunk. The hot loop
        of every export, so counters are locals and contacts are keyed by 64-bit email hashes."""
        settings = self.settings
        rules = replace(settings.rules, day_first=request.day_first)
        prepared.rejects = rejects = CsvSpool(REJECT_COLUMNS, directory=str(prepared.workdir))
        prepared.duplicates = dups = CsvSpool(DUPLICATE_COLUMNS, directory=str(prepared.workdir))
        chunker = Chunker([request.list_id], settings.chunks)
        seen: dict[int, int] = {}  # email key -> (table number << 32) | row of its first occurrence
        sources: list[str] = []
        warnings = report.field_warnings
        limit = settings.max_profiles
        received = valid = rejected = duplicates = creates = updates = unchanged = excluded = 0
        check = check_batch
        old = None if request.full_sync else self._load_snapshot(request)
        old_get = old.get if old is not None else None
        builder = SnapshotBuilder()
        remember = builder.extend
        sample: list[dict[str, Any]] = []
        reading: SegmentReport | None = None
        table_start = 0
        # The loop allocates a few objects a row and frees them all (no cycles): the cyclic collector
        # would only walk them again and again. Measured: 10% of a 1M-profile prepare.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for path in request.segments:
                seg_report = SegmentReport(name=path.rstrip("/").rsplit("/", 1)[-1], path=path)
                report.segments.append(seg_report)  # before opening: a file that cannot be read is named too
                segment = open_segment(
                    self.files, path, encoding=request.encoding, delimiter=request.delimiter
                )
                seg_report.name, seg_report.tables = segment.name, len(segment.tables)
                for table in segment.tables:
                    plan = resolve(request.mapping, table.columns, source=table.source)
                    source = table.source
                    table_no = len(sources) << 32
                    sources.append(source)
                    consent = _consent_column(request, table.columns, source)
                    width = len(table.columns)
                    table_start = received
                    reading = seg_report  # counted in finally should the table fail half-way
                    merged: list[int] = []  # rows whose quoted value seems to hold other rows
                    for numbers, rows in table.batches(email_column=plan.email_index, merged=merged):
                        before, received = received, received + len(rows)
                        if received > limit:
                            received = before  # counted: the rows checked, none of this batch
                            raise LimitExceededError(
                                f"the export has more than {limit:,} profiles (the limit per export); nothing "
                                "was sent. Split the segment into smaller ones, or raise EXPORTER_MAX_PROFILES "
                                f"if it was set below {limit:,}."
                            )
                        if received // PROGRESS_EVERY_ROWS != before // PROGRESS_EVERY_ROWS:
                            self._progress(f"read {received:,} rows, {len(seen):,} contacts")
                        refused: list[
                            tuple[int, str, str, str, str]
                        ] = []  # (row, field, code, reason, value)
                        if merged or (rows and max(map(len, rows)) > width):
                            numbers, rows, refused = _split_untrusted_rows(numbers, rows, width, merged)
                            merged.clear()
                            rejected += len(refused)
                            report.untrusted_rows += len(refused)
                        checked = check(rows, plan, rules)
                        for index, issues in checked.issues:
                            for issue in issues:
                                if issue.rejects_row:
                                    value = _value_of(rows[index], plan, issue.field)
                                    refused.append(
                                        (numbers[index], issue.field, issue.code, issue.reason, value)
                                    )
                                else:
                                    warnings[issue.reason] = warnings.get(issue.reason, 0) + 1
                        refused.sort(key=itemgetter(0))  # in row order; stable for two issues of one row
                        for entry in refused:
                            rejects.add(source, *entry)
                        kept = checked.kept
                        contacts, emails = checked.contacts, checked.emails
                        valid += len(kept)
                        rejected += len(rows) - len(kept)
                        row_numbers = list(numbers) if len(kept) == len(rows) else [numbers[i] for i in kept]
                        if consent is not None:
                            given = list(map(_CONSENTS.__getitem__, map(itemgetter(consent), rows)))
                            mask = [given[i] for i in kept]
                            if not all(mask):
                                excluded += mask.count(False)
                                contacts, emails, row_numbers = _select(mask, contacts, emails, row_numbers)
                        keys = email_keys(emails)
                        tags = list(map(table_no.__or__, row_numbers)) if table_no else row_numbers
                        firsts = list(map(seen.setdefault, keys, tags))
                        if firsts != tags:  # a key seen before: in an earlier row, or earlier in this batch
                            mask = list(map(eq, firsts, tags))
                            for index in compress(range(len(mask)), map(not_, mask)):
                                first = firsts[index]
                                dups.add(
                                    source,
                                    row_numbers[index],
                                    emails[index],
                                    sources[first >> 32],
                                    first & 0xFFFFFFFF,
                                )
                            duplicates += mask.count(False)
                            contacts, emails, row_numbers, keys = _select(
                                mask, contacts, emails, row_numbers, keys
                            )
                        joined, cores = serialise(contacts)
                        digests = list(map(fields_hash, cores))
                        if old_get is None:
                            creates += len(cores)
                            remember(keys, map(or_, map(and_, digests, repeat(CLEAR)), repeat(NEW)))
                            changes: list[str] | None = None
                        else:
                            changes = []
                            values: list[int] = []
                            for previous, digest in zip(map(old_get, keys), digests, strict=True):
                                if previous is None:
                                    changes.append("create")
                                    values.append(digest & CLEAR | NEW)
                                elif previous & CLEAR == digest & CLEAR:
                                    changes.append("")
                                    values.append(previous)
                                else:
                                    changes.append("update")
                                    values.append(digest & CLEAR | previous & OURS)
                            remember(keys, values)
                            same = changes.count("")
                            new = changes.count("create")
                            creates, updates = creates + new, updates + len(changes) - same - new
                            if same:  # only new and changed contacts are sent
                                unchanged += same
                                mask = list(map(bool, changes))
                                cores, emails, row_numbers, changes = _select(
                                    mask, cores, emails, row_numbers, changes
                                )
                                joined = join_cores(cores)
                        if len(sample) < SAMPLE_SIZE:
                            for index in range(min(len(cores), SAMPLE_SIZE - len(sample))):
                                change = "create" if changes is None else changes[index]
                                sample.append(
                                    {
                                        "change": change,
                                        "source": source,
                                        "row": row_numbers[index],
                                        "email": mask_email(emails[index]),
                                    }
                                )
                        for done in chunker.add_batch(joined, item_sizes(cores), emails, source, row_numbers):
                            self._spool(done, prepared)
                    reading = None
                    seg_report.received += received - table_start
        finally:  # a file that fails half-way still reports what was read
            if reading is not None:
                reading.received += received - table_start
            if gc_was_enabled:
                gc.enable()
            report.received, report.valid, report.rejected = received, valid, rejected
            report.duplicates = duplicates
        seen.clear()  # before the snapshot sort needs its memory
        report.sync.update(
            mode=request.mode,
            incremental=old is not None,
            creates=creates,
            updates=updates,
            unchanged=unchanged,
            consent_excluded=excluded,
            sample=sample,
        )
        last = chunker.finish()
        if last:
            self._spool(last, prepared)
        prepared.snapshot = snapshot = builder.build()
        self._plan_removals(request, report, old, snapshot, prepared)
        report.chunks = len(prepared.chunks)
        report.budget = _budget(request, len(prepared.chunks), old, len(prepared.leavers))
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
        rows_path = prepared.workdir / f"chunk-{chunk.index:05d}.rows.json"
        body_path.write_bytes(chunk.body)
        rows_path.write_bytes(chunk.row_map())
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

    # -- sync ----------------------------------------------------------------------------------

    def _load_snapshot(self, request: ExportRequest) -> Snapshot | None:
        raw = self.state.get_bytes(request.snapshot_path)
        if raw is None:
            return None
        try:
            return Snapshot.from_bytes(raw)
        except ValueError:
            log.warning("snapshot of %s unreadable; sending everything", request.snapshot_path)
            return None

    @staticmethod
    def _plan_removals(
        request: ExportRequest, report: RunReport, old: Snapshot | None, new: Snapshot, prepared: Prepared
    ) -> None:
        """Who left the segment since the last run, and whether mirror mode may remove them now."""
        sync = report.sync
        if old is None:
            sync.update(leavers=0, removals_planned=0)
            return
        leavers = array("Q")
        left = 0
        for key, value in old.items():
            if key not in new:
                left += 1
                if value & OURS:
                    leavers.append(key)
        sync["leavers"] = left
        if request.mode != "mirror":
            if left:
                sync["leavers_kept"] = left
                sync["note"] = f"{left:,} leaver(s) kept on the list (add-only mode)"
            sync["removals_planned"] = 0
            return
        shrink = (len(old) - len(new)) / len(old) if len(old) else 0.0
        untrusted = report.untrusted_rows  # leavers may be inside rows that could not be read
        if (
            leavers
            and not request.allow_shrink
            and (len(new) == 0 or shrink > request.shrink_guard or untrusted)
        ):
            if len(new) == 0:
                why = "the segment is empty"
            elif untrusted:
                why = f"{untrusted:,} row(s) could not be read safely, and leavers may be inside them"
            else:
                why = f"the segment shrank by {shrink:.0%} since the last run (guard: {request.shrink_guard:.0%})"
            sync["removals_skipped"] = (
                f"no one removed: {why}; run with allow_shrink to remove {len(leavers):,}"
            )
            sync["removals_planned"] = 0
            # keep them in the snapshot, so a later run (or one with allow_shrink) can still remove them
            kept = set(leavers)
            prepared.snapshot = new.with_entries((k, v) for k, v in old.items() if k in kept)
            return
        sync["removals_planned"] = len(leavers)
        prepared.leavers = leavers
        if left > len(leavers):
            others = left - len(leavers)
            sync["leavers_not_ours"] = others
            sync["note"] = (
                f"{others:,} leaver(s) kept: this export cannot tell that it put them on the list (they "
                "were already there, or were first sent in add-only mode, when the list is not read)"
            )

    @staticmethod
    def _removals_due(report: RunReport) -> bool:
        return bool(report.sync.get("removals_planned"))

    def _promote_snapshot(
        self,
        request: ExportRequest,
        snapshot: Snapshot,
        *,
        refused: Sequence[int],
        members: array[int] | None = None,
    ) -> None:
        """After a completed run: what was delivered becomes the base of the next incremental run.
        Contacts Constant Contact refused are left out, so the next run sends them again."""
        drop = set(refused)
        keys, values = array("Q"), array("Q")
        for key, value in snapshot.items():
            if key in drop:
                continue
            if value & NEW:
                ours = OURS if members is not None and not _sorted_contains(members, key) else 0
                value = (value & ~FLAGS) | ours
            keys.append(key)
            values.append(value)
        self.state.put_bytes(request.snapshot_path, Snapshot(keys, values).to_bytes())

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
        request = checkpoint.request
        if client is None:
            raise ConfigError("no Constant Contact client configured")
        activities = {a.chunk: a for a in report.activities}
        chunks = {int(c["index"]): c for c in checkpoint.chunks}
        if all(a.activity_id is None for a in report.activities) and not checkpoint.removals.get("resolved"):
            self._check_target(client, request)
        if request.mode == "mirror" and not checkpoint.removals.get("resolved"):
            self._resolve_members(client, checkpoint)
        resubmits = self.settings.activity_resubmits
        while True:
            pollers = self._submit(client, checkpoint, activities, chunks)
            by_poller = {id(p): i for i, p in pollers.items()}
            timeout = self.settings.api.activity_timeout_seconds
            for poller in wait_all(list(pollers.values()), timeout=timeout):
                index = by_poller[id(poller)]
                self._fold(checkpoint, activities[index], poller.status(), chunks[index])
                self.save_checkpoint(checkpoint)
                self._progress(f"import {index} {activities[index].state}")
            for index, poller in pollers.items():
                if not poller.done():
                    activities[index].state = str(poller.status().get("state", "processing"))
            retry = [a for a in report.activities if a.state in RETRYABLE_STATES and a.attempts <= resubmits]
            if not retry:
                break
            for activity in retry:  # failed, cancelled or timed out: nothing was applied, send it again
                self._progress(f"import {activity.chunk} {activity.state}; resubmitting")
                activity.previous_activity_ids.append(str(activity.activity_id))
                activity.activity_id, activity.state, activity.status, activity.errors = (
                    None,
                    "not_submitted",
                    {},
                    [],
                )
            self.save_checkpoint(checkpoint)
        self._settle(report)
        if report.status == "completed" and self._removals_due(report):
            self._remove_leavers(client, checkpoint)

    def _submit(
        self,
        client: ConstantContactClient,
        checkpoint: Checkpoint,
        activities: dict[int, ActivityReport],
        chunks: dict[int, dict[str, Any]],
    ) -> dict[int, ActivityPoller]:
        """Submit every chunk without an activity (checkpoint after each); poll the rest."""
        report = checkpoint.report
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
            if activity.attempts == 0:
                report.submitted += activity.contacts
            activity.attempts += 1
            self.save_checkpoint(checkpoint)  # after every submitted chunk: never submitted twice
            self._progress(f"submitted import {index}/{len(chunks)} ({activity.contacts:,} contacts)")
        return pollers

    def _resolve_members(self, client: ConstantContactClient, checkpoint: Checkpoint) -> None:
        """Mirror mode, before any import: who is on the list already (so that people someone else put
        there are never counted as ours), and the contact ids of the leavers to remove."""
        folder = run_folder(checkpoint.report)
        leavers = array("Q")
        if checkpoint.removals.get("leavers"):
            leavers.frombytes(self.state.get_bytes(str(checkpoint.removals["leavers"])) or b"")
        wanted = set(leavers)
        members = array("Q")
        contact_ids = []
        for contact_id, email in client.iter_list_members(checkpoint.request.list_id):
            key = email_key(email)
            members.append(key)
            if key in wanted:
                contact_ids.append(contact_id)
        members = array("Q", sorted(members))
        self.state.put_bytes(f"{folder}/members.bin", members.tobytes())
        checkpoint.removals.update(
            resolved=True,
            members=f"{folder}/members.bin",
            contact_ids=contact_ids,
            activity_ids=[],
            removed=0,
        )
        self.save_checkpoint(checkpoint)

    def _remove_leavers(self, client: ConstantContactClient, checkpoint: Checkpoint) -> None:
        """Take the leavers off this list only (remove_list_memberships, 500 a request)."""
        removals = checkpoint.removals
        report = checkpoint.report
        ids: list[str] = list(removals.get("contact_ids") or [])
        done_batches = len(removals.get("activity_ids") or [])
        batches = [ids[i : i + REMOVE_BATCH] for i in range(0, len(ids), REMOVE_BATCH)]
        pollers = [ActivityPoller.resume(client, a) for a in removals.get("activity_ids") or []]
        for batch in batches[done_batches:]:
            poller = client.begin_remove_list_memberships(batch, checkpoint.request.list_id)
            removals.setdefault("activity_ids", []).append(poller.activity_id)
            self.save_checkpoint(checkpoint)
            pollers.append(poller)
        states = [p.result()["state"] for p in pollers]
        if any(state != "completed" for state in states):
            report.status = "pending" if any(s not in TERMINAL_STATES for s in states) else "failed"
            report.error = {
                "type": "RemovalFailed",
                "message": f"membership removals ended {sorted(set(states))}",
            }
            return
        removals["done"] = True
        report.sync["removed"] = len(ids)
        self._progress(f"removed {len(ids):,} leaver(s) from the list")

    def _check_target(self, client: ConstantContactClient, request: ExportRequest) -> None:
        """Fail fast, before any import, on a list or custom field that does not exist."""
        try:
            client.get_list(request.list_id)
        except ApiError as exc:
            if exc.status == 404:
                raise ConfigError(
                    f"Constant Contact list {request.list_id} does not exist in this account; "
                    "check the list ID (the export's list_id, or --list-id); Constant Contact's "
                    "GET /v3/contact_lists gives the IDs of the account's lists"
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
        self, checkpoint: Checkpoint, activity: ActivityReport, status: dict[str, Any], chunk: dict[str, Any]
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
            self._reject_refused(checkpoint, raw_errors, chunk)

    def _reject_refused(self, checkpoint: Checkpoint, errors: list[str], chunk: dict[str, Any]) -> None:
        """Map Constant Contact's error strings back to input rows, through the chunk's row sidecar."""
        by_email: dict[str, str] = {}
        for text in errors:
            for email in find_emails(text):
                by_email.setdefault(email, text)
        lines = []
        for email, source, row in read_row_map(self.state.get_bytes(str(chunk["rows"])) or b""):
            if email in by_email:
                reason = (
                    f"Constant Contact refused it: {mask_text(by_email[email])}"  # the address is in value
                )
                lines.append([source, str(row), "email", "refused_by_constant_contact", reason, email])
        if lines:
            checkpoint.refused_keys.extend(email_key(line[-1]) for line in lines)
            self._append_rejects(checkpoint.report, lines)

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
        """A run that ended: final report, the snapshot promoted when it completed, and the prepared
        bodies removed (the checkpoint stays)."""
        folder = run_folder(checkpoint.report)
        if checkpoint.report.status == "completed":
            raw = self.state.get_bytes(f"{folder}/snapshot.next.bin")
            if raw is not None:
                members = None
                if checkpoint.removals.get("members"):
                    members = array("Q")
                    members.frombytes(self.state.get_bytes(str(checkpoint.removals["members"])) or b"")
                self._promote_snapshot(
                    checkpoint.request,
                    Snapshot.from_bytes(raw),
                    refused=checkpoint.refused_keys,
                    members=members,
                )
        self.save_checkpoint(checkpoint)
        self._write_report(checkpoint.report)
        for chunk in checkpoint.chunks:
            self.state.delete(str(chunk["body"]))
            self.state.delete(str(chunk["rows"]))
        for name in ("snapshot.next.bin", "leavers.bin", "members.bin"):
            self.state.delete(f"{folder}/{name}")

    def _write_report(self, report: RunReport) -> None:
        if report.status in ("completed", "failed"):
            report.finished_at = utc_now()
        path = f"{run_folder(report)}/report.json"
        report.report_file = self.results.location(path)
        self.results.put_bytes(path, report.to_json(), content_type="application/json")


def read_checkpoint(store: ResultStore, folder: str) -> Checkpoint | None:
    """The checkpoint of the run in ``folder`` (``<folder>/state.json``), or None."""
    raw = store.get_bytes(f"{folder}/state.json")
    return Checkpoint.from_json(raw) if raw else None


def _observe(report: RunReport) -> None:
    """Metrics and the closing log line, once per run: when it ends (a paused run is not counted)."""
    if report.status in ("completed", "failed"):
        record_run_metrics(report)


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


SAMPLE_SIZE = 20
REMOVE_BATCH = 500  # contact ids per remove_list_memberships request
RETRYABLE_STATES = frozenset({"failed", "cancelled", "timed_out"})
_YES = frozenset({"yes", "y", "true", "1", "opted in", "opt-in", "optin", "subscribed", "consent"})


class _ConsentValues(dict[str, bool]):
    """Consent cell -> :func:`_consents`, computed once per distinct text (a column holds a handful)."""

    def __missing__(self, value: str) -> bool:
        given = _consents(value)
        if len(self) < 10_000:
            self[value] = given
        return given


_CONSENTS = _ConsentValues()


def _consent_column(request: ExportRequest, columns: Sequence[str], source: str) -> int | None:
    if not request.consent_field:
        return None
    index = find_column(columns, request.consent_field)
    if index is None:
        raise SegmentError(f"{source}: consent column {request.consent_field!r} not found")
    return index


def _select(mask: Sequence[object], *columns: Sequence[Any]) -> tuple[list[Any], ...]:
    """Keep the entries of every column where ``mask`` is true."""
    return tuple(list(compress(column, mask)) for column in columns)


_MERGED_ROWS = (
    "a quoted value runs over lines that look like rows (an address in the email column): a "
    'quote (") is probably not closed where it should be, so the rows after it are inside this one'
)


def _split_untrusted_rows(
    numbers: Sequence[int], rows: list[list[str]], width: int, merged: Sequence[int]
) -> tuple[list[int], list[list[str]], list[tuple[int, str, str, str, str]]]:
    """Take out, as rejects, the rows that cannot be trusted: more non-empty cells than the header (a
    comma inside an unquoted value shifts every later column; empty extra cells, a trailing comma, are
    harmless), and rows whose quoted value seems to hold other rows (the reader's ``merged``): the
    rejects file then keeps the whole record, the rows inside it included."""
    kept_numbers: list[int] = []
    kept_rows: list[list[str]] = []
    refused: list[tuple[int, str, str, str, str]] = []
    suspect = set(merged)
    for number, values in zip(numbers, rows, strict=True):
        if number in suspect:
            refused.append((number, "row", "merged_rows", _MERGED_ROWS, ",".join(values)))
            continue
        if len(values) > width and any(v.strip() for v in values[width:]):
            reason = f"the row has {len(values)} cells, the header {width}"
            refused.append((number, "row", "extra_cells", reason, ",".join(values)))
            continue
        kept_numbers.append(number)
        kept_rows.append(values)
    return kept_numbers, kept_rows, refused


def _consents(value: str) -> bool:
    """Only an explicit yes exports a profile: a blank or unknown value is not consent."""
    return value.strip().lower() in _YES


def _sorted_contains(keys: array[int], key: int) -> bool:
    i = bisect_left(keys, key)
    return i < len(keys) and keys[i] == key


def _budget(request: ExportRequest, chunks: int, old: Snapshot | None, leavers: int) -> dict[str, int]:
    """Requests this run will need against the daily quota (10,000 a day per application key)."""
    polls = 3 * chunks  # a few status polls per import
    member_pages = -(-len(old) // 500) if (old is not None and request.mode == "mirror" and leavers) else 0
    removals = 4 * -(-leavers // 500)
    return {"estimated_requests": 3 + chunks + polls + member_pages + removals, "daily_quota": 10_000}
