"""Keep personal data out of logs, reports and alerts: email addresses are masked wherever text may
contain them (Constant Contact's activity_errors, exception messages)."""

from __future__ import annotations

import re

_EMAIL_IN_TEXT = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: enough to recognise a domain, not a person."""
    local, sep, domain = email.rpartition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_text(text: str) -> str:
    """Mask every email address inside free text."""
    return _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)


def find_emails(text: str) -> list[str]:
    """Email-like tokens in free text (used to map Constant Contact's error strings back to rows)."""
    return [m.group(0).strip(".").lower() for m in _EMAIL_IN_TEXT.finditer(text)]
