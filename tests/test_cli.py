"""The command line as a user runs it: exit codes, messages, --json, --sandbox."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main
from tests.conftest import CONTACT_CSV, requires_sample

LIST_ID = "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10"
REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@requires_sample
def test_sandbox_run_prints_a_json_report(tmp_path):
    code, out, err = run_cli(
        "run",
        "--segment",
        str(CONTACT_CSV),
        "--list-id",
        LIST_ID,
        "--email-field",
        "EMail",
        "--first-name-field",
        "FirstName",
        "--last-name-field",
        "LastName",
        "--field",
        "cf:tier=Loyalty Tier",
        "--sandbox",
        "--results",
        str(tmp_path),
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    for key in (
        "run_id",
        "status",
        "received",
        "submitted",
        "rejected",
        "duplicates",
        "activities",
        "rejects_file",
    ):
        assert key in report
    assert report["status"] == "completed" and report["received"] == 5000
    assert report["activities"][0]["state"] == "completed"
    assert Path(report["rejects_file"]).is_file() and Path(report["report_file"]).is_file()
    assert "prepared" in err and "submitted import 1/1" in err  # progress on stderr


def test_dry_run_needs_no_credentials_and_prints_a_summary(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("Email,Name\na@example.com,A\nbad,B\n", encoding="utf-8")
    code, out, _ = run_cli(
        "run",
        "--segment",
        str(seg),
        "--list-id",
        LIST_ID,
        "--email-field",
        "email",
        "--dry-run",
        "--results",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 0
    assert "dry run: nothing sent" in out and "rejected           1" in out


@pytest.mark.parametrize(
    "argv,words",
    [
        (["run", "--list-id", LIST_ID, "--email-field", "e"], "--segment"),
        (
            ["run", "--segment", "nope.csv", "--list-id", LIST_ID, "--email-field", "e"],
            "segment 'nope.csv' not found",
        ),
        (
            ["run", "--segment", "{seg}", "--list-id", "123", "--email-field", "e"],
            "is not a Constant Contact list ID",
        ),
        (
            ["run", "--segment", "{seg}", "--list-id", LIST_ID, "--email-field", "e", "--field", "x"],
            "CC_FIELD=COLUMN",
        ),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(tmp_path, argv, words):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    code, _, err = run_cli(*[a.replace("{seg}", str(seg)) for a in argv])
    assert code == 2
    assert words in err and "Traceback" not in err


def test_missing_credentials_exit_2(tmp_path, monkeypatch):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    monkeypatch.setenv("EXPORTER_SECRETS_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("CC_API_BASE_URL", "http://127.0.0.1:9/v3")  # never reached
    code, out, _err = run_cli(
        "run",
        "--segment",
        str(seg),
        "--list-id",
        LIST_ID,
        "--email-field",
        "e",
        "--results",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 2 and "client id/secret not found" in out


def test_failed_run_exits_1(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("other\nx\n", encoding="utf-8")
    code, out, _ = run_cli(
        "run",
        "--segment",
        str(seg),
        "--list-id",
        LIST_ID,
        "--email-field",
        "email",
        "--sandbox",
        "--results",
        str(tmp_path / "r"),
        "--quiet",
        "--json",
    )
    assert code == 1 and json.loads(out)["error"]["type"] == "SegmentError"


def test_python_dash_m_entry_point(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--email-field" in done.stdout


def test_sync_options_reach_the_report(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("e,ok\na@example.com,Yes\nb@example.com,No\n", encoding="utf-8")
    argv = [
        "run",
        "--segment",
        str(seg),
        "--list-id",
        LIST_ID,
        "--email-field",
        "e",
        "--mode",
        "mirror",
        "--consent-field",
        "ok",
        "--results",
        str(tmp_path / "r"),
        "--quiet",
        "--json",
    ]
    code, out, _ = run_cli(*argv, "--sandbox")
    report = json.loads(out)
    assert code == 0 and report["sync"]["mode"] == "mirror" and report["sync"]["consent_excluded"] == 1
    assert report["delivered"] == 1
    code, out, _ = run_cli(*argv, "--sandbox")  # a fresh sandbox: everything is sent again
    assert code == 0 and json.loads(out)["submitted"] == 1
    code, _, err = run_cli(*argv[:-2], "--shrink-guard", "2")
    assert code == 2 and "shrink_guard" in err
