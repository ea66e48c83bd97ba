"""Contact validation and normalisation: pure functions, no I/O.

A row either becomes a contact ready to import, or it is rejected with a reason that a person can act
on. Rules follow what Constant Contact documents (constant-contact-notes.md §2): one ``@``, no spaces,
commas or brackets, a full domain, limits from the import schema, and the product's 80-character email
limit (a setting, because the import schema says 50). Optional fields never cost a contact: a bad
birthday is dropped from that contact and counted, not rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from .config import ValidationRules
from .mapping import ColumnPlan

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
EMAIL_RE = re.compile(rf"({_LOCAL})@((?:{_LABEL}\.)+{_TLD})")
MAX_LOCAL_PART = 64
MAX_DOMAIN = 253

_DATE_FORMATS = (
    re.compile(r"(?P<m>\d{1,2})[/-](?P<d>\d{1,2})[/-](?P<y>\d{4})"),  # M/D/YYYY, MM-DD-YYYY
    re.compile(r"(?P<y>\d{4})[/-](?P<m>\d{1,2})[/-](?P<d>\d{1,2})(?:[T ][0-9:.]+(?:Z|[+-]\d\d:?\d\d)?)?"),
)


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
        email = _idna(email)
    match = EMAIL_RE.fullmatch(email)
    if match is None or match.end(1) > MAX_LOCAL_PART or len(email) - match.end(1) - 1 > MAX_DOMAIN:
        return None, Issue(
            "email", "email_invalid", f"email is not a valid address: {_why_invalid(email)}", True
        )
    if len(email) > max_length:
        return None, Issue(
            "email",
            "email_too_long",
            f"email has {len(email)} characters; Constant Contact accepts at most {max_length}",
            True,
        )
    return email, None


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
    if any(c.isspace() for c in email):
        return "contains a space"
    if any(c in email for c in ',;<>()[]\\":'):
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


def parse_date(raw: str) -> date | None:
    """Dates as Customer Insights and spreadsheets write them: M/D/YYYY, YYYY-MM-DD, ISO timestamps."""
    value = raw.strip()
    for pattern in _DATE_FORMATS:
        match = pattern.fullmatch(value)
        if match:
            try:
                return date(int(match["y"]), int(match["m"]), int(match["d"]))
            except ValueError:
                return None
    return None


def check_row(values: list[str], plan: ColumnPlan, rules: ValidationRules) -> Checked:
    """Turn one row into an import_data item, or reject it. Pure; the hot path of every export."""
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
        value = " ".join(raw.split())  # trims and folds embedded newlines/tabs into single spaces
        if not value:
            continue
        if len(value) > max_length:
            if rules.too_long == "truncate":
                value = value[:max_length].rstrip()
                issues.append(
                    Issue(target, "truncated", f"{target} truncated to {max_length} characters", False)
                )
            else:
                issues.append(
                    Issue(
                        target,
                        "too_long",
                        f"{target} has {len(value)} characters; Constant Contact stores at most {max_length}",
                        True,
                    )
                )
                rejected = True
                continue
        contact[target] = value
    for target, index in plan.dates:
        raw = values[index]
        if raw:
            _put_date(contact, target, raw, issues)
    if not issues:
        return Checked(contact, email, ())
    if rejected:
        return Checked(None, None, tuple(issues))
    return Checked(contact, email, tuple(issues))


def _put_date(contact: dict[str, object], target: str, raw: str, issues: list[Issue]) -> None:
    """birthday -> birthday_month + birthday_day; anniversary -> YYYY-MM-DD. A bad date drops the field."""
    parsed = parse_date(raw)
    if parsed is None:
        issues.append(
            Issue(
                target, "bad_date", f"{target} is not a date Constant Contact accepts; field left out", False
            )
        )
        return
    if target == "birthday":
        contact["birthday_month"] = parsed.month
        contact["birthday_day"] = parsed.day
    else:
        contact[target] = parsed.isoformat()
