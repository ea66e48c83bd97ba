"""Contact validation and normalisation: pure functions, no I/O.

A row either becomes a contact ready to import, or it is rejected with a reason that a person can act
on. Rules follow what Constant Contact documents (constant-contact-notes.md §2): one ``@``, no spaces,
commas or brackets, a full domain, limits from the import schema, and the product's 80-character email
limit (a setting, because the import schema says 50). Optional fields never cost a contact: a bad
birthday is dropped from that contact and counted, not rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import compress, repeat
from operator import is_, itemgetter, lt, not_
from typing import Any

from .config import ValidationRules
from .mapping import ColumnPlan

# Possessive quantifiers and a look-behind instead of backtracking: the same language as the plain
# pattern (no class below overlaps the character that ends its run), matched in 60% of the time.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = rf"{_ATEXT}++(?:\.{_ATEXT}++)*+"
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}+(?<!-)\."  # 1-63 letters, digits or hyphens, not first or last
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
EMAIL_RE = re.compile(rf"({_LOCAL})@((?:{_LABEL})++{_TLD})")
MAX_LOCAL_PART = 64
_SPACE = re.compile(r"\s")
_FORBIDDEN = re.compile(r'[,;<>()\[\]\\":]')
MAX_DOMAIN = 253

# A time after a slashed or dotted date, as Excel and Power BI write a date column: 2/1/1980 12:00:00 AM
_CLOCK = r"(?: \d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?: ?[AaPp][Mm])?)?"
_ISO_DATE = re.compile(
    r"(?P<y>\d{4})[/-](?P<m>\d{1,2})[/-](?P<d>\d{1,2})(?:[T ][0-9:.]+(?:Z|[+-]\d\d:?\d\d)?)?"
)
_DOTTED_DATE = re.compile(
    r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})" + _CLOCK
)  # 31.12.1980: always day first
_SLASHED = r"(?P<{}>\d{{1,2}})[/-](?P<{}>\d{{1,2}})[/-](?P<y>\d{{4}})"  # M/D/YYYY or D/M/YYYY
_DATE_FORMATS = {
    day_first: (re.compile(_SLASHED.format(*order) + _CLOCK), _ISO_DATE, _DOTTED_DATE)
    for day_first, order in ((False, "md"), (True, "dm"))
}
_DATE_HELP = {
    False: "month/day/year, year-month-day or day.month.year",
    True: "day/month/year (day_first), year-month-day or day.month.year",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """Something wrong with one field of one row. ``rejects_row`` says whether the row is lost."""

    field: str
    code: str
    reason: str
    rejects_row: bool


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome for one row: a contact (and its matching key), or the reasons it was rejected."""

    contact: dict[str, object] | None
    key: str | None
    issues: tuple[Issue, ...]


def check_email(raw: str, *, max_length: int) -> tuple[str | None, Issue | None]:
    """Normalise an email address (trim, lower-case, IDNA domain) or say why it cannot be imported."""
    email = raw.strip().lower()
    if not email:
        return None, Issue("email", "email_missing", "email is empty", True)
    if not email.isascii():
        # Its ASCII form is no shorter (bar characters IDNA drops, such as soft hyphens), and IDNA takes
        # seconds on a very long one.
        if len(email) > max_length:
            return None, _too_long(email, max_length)
        email = _idna(email)
    match = EMAIL_RE.fullmatch(email)
    if match is None or match.end(1) > MAX_LOCAL_PART or len(email) - match.end(1) - 1 > MAX_DOMAIN:
        return None, Issue(
            "email", "email_invalid", f"email is not a valid address: {_why_invalid(email)}", True
        )
    if len(email) > max_length:
        return None, _too_long(email, max_length)
    return email, None


def _too_long(email: str, max_length: int) -> Issue:
    return Issue(
        "email",
        "email_too_long",
        f"email has {len(email)} characters; Constant Contact accepts at most {max_length}",
        True,
    )


