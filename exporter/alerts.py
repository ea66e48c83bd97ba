"""Alerts for runs that need a person: failed, completed only in part, or waiting for a new Constant
Contact authorization. A structured error log line always; a webhook POST when ALERT_WEBHOOK_URL is set.
Counts and masked messages only: an alert never carries personal data.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .privacy import mask_text
from .report import HEADLINE_COUNTS, RunReport

log = logging.getLogger(__name__)


def alert_for(report: RunReport) -> dict[str, Any] | None:
    """The alert a finished run deserves, or None. Pure."""
    error = report.error or {}
    if error.get("type") == "AuthorizationError" or "authorize" in str(error.get("message", "")):
        kind = "needs_reauthorization"
    elif report.status == "failed":
        kind = "failed"
    elif report.status == "completed" and (
        report.refused_by_constant_contact
        or report.sync.get("removals_skipped")
        or report.every_row_rejected
        or report.untrusted_rows
    ):
        kind = "completed_partially"
    else:
        return None
    return {
        "event": f"export_run_{kind}",
        "export": report.export,
        "run_id": report.run_id,
        "status": report.status,
        "counts": {name: getattr(report, name) for name in HEADLINE_COUNTS},
        "error": {"type": error.get("type"), "message": mask_text(str(error.get("message", "")))}
        if error
        else None,
        "note": _note(report),
        "report": report.report_file,
    }


def _note(report: RunReport) -> str | None:
    if report.every_row_rejected:
        return "every row was rejected"
    if report.untrusted_rows:
        return f"{report.untrusted_rows:,} row(s) could not be read safely (extra_cells, merged_rows)"
    return report.sync.get("removals_skipped")


def send_alert(alert: dict[str, Any], *, webhook_url: str | None, http: httpx.Client | None = None) -> bool:
    """Log the alert as an error; POST it to the webhook if one is set. Never raises: an alert that
    cannot be delivered must not turn a finished run into a crash."""
    log.error(
        "alert %s: export %s run %s, %s",
        alert["event"],
        alert["export"],
        alert["run_id"],
        (alert.get("error") or {}).get("message") or alert.get("note") or alert["status"],
    )
    if not webhook_url:
        return False
    client = http or httpx.Client(timeout=10.0)
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception_type(httpx.HTTPError),
            reraise=True,
        ):
            with attempt:
                client.post(webhook_url, json=alert).raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.error("alert webhook failed: %s", type(exc).__name__)
        return False
    finally:
        if http is None:
            client.close()
