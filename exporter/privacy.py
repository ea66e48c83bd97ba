"""Keep personal data out of logs, reports and alerts: email addresses are masked wherever text may
contain them (Constant Contact's activity_errors, exception messages), and text a user wrote (a header
cell, a value) is shortened before an error message repeats it."""

from __future__ import annotations

import re

# An address is found from its '@' outwards, never by trying every start position: a pattern such as
# ``[^\s@]+@[^\s@]+`` scans the whole run again from each position and takes seconds on 100k characters.
# The part before '@' may hold an apostrophe (mary.o'connor@...) or a comment (jane(work)@...), or be
# quoted ("john doe"@...) or end in a stray quote; it stops at a '/' or '\' (a path before a file named
# for someone). A domain is letters, digits, dots and dashes (and the dots, accents and invisible joiners
# that IDNA maps away) with a dot in it and a letter in its last label, so that jane@x.com|bob@y.com is
# two addresses and team@2024/, Email@Work, utf-8@x or python@3.11 are none.
_LOCAL_REVERSED = re.compile(r"\"[^\"@\n]{0,128}\"|\"?[^\s@<>\[\],;:\"/\\]+")
_DOTS = ".\u3002\uff0e\uff61\u2024"
_DOMAIN = re.compile(rf"\"?[\w\-\u0300-\u036f\u200b-\u200d\u2060{_DOTS}]+")
_LABELS = re.compile(rf"[{_DOTS}]")


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: enough to recognise a domain, not a person.
    Masking a masked address changes nothing."""
    local, sep, domain = email.rpartition("@")
    if not sep:
        return "***"
    return f"{_mask_local(local)}@{domain}"


def _mask_local(local: str) -> str:
    """``"***"`` for a quoted part; else the first letter after any punctuation the text put before
    the address (``('jane`` -> ``('j***``), so that masking masked text changes nothing."""
    if local.startswith('"') and local.endswith('"') and len(local) > 1:
        return '"***"'
    lead = next((i for i, c in enumerate(local) if c.isalnum()), len(local))
    return f"{local[: lead + 1]}***"


def _email_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every email-like token, in one pass over the text."""
    spans: list[tuple[int, int]] = []
    floor = 0  # where the part before '@' may start: after the previous '@' or token
    at = text.find("@")
    while at != -1:
        last = at
        while text.startswith("@", last + 1):  # jane@@example.com: one address, mistyped
            last += 1
        domain = _DOMAIN.match(text, last + 1)
        # Read backwards from the '@', over no more than the text since the previous one (linear in all).
        local = _LOCAL_REVERSED.match(text[floor:at][::-1])
        if local is not None and domain is not None and _is_domain(domain.group()):
            spans.append((at - local.end(), domain.end()))
            floor = domain.end()
        else:
            floor = last + 1  # an '@' of the same run has nothing before it
        at = text.find("@", floor)
    return spans


def _is_domain(text: str) -> bool:
    labels = _LABELS.split(text.strip('"').strip(_DOTS))
    return len(labels) > 1 and not labels[-1].isdigit()


def mask_text(text: str) -> str:
    """Mask every email address inside free text."""
    if "@" not in text:
        return text
    parts: list[str] = []
    done = 0
    for start, end in _email_spans(text):
        parts += [text[done:start], mask_email(text[start:end])]
        done = end
    parts.append(text[done:])
    return "".join(parts)


def find_emails(text: str) -> list[str]:
    """Email-like tokens in free text (used to map Constant Contact's error strings back to rows)."""
    return [text[start:end].strip(".'()").lower() for start, end in _email_spans(text)]


def shorten(text: str, limit: int = 80) -> str:
    """A user's text cut to ``limit`` characters for an error message: a 50,000-character header cell
    must not become a 50,000-character error (or a log line that carries a whole row)."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
