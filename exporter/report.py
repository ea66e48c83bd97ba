"""The run report: what a run received, sent, rejected and what Constant Contact made of it.

Written as JSON next to the rejects file and printed by the CLI with --json. Counts only, and masked
error texts: a report may end up in logs and alerts, so it carries no personal data.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

# The counts a person reads first (CLI demo, alerts): what came in, what was refused, what arrived.
HEADLINE_COUNTS = (
    "received",
    "rejected",
    "duplicates",
    "submitted",
    "refused_by_constant_contact",
    "not_added_unsubscribed",
    "delivered",
)

RunStatus = Literal["queued", "running", "completed", "pending", "failed"]


# new_run_id's form; ids made before milliseconds were added still name their runs
_RUN_ID = re.compile(r"\d{8}T\d{6}(?:\d{3})?Z-[0-9a-f]{6}")


def is_run_id(text: str) -> bool:
    """Whether ``text`` is a run id (and so safe as a folder name)."""
    return isinstance(text, str) and _RUN_ID.fullmatch(text) is not None


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time to the millisecond (runs of one export often start within a second), unique
    enough for parallel triggers: 20261203T160501042Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ActivityReport:
    """One contacts_json_import request and what became of it."""

    chunk: int
    contacts: int
    bytes: int
    activity_id: str | None = None
    state: str = "not_submitted"
    percent_done: int | None = None
    status: dict[str, int] = field(default_factory=dict)  # Constant Contact's counts, as returned
    errors: list[str] = field(default_factory=list)  # activity_errors, emails masked
    refused: int = 0  # contacts Constant Contact did not put on the list
    delivered: int | None = None  # known once the activity completed
    attempts: int = 0  # submissions of this chunk (a failed, cancelled or timed-out import is resubmitted)
    previous_activity_ids: list[str] = field(default_factory=list)


@dataclass
class SegmentReport:
    name: str
    path: str
    tables: int = 0
    received: int = 0


@dataclass
class RunReport:
    run_id: str
    list_id: str
    export: str | None = None
    trigger: str | None = None  # cli, http, timer or blob
    status: RunStatus = "running"
    dry_run: bool = False
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    segments: list[SegmentReport] = field(default_factory=list)
    received: int = 0  # data rows read from the segments
    valid: int = 0  # rows that passed validation (before de-duplication)
    duplicates: int = 0  # valid rows whose email appeared earlier in the export
    rejected: int = 0  # rows not exported because of a validation rule (see rejects file)
    # of those, rows that could not be read safely (extra_cells, merged_rows): other profiles may hide in them
    untrusted_rows: int = 0
    submitted: int = 0  # contacts sent to Constant Contact in import requests
    refused_by_constant_contact: int = 0  # sent, but Constant Contact reported them as errors
    not_added_unsubscribed: int = 0  # sent, but unsubscribed: Constant Contact does not re-add them
    delivered: int | None = None  # on the list, as far as Constant Contact's counts say
    field_warnings: dict[str, int] = field(default_factory=dict)  # e.g. "first_name truncated to 50 ..."
    sync: dict[str, Any] = field(
        default_factory=dict
    )  # mode, creates, updates, unchanged, leavers, removed...
    budget: dict[str, int] = field(default_factory=dict)  # API requests this run needs, and the daily quota
    chunks: int = 0
    activities: list[ActivityReport] = field(default_factory=list)
    rejects_file: str | None = None
    duplicates_file: str | None = None
    report_file: str | None = None
    api_calls: int = 0
    retries: int = 0
    token_refreshes: int = 0
    limits: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None  # {"type", "message"} when the run failed

    def fail(self, kind: str, message: str) -> None:
        self.status = "failed"
        self.error = {"type": kind, "message": message}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """The inverse of to_dict (a checkpoint carries the report of a run in progress)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["segments"] = [SegmentReport(**s) for s in data.get("segments") or []]
        values["activities"] = [ActivityReport(**a) for a in data.get("activities") or []]
        return cls(**values)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def summary_lines(self) -> list[str]:
        """What a person reads at the end of a run."""
        lines = [
            f"run {self.run_id}: {self.status}" + (" (dry run: nothing sent)" if self.dry_run else ""),
            f"  received   {self.received:>9,}  rows from {len(self.segments)} segment(s)",
            f"  rejected   {self.rejected:>9,}  (see rejects file)",
            f"  duplicates {self.duplicates:>9,}  (same email earlier in the export; first one kept)",
        ]
        if self.dry_run:
            would_send = sum(a.contacts for a in self.activities)
            lines.append(f"  would send {would_send:>9,}  contacts in {self.chunks} import request(s)")
        else:
            sent = sum(1 for a in self.activities if a.activity_id)
            prepared = f" ({self.chunks} prepared)" if sent < self.chunks else ""
            lines.append(f"  submitted  {self.submitted:>9,}  contacts in {sent} import request(s){prepared}")
            lines.append(f"  refused    {self.refused_by_constant_contact:>9,}  by Constant Contact")
            lines.append(
                f"  not added  {self.not_added_unsubscribed:>9,}  unsubscribed (never re-subscribed)"
            )
            lines.append(f"  delivered  {self._delivered_text():>9}  to list {self.list_id}")
        if self.sync:
            sync = self.sync
            removals = sync.get("removed", sync.get("removals_planned", 0))
            lines.append(
                f"  sync ({sync.get('mode')}): {sync.get('creates', 0):,} new, {sync.get('updates', 0):,} changed, "
                f"{sync.get('unchanged', 0):,} unchanged, {sync.get('leavers', 0):,} left the segment, "
                f"{removals:,} removal(s)"
            )
            for key in ("note", "removals_skipped"):
                if sync.get(key):
                    lines.append(f"  {sync[key]}")
        for warning, count in sorted(self.field_warnings.items()):
            lines.append(f"  note: {count:,} x {warning}")
        if self.warning:
            lines.append(f"  {self.warning}")
        for act in [] if self.dry_run else self.activities:
            lines.append(
                f"  activity {act.chunk}: {act.state} ({act.contacts:,} contacts, {act.bytes:,} bytes)"
                + (f" id {act.activity_id}" if act.activity_id else "")
            )
        if self.error:
            lines.append(f"  error: {self.error['message']}")
        lines.append(f"  report:     {self.report_file}")
        lines.append(f"  rejects:    {self.rejects_file}")
        if self.duplicates_file:
            lines.append(f"  duplicates: {self.duplicates_file}")
        return lines

    @property
    def warning(self) -> str | None:
        """What a person should check in the files before trusting the run, or None."""
        if self.every_row_rejected:
            return "warning: every row was rejected: does the data matching name the email column?"
        if self.untrusted_rows:
            return (
                f"warning: {self.untrusted_rows:,} row(s) could not be read safely (extra_cells, merged_rows in "
                "the rejects file): check the quotes and delimiters there; other profiles may be inside them"
            )
        return None

    @property
    def every_row_rejected(self) -> bool:
        """Rows were read and none was valid: most often the email column of the mapping is wrong."""
        return self.received > 0 and self.valid == 0 and self.rejected == self.received

    def _delivered_text(self) -> str:
        if self.delivered is not None:
            return f"{self.delivered:,}"
        if self.status == "failed":
            return "unknown" if self.submitted else "none"
        return "unknown yet"  # pending: the activities are still running
