"""Data matching: which segment column feeds which Constant Contact contact field.

The email field is required; first and last name are optional; any other column may go to one of the
import fields Constant Contact documents (``createImportJSONActivity_request_import_data_inner`` in the
official OpenAPI spec) or to a custom field written ``cf:<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError, SegmentError
from .privacy import shorten
from .readers import find_column

# Import fields and their maxLength, from the official spec. "birthday" is ours: one date column
# that becomes birthday_month + birthday_day (Customer Insights exports a single DateOfBirth).
TEXT_FIELDS: dict[str, int] = {
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
    "phone": 50,
    "home_phone": 50,
    "work_phone": 50,
    "mobile_phone": 50,
    "other_phone": 50,
    "street": 255,
    "street2": 255,
    "city": 50,
    "state": 50,
    "zip": 50,
    "country": 50,
    "home_street": 255,
    "home_street2": 255,
    "home_city": 50,
    "home_state": 50,
    "home_zip": 50,
    "home_country": 50,
    "work_street": 255,
    "work_street2": 255,
    "work_city": 50,
    "work_state": 50,
    "work_zip": 50,
    "work_country": 50,
    "other_street": 255,
    "other_street2": 255,
    "other_city": 50,
    "other_state": 50,
    "other_zip": 50,
    "other_country": 50,
}
DATE_FIELDS = frozenset({"birthday", "anniversary"})
CUSTOM_FIELD_MAX_LENGTH = 255
MAX_CUSTOM_FIELDS = 25  # per contact, per the spec
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_]{1,50}")


@dataclass(frozen=True, kw_only=True)
class DataMapping:
    """What the user chose: CC field -> column name (as written in the segment, matched loosely)."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.email or not self.email.strip():
            raise ConfigError(
                "the email field is required: name the segment column that holds email addresses"
            )
        seen: set[str] = set()
        customs = 0
        for target, column in self.targets():
            if target in seen:
                raise ConfigError(f"Constant Contact field {target!r} is mapped twice")
            seen.add(target)
            if not column.strip():
                raise ConfigError(f"no column given for Constant Contact field {target!r}")
            if target.startswith("cf:"):
                customs += 1
                if not _CUSTOM_NAME.fullmatch(target[3:]):
                    raise ConfigError(
                        f"custom field {target!r}: use cf:<name>, where name is the custom field's name in "
                        "Constant Contact (letters, digits and underscores, at most 50)"
                    )
            elif target not in TEXT_FIELDS and target not in DATE_FIELDS and target != "email":
                known = ", ".join(sorted([*TEXT_FIELDS, *DATE_FIELDS]))
                raise ConfigError(
                    f"unknown Constant Contact field {target!r}; known fields: {known}, or cf:<name>"
                )
        if customs > MAX_CUSTOM_FIELDS:
            raise ConfigError(f"at most {MAX_CUSTOM_FIELDS} custom fields per contact, got {customs}")

    @classmethod
    def from_args(
        cls,
        *,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        fields: Iterable[str] = (),
    ) -> DataMapping:
        """Build from CLI-style ``CC_FIELD=COLUMN`` strings."""
        pairs: list[tuple[str, str]] = []
        for item in fields:
            target, sep, column = item.partition("=")
            if not sep:
                raise ConfigError(f"--field {item!r}: expected CC_FIELD=COLUMN, e.g. job_title=Occupation")
            target = target.strip()
            pairs.append((target if target.startswith("cf:") else target.lower(), column.strip()))
        return cls(email=email, first_name=first_name, last_name=last_name, fields=tuple(pairs))

    def targets(self) -> list[tuple[str, str]]:
        """Every (CC field, column) pair, email first."""
        out = [("email", self.email)]
        if self.first_name:
            out.append(("first_name", self.first_name))
        if self.last_name:
            out.append(("last_name", self.last_name))
        out.extend(self.fields)
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "fields": {t: c for t, c in self.fields},
        }


@dataclass(frozen=True)
class ColumnPlan:
    """A mapping resolved against one table's columns: positions, so the hot path indexes lists."""

    email_index: int
    # (CC field, column index, column name, max length or 0 for dates)
    fields: tuple[tuple[str, int, str, int], ...]
    email_column: str
    width: int = field(init=False)  # columns a row needs; computed once, read for every row
    texts: tuple[tuple[str, int, int], ...] = field(init=False)  # (CC field, index, max length)
    dates: tuple[tuple[str, int], ...] = field(init=False)  # (CC field, index)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", 1 + max([self.email_index, *(i for _, i, _, _ in self.fields)]))
        object.__setattr__(self, "texts", tuple((t, i, m) for t, i, _, m in self.fields if m))
        object.__setattr__(self, "dates", tuple((t, i) for t, i, _, m in self.fields if not m))


def resolve(mapping: DataMapping, columns: Sequence[str], *, source: str) -> ColumnPlan:
    """Find each mapped column in a table's header; a missing one fails the file before anything is sent."""
    positions: list[tuple[str, int, str]] = []
    missing: list[str] = []
    for target, column in mapping.targets():
        index = find_column(columns, column)
        if index is None:
            missing.append(f"{shorten(column)!r} (for {target})")
        else:
            positions.append((target, index, columns[index]))
    if missing:
        shown = ", ".join(repr(shorten(c.strip(), 60)) for c in columns[:40])
        if len(columns) > 40:
            shown += f" and {len(columns) - 40:,} more"
        raise SegmentError(
            f"{source}: column {' and '.join(missing)} not found. The file has these columns: {shown}. "
            "Fix the data matching (the export's mapping, or --email-field and the other --*-field "
            "options), or the file."
        )
    email_index = positions[0][1]
    fields = tuple(
        (
            target,
            index,
            name,
            0 if target in DATE_FIELDS else TEXT_FIELDS.get(target, CUSTOM_FIELD_MAX_LENGTH),
        )
        for target, index, name in positions[1:]
    )
    return ColumnPlan(email_index=email_index, fields=fields, email_column=positions[0][2])