def _idna(email: str) -> str:
    """Internationalised domains are sent in their ASCII (punycode) form; a non-ASCII local part is kept
    as is so that the validity check rejects it with a reason."""
    local, sep, domain = email.rpartition("@")
    if not sep:
        return email
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return email


def _why_invalid(email: str) -> str:
    """The first rule an invalid address breaks, in words (only called for rejected rows)."""
    ats = email.count("@")
    local, _, domain = email.rpartition("@")
    if ats == 0:
        return "no '@'"
    if ats > 1:
        return "more than one '@'"
    if _SPACE.search(email):
        return "contains a space"
    if _FORBIDDEN.search(email):
        return 'contains a character that is not allowed (, ; < > ( ) [ ] \\ " :)'
    if not email.isascii():
        return "contains non-ASCII characters in the part before '@'"
    if not local:
        return "nothing before '@'"
    if len(local) > MAX_LOCAL_PART:
        return f"the part before '@' is longer than {MAX_LOCAL_PART} characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "misplaced dot before '@'"
    if "." not in domain:
        return "the domain has no dot (a full domain such as example.com is needed)"
    return "the domain is not valid"


def parse_date(raw: str, *, day_first: bool = False) -> date | None:
    """Dates as Customer Insights and spreadsheets write them: M/D/YYYY (D/M/YYYY when ``day_first``),
    YYYY-MM-DD, ISO timestamps, and D.M.YYYY (a dotted date is day first wherever it is written)."""
    value = raw.strip()
    for pattern in _DATE_FORMATS[day_first]:
        match = pattern.fullmatch(value)
        if match:
            try:
                return date(int(match["y"]), int(match["m"]), int(match["d"]))
            except ValueError:
                return None
    return None


def check_row(values: list[str], plan: ColumnPlan, rules: ValidationRules) -> Checked:
    """Turn one row into an import_data item, or reject it. Pure. The rules in their plainest form:
    exports run :func:`check_batch`, which must give the same results (tests compare the two)."""
    if len(values) < plan.width:
        values = values + [""] * (plan.width - len(values))
    raw_email = values[plan.email_index]
    email = raw_email.strip().lower()
    # Fast path: the pattern only matches ASCII, and at 64 characters or less no part can be too long.
    if not (len(email) <= 64 and len(email) <= rules.email_max_length and EMAIL_RE.fullmatch(email)):
        checked_email, problem = check_email(raw_email, max_length=rules.email_max_length)
        if problem is not None or checked_email is None:
            return Checked(None, None, (problem,) if problem else ())
        email = checked_email
    contact: dict[str, object] = {"email": email}
    issues: list[Issue] = []
    rejected = False
    for target, index, max_length in plan.texts:
        raw = values[index]
        if not raw:
            continue
        value, issue = fit_text(raw, target, max_length, rules)
        if issue is not None:
            issues.append(issue)
            if issue.rejects_row:
                rejected = True
                continue
        if value:
            contact[target] = value
    for target, index in plan.dates:
        raw = values[index]
        if raw:
            _put_date(contact, target, raw, issues, rules.day_first)
    if not issues:
        return Checked(contact, email, ())
    if rejected:
        return Checked(None, None, tuple(issues))
    return Checked(contact, email, tuple(issues))


def fit_text(raw: str, target: str, max_length: int, rules: ValidationRules) -> tuple[str, Issue | None]:
    """A text value trimmed, with embedded newlines and tabs folded into single spaces, and fitted to
    ``max_length``: truncated (and said so) or refused, as the rules say. ``""`` means left out."""
    value = " ".join(raw.split())
    if len(value) <= max_length:
        return value, None
    if rules.too_long == "truncate":
        return value[:max_length].rstrip(), Issue(
            target, "truncated", f"{target} truncated to {max_length} characters", False
        )
    return value, Issue(
        target,
        "too_long",
        f"{target} has {len(value)} characters; Constant Contact stores at most {max_length}",
        True,
    )


