"""Configured exports: which segments go to which Constant Contact list, how columns map, and when.

Stored as JSON in the state container (``config/exports/<name>.json``) so every trigger and every
instance sees the same configuration. Validation errors name the field, so an API can return them as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from croniter import croniter

from .errors import ConfigError
from .mapping import DataMapping
from .pipeline import ExportRequest, SyncMode
from .readers import check_delimiter, check_encoding
from .storage import ResultStore

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
CONFIG_PREFIX = "config/exports/"
EXPORT_FIELDS = frozenset(
    {
        "name",
        "list_id",
        "mapping",
        "segments",
        "schedule",
        "enabled",
        "connection",
        "sync",
        "encoding",
        "delimiter",
        "day_first",
    }
)
MAX_SEGMENTS = 100
MAX_TEXT = 1024
_SAFE_PATH = re.compile(r"[^\\\x00-\x1f]+")  # no backslashes or control characters


def _parse_mapping(data: Any) -> DataMapping:
    """{email, first_name?, last_name?, fields?: {cc_field: column}} with string values only."""
    if not isinstance(data, dict):
        raise ConfigError("required: {email, first_name?, last_name?, fields?: {cc_field: column}}")
    unknown = set(data) - {"email", "first_name", "last_name", "fields"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; use fields for other columns")
    for key in ("email", "first_name", "last_name"):
        value = data.get(key)
        if not (value is None or (isinstance(value, str) and len(value) <= MAX_TEXT)) or (
            key == "email" and not value
        ):
            raise ConfigError(
                f"{key} must be a column name (text){'' if key != 'email' else ', and is required'}"
            )
    fields = data.get("fields") or {}
    if not isinstance(fields, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(v) <= MAX_TEXT and "=" not in k
        for k, v in fields.items()
    ):
        raise ConfigError(
            'fields must map Constant Contact fields to column names, e.g. {"job_title": "Occupation"}'
        )
    pairs = tuple((k if k.startswith("cf:") else k.lower(), v) for k, v in fields.items())
    return DataMapping(
        email=data["email"], first_name=data.get("first_name"), last_name=data.get("last_name"), fields=pairs
    )


class FieldErrors(ConfigError):
    """Configuration rejected; ``errors`` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def check_schedule(schedule: str) -> str:
    """An NCRONTAB expression as Azure Functions writes it: six fields, seconds first, UTC."""
    fields = schedule.split()
    if len(fields) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
        raise ConfigError(
            f"schedule {schedule!r} is not a 6-field NCRONTAB expression "
            "({second} {minute} {hour} {day} {month} {day-of-week}, UTC), e.g. '0 0 6 * * *'"
        )
    return schedule


