"""Alerts: which runs raise one, what it carries (counts, never personal data), and the webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from exporter.alerts import alert_for, send_alert
from exporter.report import RunReport


def report(**kw) -> RunReport:
    base = RunReport(
        run_id="r1",
        list_id="0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10",
        export="vip",
        received=10,
        submitted=8,
        delivered=8,
    )
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def test_a_clean_completed_run_raises_no_alert():
    assert alert_for(report(status="completed")) is None


@pytest.mark.parametrize(
    "kw,event",
    [
        ({"status": "failed", "error": {"type": "SegmentError", "message": "bad file"}}, "export_run_failed"),
        (
            {
                "status": "failed",
                "error": {"type": "AuthorizationError", "message": "authorize the connection again"},
            },
            "export_run_needs_reauthorization",
        ),
        ({"status": "completed", "refused_by_constant_contact": 2}, "export_run_completed_partially"),
        (
            {"status": "completed", "sync": {"removals_skipped": "no one removed: the segment is empty"}},
            "export_run_completed_partially",
        ),
        (
            {"status": "completed", "valid": 0, "rejected": 10, "submitted": 0, "delivered": 0},
            "export_run_completed_partially",
        ),
        ({"status": "completed", "rejected": 1, "untrusted_rows": 1}, "export_run_completed_partially"),
    ],
)
def test_alert_kinds(kw, event):
    alert = alert_for(report(**kw))
    assert alert is not None and alert["event"] == event
    assert alert["counts"]["received"] == 10 and alert["run_id"] == "r1"


def test_alerts_carry_no_email_address():
    alert = alert_for(
        report(status="failed", error={"type": "ApiError", "message": "jane.doe@example.com bad"})
    )
    assert "jane.doe@example.com" not in json.dumps(alert) and "j***@example.com" in json.dumps(alert)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    _Hook.fail_first = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhook_receives_the_alert_and_a_503_is_retried(webhook):
    _Hook.fail_first = 1
    alert = alert_for(report(status="failed", error={"type": "SegmentError", "message": "bad"}))
    assert send_alert(alert, webhook_url=webhook) is True
    assert [a["event"] for a in _Hook.received] == ["export_run_failed"]


def test_an_unreachable_webhook_never_raises(caplog):
    alert = alert_for(report(status="failed", error={"type": "X", "message": "y"}))
    assert send_alert(alert, webhook_url="http://127.0.0.1:9/hook") is False
    assert any("alert export_run_failed" in r.getMessage() for r in caplog.records)