def _put_date(
    contact: dict[str, object], target: str, raw: str, issues: list[Issue], day_first: bool
) -> None:
    """birthday -> birthday_month + birthday_day; anniversary -> YYYY-MM-DD. A bad date drops the field."""
    values = _DATE_VALUES[target, day_first][raw]
    if values is None:
        issues.append(_bad_date_issue(target, day_first))
    else:
        contact.update(zip(_DATE_KEYS[target], values, strict=True))


# ------------------------------------------------------------------------------------- batches of rows


@dataclass(slots=True)
class CheckedBatch:
    """The outcome for a batch of rows, as :func:`check_row` gives it row by row.

    ``contacts[i]`` (with matching key ``emails[i]``) came from row ``kept[i]`` of the batch; ``issues``
    lists, in row order, every row with something to report, rejected or not.
    """

    contacts: list[dict[str, object]]
    emails: list[str]
    kept: Sequence[int]
    issues: list[tuple[int, tuple[Issue, ...]]]


def check_batch(rows: Sequence[list[str]], plan: ColumnPlan, rules: ValidationRules) -> CheckedBatch:
    """:func:`check_row` for many rows at once, with the same results, several times faster.

    Work is done a column at a time inside C functions (``map``, ``str.join``, ``str.isprintable``):
    a column whose values all pass the quick tests is used as it is, and only the values that fail them
    go through the row-by-row rules. The equivalence is tested on generated input, not assumed.
    """
    count = len(rows)
    if count and min(map(len, rows)) < plan.width:
        rows = [r if len(r) >= plan.width else r + [""] * (plan.width - len(r)) for r in rows]
    found: dict[int, list[Issue]] = {}
    rejected: set[int] = set()
    emails = _batch_emails(rows, plan.email_index, rules, found, rejected)
    bad_email = set(rejected)  # check_row stops at a bad email: no other issue is reported for the row
    keys: list[str] = ["email"]
    columns: list[list[Any]] = [emails]
    for target, index, max_length in plan.texts:
        column = list(map(itemgetter(index), rows))
        if not _all_tidy(column, max_length):
            _tidy_texts(column, target, max_length, rules, found, rejected, bad_email)
        keys.append(target)
        columns.append(column)
    for target, index in plan.dates:
        raw = list(map(itemgetter(index), rows))
        values = list(map(_DATE_VALUES[target, rules.day_first].__getitem__, raw))
        if None in values:
            for row in compress(range(count), map(is_, values, repeat(None))):
                values[row] = _NO_DATE[target]
                if row not in bad_email:
                    found.setdefault(row, []).append(_bad_date_issue(target, rules.day_first))
        for key, column in zip(_DATE_KEYS[target], zip(*values, strict=True) if values else (), strict=False):
            keys.append(key)
            columns.append(list(column))
    kept: Sequence[int] = range(count)
    if rejected:
        mask = [True] * count
        for row in rejected:
            mask[row] = False
        kept = list(compress(range(count), mask))
        columns = [list(compress(column, mask)) for column in columns]
        emails = columns[0]
    # every tuple from zip(*columns) has one value per key: map(dict, map(zip, ...)) runs in C (-28%)
    contacts = list(map(dict, map(zip, repeat(keys), zip(*columns, strict=True))))
    for key, column in zip(keys, columns, strict=True):
        if "" in column:  # empty values are left out of the contact, not sent as ""
            for contact in compress(contacts, map(not_, column)):
                del contact[key]
    issues = [(row, tuple(found[row])) for row in sorted(found)]
    return CheckedBatch(contacts, emails, kept, issues)