def previous_fire(schedule: str, now: datetime) -> datetime:
    """The latest time at or before ``now`` at which ``schedule`` fires."""
    return croniter(schedule, now, second_at_beginning=True).get_prev(datetime)


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """How an export keeps its list in step (see README, "Sync modes")."""

    mode: SyncMode = "add_only"
    shrink_guard: float = 0.5
    consent_field: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("add_only", "mirror"):
            raise ConfigError("mode must be add_only or mirror")
        if not 0.0 <= self.shrink_guard <= 1.0:
            raise ConfigError("shrink_guard is a share between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "shrink_guard": self.shrink_guard, "consent_field": self.consent_field}

    @classmethod
    def from_dict(cls, data: Any) -> SyncOptions:
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"mode", "shrink_guard", "consent_field"}:
            raise ConfigError("an object with mode (add_only|mirror), shrink_guard (0..1), consent_field")
        guard = data.get("shrink_guard", 0.5)
        consent = data.get("consent_field")
        if isinstance(guard, bool) or not isinstance(guard, int | float):
            raise ConfigError("shrink_guard is a share between 0 and 1")
        if consent is not None and not isinstance(consent, str):
            raise ConfigError("consent_field is a column name")
        return cls(
            mode=data.get("mode", "add_only"), shrink_guard=float(guard), consent_field=consent or None
        )


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    name: str
    list_id: str
    mapping: DataMapping
    segments: tuple[str, ...]  # paths in the segments container: a CSV file, a CDM folder, or a folder/
    schedule: str | None = None
    enabled: bool = True
    connection: str = "default"
    sync: SyncOptions = field(default_factory=lambda: SyncOptions())
    # How to read the CSV files when they are not UTF-8 or comma-separated (a CDM folder says its own).
    encoding: str | None = None
    delimiter: str | None = None
    day_first: bool = False  # dates such as 01/02/1975 are day/month/year

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        if not _NAME.fullmatch(self.name or ""):
            errors["name"] = "use 1-63 lower-case letters, digits and dashes"
        if not self.segments or any(
            not s or s.startswith("/") or ".." in s.split("/") for s in self.segments
        ):
            errors["segments"] = "give one or more relative paths in the segments container"
        if self.schedule is not None:
            try:
                check_schedule(self.schedule)
            except ConfigError as exc:
                errors["schedule"] = str(exc)
        for key, check in (("encoding", check_encoding), ("delimiter", check_delimiter)):
            try:
                check(getattr(self, key))
            except ConfigError as exc:
                errors[key] = str(exc)
        try:
            if not {"encoding", "delimiter"} & errors.keys():  # else request() would fail on them again
                self.request()
        except ConfigError as exc:
            errors.setdefault("list_id", str(exc))
        if errors:
            raise FieldErrors(errors)

    def request(
        self,
        *,
        dry_run: bool = False,
        segments: tuple[str, ...] | None = None,
        full_sync: bool = False,
        allow_shrink: bool = False,
    ) -> ExportRequest:
        return ExportRequest(
            segments=segments or self.segments,
            list_id=self.list_id,
            mapping=self.mapping,
            dry_run=dry_run,
            export_name=self.name,
            mode=self.sync.mode,
            shrink_guard=self.sync.shrink_guard,
            consent_field=self.sync.consent_field,
            full_sync=full_sync,
            allow_shrink=allow_shrink,
            encoding=self.encoding,
            delimiter=self.delimiter,
            day_first=self.day_first,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "list_id": self.list_id,
            "mapping": self.mapping.to_dict(),
            "segments": list(self.segments),
            "schedule": self.schedule,
            "enabled": self.enabled,
            "connection": self.connection,
            "sync": self.sync.to_dict(),
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "day_first": self.day_first,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ExportConfig:
        """Parse and validate; every problem is reported against its field. Strict about types and
        unknown fields, so a typo ("schedul") is an error rather than a silently ignored setting."""
        if not isinstance(data, dict):
            raise FieldErrors({"body": "expected a JSON object"})
        errors: dict[str, str] = {}
        for key in data:
            if key not in EXPORT_FIELDS:
                errors[str(key)[:64]] = f"unknown field; known fields: {', '.join(sorted(EXPORT_FIELDS))}"
        mapping: DataMapping | None = None
        try:
            mapping = _parse_mapping(data.get("mapping"))
        except ConfigError as exc:
            errors["mapping"] = str(exc)
        segments = data.get("segments")
        if isinstance(segments, str):
            segments = [segments]
        if (
            not isinstance(segments, list)
            or not 1 <= len(segments) <= MAX_SEGMENTS
            or not all(
                isinstance(x, str) and 0 < len(x) <= MAX_TEXT and _SAFE_PATH.fullmatch(x) for x in segments
            )
        ):
            errors["segments"] = (
                f"1 to {MAX_SEGMENTS} paths in the segments container (relative, '/'-separated, "
                f"at most {MAX_TEXT} characters)"
            )
        for key, kinds in (
            ("list_id", (str,)),
            ("schedule", (str, type(None))),
            ("enabled", (bool,)),
            ("connection", (str,)),
            ("encoding", (str, type(None))),
            ("delimiter", (str, type(None))),
            ("day_first", (bool,)),
        ):
            if key in data and not isinstance(data[key], kinds):
                errors[key] = "must be " + " or ".join(
                    "null" if k is type(None) else k.__name__ for k in kinds
                )
        connection = data.get("connection") or "default"
        if isinstance(connection, str) and not _NAME.fullmatch(connection):
            errors["connection"] = "the name of a connection (lower-case letters, digits and dashes)"
        sync = SyncOptions()
        try:
            sync = SyncOptions.from_dict(data.get("sync"))
        except ConfigError as exc:
            errors["sync"] = str(exc)
        if errors or mapping is None:
            raise FieldErrors(errors)
        return cls(
            sync=sync,
            name=str(data.get("name") or ""),
            list_id=str(data.get("list_id") or ""),
            mapping=mapping,
            segments=tuple(segments or ()),
            schedule=data.get("schedule") or None,
            enabled=bool(data.get("enabled", True)),
            connection=str(connection),
            encoding=data.get("encoding") or None,
            delimiter=data.get("delimiter") or None,
            day_first=bool(data.get("day_first", False)),
        )

    def matches(self, blob: str, *, is_cdm_folder: Any) -> tuple[str, ...] | None:
        """The segments to export when ``blob`` lands, or None when this export does not watch it.

        An exact file path runs the export as configured, and so does model.json or a partition under a
        Customer Insights CDM folder (the caller then waits until the run is complete, whichever arrives
        last). Under a plain folder (a path ending in "/"), the new file itself is the segment.
        """
        for path in self.segments:
            folder = path.rstrip("/")
            if blob == path:
                return self.segments
            if not blob.startswith(folder + "/"):
                continue
            if is_cdm_folder(folder):
                return self.segments if blob.endswith(("/model.json", ".csv")) else None
            if path.endswith("/"):
                return (blob,)
        return None


class ExportStore:
    """Export configurations in the state store."""

    def __init__(self, store: ResultStore) -> None:
        self._store = store

    def get(self, name: str) -> ExportConfig | None:
        raw = self._store.get_bytes(f"{CONFIG_PREFIX}{name}.json") if _NAME.fullmatch(name) else None
        return ExportConfig.from_dict(orjson.loads(raw)) if raw else None

    def list(self) -> list[ExportConfig]:
        configs = []
        for path in self._store.list(CONFIG_PREFIX):
            raw = self._store.get_bytes(path)
            if raw:
                configs.append(ExportConfig.from_dict(orjson.loads(raw)))
        return configs

    def put(self, config: ExportConfig) -> None:
        self._store.put_bytes(
            f"{CONFIG_PREFIX}{config.name}.json",
            orjson.dumps(config.to_dict(), option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    def delete(self, name: str) -> None:
        self._store.delete(f"{CONFIG_PREFIX}{name}.json")