def _batch_emails(
    rows: Sequence[list[str]],
    index: int,
    rules: ValidationRules,
    found: dict[int, list[Issue]],
    rejected: set[int],
) -> list[str]:
    """Trimmed, lower-cased addresses; those the quick tests do not pass go through check_email."""
    raw = list(map(itemgetter(index), rows))
    emails = list(map(str.lower, map(str.strip, raw)))
    quick_limit = min(MAX_LOCAL_PART, rules.email_max_length)  # at or below it, no part can be too long
    slow = set(compress(range(len(raw)), map(not_, map(EMAIL_RE.fullmatch, emails))))
    if emails and max(map(len, emails)) > quick_limit:
        slow.update(compress(range(len(raw)), map(lt, repeat(quick_limit), map(len, emails))))
    for row in slow:
        email, problem = check_email(raw[row], max_length=rules.email_max_length)
        if email is None:
            rejected.add(row)
            found[row] = [problem] if problem else []
        else:
            emails[row] = email
    return emails


def _all_tidy(column: list[str], max_length: int) -> bool:
    """True when every value already is what the text rules would make of it: no whitespace but single
    inner spaces (every other whitespace character is unprintable), and short enough."""
    if max(map(len, column), default=0) > max_length:
        return False
    joined = " ".join(filter(None, column))
    # A value's leading or trailing space makes a double space with the separator, or ends ``joined``.
    return not joined or (
        joined.isprintable() and "  " not in joined and joined[0] != " " and joined[-1] != " "
    )


def _tidy_texts(
    column: list[str],
    target: str,
    max_length: int,
    rules: ValidationRules,
    found: dict[int, list[Issue]],
    rejected: set[int],
    bad_email: set[int],
) -> None:
    """check_row's text rules for a column that did not pass :func:`_all_tidy`: whitespace folded for
    every value at once, then :func:`fit_text` for the few values that are too long."""
    column[:] = [" ".join(raw.split()) for raw in column]
    for row in compress(range(len(column)), map(lt, repeat(max_length), map(len, column))):
        value, issue = fit_text(column[row], target, max_length, rules)
        if issue is not None:
            if issue.rejects_row:
                rejected.add(row)
            if row not in bad_email:
                found.setdefault(row, []).append(issue)
        column[row] = value


def _bad_date_issue(target: str, day_first: bool) -> Issue:
    return Issue(
        target, "bad_date", f"{target} is not a date ({_DATE_HELP[day_first]}); field left out", False
    )


class _DateValues(dict[str, "tuple[object, ...] | None"]):
    """Raw date text -> the values it becomes (None: not a date), computed once per distinct text.

    A segment has few distinct birthdays (a few tens of thousands), so a bounded cache of them turns
    date parsing into one dictionary lookup a row."""

    MAX_ENTRIES = 50_000  # every date of a century is 36,525 texts; a few MB, kept by the process

    def __init__(
        self, convert: Callable[[date], tuple[object, ...]], empty: tuple[object, ...], *, day_first: bool
    ) -> None:
        super().__init__({"": empty})
        self._convert = convert
        self._day_first = day_first

    def __missing__(self, raw: str) -> tuple[object, ...] | None:
        parsed = parse_date(raw, day_first=self._day_first)
        values = None if parsed is None else self._convert(parsed)
        if len(self) < self.MAX_ENTRIES:
            self[raw] = values
        return values


# birthday -> birthday_month + birthday_day; anniversary -> YYYY-MM-DD
_DATE_KEYS = {"birthday": ("birthday_month", "birthday_day"), "anniversary": ("anniversary",)}
_NO_DATE: dict[str, tuple[object, ...]] = {"birthday": ("", ""), "anniversary": ("",)}
_DATE_CONVERT: dict[str, Callable[[date], tuple[object, ...]]] = {
    "birthday": lambda d: (d.month, d.day),
    "anniversary": lambda d: (d.isoformat(),),
}
_DATE_VALUES = {
    (target, day_first): _DateValues(convert, _NO_DATE[target], day_first=day_first)
    for target, convert in _DATE_CONVERT.items()
    for day_first in (False, True)
}
