"""The command line as a user runs it: exit codes, messages, --json, --sandbox."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.report import ActivityReport, RunReport
from tests.conftest import CONTACT_CSV, requires_sample

LIST_ID = "0b8c1d58-6a36-4f55-9b41-9a3d1c2e7f10"
REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_export(segment: object, list_id: str, email_field: str, *options: str) -> tuple[int, str, str]:
    """``python -m exporter run`` of one segment; ``options`` follow the three every run needs."""
    return run_cli(
        "run", "--segment", str(segment), "--list-id", list_id, "--email-field", email_field, *options
    )


def dry_run_email_name(segment: Path, results: Path, *options: str) -> dict:
    """The JSON report of a dry run of a segment with the columns ``email`` and ``name``."""
    code, out, _ = run_export(
        segment, LIST_ID, "email", "--first-name-field", "name", *options,
        "--dry-run", "--results", str(results), "--quiet", "--json",
    )  # fmt: skip
    assert code == 0
    return json.loads(out)


@requires_sample
def test_sandbox_run_prints_a_json_report(tmp_path):
    code, out, err = run_export(
        str(CONTACT_CSV),
        LIST_ID,
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
    code, out, _ = run_export(
        str(seg), LIST_ID, "email", "--dry-run", "--results", str(tmp_path / "r"), "--quiet"
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
        (["run", "--segment", "", "--list-id", LIST_ID, "--email-field", "e"], "--segment is empty"),
        (["resume", "--run-id", "../../etc"], "'../../etc' is not a run id"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(tmp_path, argv, words):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    code, _, err = run_cli(*[a.replace("{seg}", str(seg)) for a in argv])
    assert code == 2
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["run", "--segment", "s.csv", "--list-id", "x", "--email-field", "E", "--encodng", "cp1252"],
            ["usage: python -m exporter run ", "--encodng (did you mean --encoding?)"],
        ),
        (
            ["connections", "authorize", "acme", "--devise"],
            ["usage: python -m exporter connections authorize ", "--devise (did you mean --device?)"],
        ),
        (["exports", "list", "surplus"], ["usage: python -m exporter exports list ", "arguments: surplus"]),
        (  # a required option misspelled: named, not reported missing
            ["run", "--segment", "s.csv", "--list-id", "x", "--email-feild", "E"],
            ["--email-feild (did you mean --email-field?)"],
        ),
        (
            ["resume", "-run-id", "x"],
            ["usage: python -m exporter resume ", "-run-id (did you mean --run-id?)"],
        ),
        (  # the same, written with '=' and a value holding a space
            ["run", "--segment", "s.csv", "--list-id", "x", '--email-feld="Work Email"'],
            ['--email-feld="Work Email" (did you mean --email-field?)'],
        ),
        (  # a value that starts with '-' but holds a space is a value, as argparse has it
            ["run", "--segment", "-seg 2024.csv", "--list-id", LIST_ID, "--email-field", "e"],
            ["error: segment '-seg 2024.csv' not found"],
        ),
    ],
    ids=["run", "nested", "no-guess", "required", "one-dash", "required-with-value", "dash-value"],
)
def test_a_misspelled_option_is_named_with_the_subcommand_usage(argv, said):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert all(words in err for words in said), err


def test_missing_credentials_exit_2(tmp_path, monkeypatch):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    monkeypatch.setenv("EXPORTER_SECRETS_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("CC_API_BASE_URL", "http://127.0.0.1:9/v3")  # never reached
    code, out, _err = run_export(str(seg), LIST_ID, "e", "--results", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "client id/secret not found" in out


def test_failed_run_exits_1(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("other\nx\n", encoding="utf-8")
    code, out, _ = run_export(
        str(seg), LIST_ID, "email", "--sandbox", "--results", str(tmp_path / "r"), "--quiet", "--json"
    )
    assert code == 1 and json.loads(out)["error"]["type"] == "SegmentError"


def test_a_run_that_rejects_every_row_says_to_check_the_email_column(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("Email,First\na@example.com,Ann\nb@example.com,Bo\n", encoding="utf-8")
    options = ("--sandbox", "--results", str(tmp_path / "r"))
    code, out, _ = run_export(str(seg), LIST_ID, "First", *options)
    warning = "warning: every row was rejected: does the data matching name the email column?"
    assert code == 0 and "rejected           2" in out and warning in out
    code, out, err = run_export(str(seg), LIST_ID, "First", *options, "--json")
    assert code == 0 and json.loads(out)["rejected"] == 2 and warning in err
    seg.write_text("Email,First\na@example.com,Ann,surplus\nb@example.com,Bo\n", encoding="utf-8")
    code, out, err = run_export(str(seg), LIST_ID, "Email", *options, "--json")
    assert code == 0 and json.loads(out)["untrusted_rows"] == 1
    assert "warning: 1 row(s) could not be read safely" in err


def test_errors_mask_an_address_the_user_typed(tmp_path):
    code, _, err = run_export(str(tmp_path / "jane.doe@example.com.csv"), LIST_ID, "Email")
    assert code == 2 and "***@example.com.csv' not found" in err and "jane.doe" not in err


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
    options = ("--mode", "mirror", "--consent-field", "ok", "--results", str(tmp_path / "r"))
    code, out, _ = run_export(seg, LIST_ID, "e", *options, "--quiet", "--json", "--sandbox")
    report = json.loads(out)
    assert code == 0 and report["sync"]["mode"] == "mirror" and report["sync"]["consent_excluded"] == 1
    assert report["delivered"] == 1
    # a fresh sandbox: everything is sent again
    code, out, _ = run_export(seg, LIST_ID, "e", *options, "--quiet", "--json", "--sandbox")
    assert code == 0 and json.loads(out)["submitted"] == 1
    code, _, err = run_export(seg, LIST_ID, "e", *options, "--shrink-guard", "2")
    assert code == 2 and "shrink_guard" in err


def test_a_sandbox_run_never_makes_a_later_real_run_skip_contacts(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    options = ("--results", str(tmp_path / "r"), "--quiet", "--json")
    assert run_export(seg, LIST_ID, "e", *options, "--sandbox")[0] == 0
    assert not list((tmp_path / "r").rglob("snapshot.bin"))  # sandbox state stayed in a throwaway folder
    code, out, _ = run_export(seg, LIST_ID, "e", *options, "--dry-run")
    assert code == 0 and json.loads(out)["sync"]["creates"] == 1


def test_a_results_path_that_cannot_be_written_is_a_usage_error(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_export(str(seg), LIST_ID, "e", "--dry-run", "--results", str(blocker))
    assert code == 2 and "--results" in err and "Traceback" not in err


def test_rows_with_extra_cells_are_rejected_and_encoding_can_be_given(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_bytes(
        "email,name\na@example.com,Zoë\nb@example.com,Smith, John\nc@example.com,Ann,,\n".encode("cp1252")
    )
    report = dry_run_email_name(seg, tmp_path / "r", "--encoding", "cp1252")
    assert (report["rejected"], report["submitted"] + report["sync"]["creates"]) == (1, 2)
    rejects = (Path(report["rejects_file"])).read_text(encoding="utf-8")
    assert "extra_cells" in rejects and ",3," in rejects  # row 3: "Smith, John" shifted a column


def test_rejects_file_lists_rows_in_file_order_whatever_the_reason(tmp_path):
    seg = tmp_path / "s.csv"
    seg.write_text(
        "email,name\nnot-an-address,A\nb@example.com,Smith, John\nc@@example.com,C\nd@example.com,D\n",
        encoding="utf-8",
    )
    report = dry_run_email_name(seg, tmp_path / "r")
    assert report["rejected"] == 3
    lines = Path(report["rejects_file"]).read_text(encoding="utf-8").splitlines()[1:]
    assert [(line.split(",")[1], line.split(",")[3]) for line in lines] == [
        ("2", "email_invalid"),
        ("3", "extra_cells"),
        ("4", "email_invalid"),
    ]


def test_resume_finishes_a_pending_run_without_resending(tmp_path, sandbox, secret_store, monkeypatch):
    from exporter.secrets import FileSecretStore, SecretNames

    names = SecretNames()
    store = FileSecretStore(tmp_path / "secrets.json")
    for name in (names.client_id, names.client_secret, names.refresh_token):
        store.set(name, secret_store.get(name))
    for key, value in {
        "EXPORTER_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "CC_API_BASE_URL": sandbox.api_base_url,
        "CC_OAUTH_BASE_URL": sandbox.oauth_base_url,
        "CC_POLL_INTERVAL_SECONDS": "0.05",
        "CC_POLL_INTERVAL_MAX_SECONDS": "0.1",
    }.items():
        monkeypatch.setenv(key, value)
    list_id = sandbox.create_list("Resume")
    seg = tmp_path / "s.csv"
    seg.write_text("e\na@example.com\nb@example.com\n", encoding="utf-8")
    sandbox.faults.quota_exceeded(path="/v3/activities/contacts_json_import", times=None)
    code, out, _ = run_export(str(seg), list_id, "e", "--results", str(tmp_path / "r"), "--quiet", "--json")
    assert code == 3
    run_id = json.loads(out)["run_id"]
    sandbox.faults.clear()
    code, out, _ = run_cli("resume", "--run-id", run_id, "--results", str(tmp_path / "r"), "--json")
    assert code == 0 and json.loads(out)["delivered"] == 2
    assert sorted(m["email_address"] for m in sandbox.list_members(list_id)) == [
        "a@example.com",
        "b@example.com",
    ]
    assert run_cli("resume", "--run-id", "nope", "--results", str(tmp_path / "r"))[0] == 2


def test_the_summary_of_a_run_that_failed_before_sending_says_nothing_was_delivered():
    report = RunReport(run_id="r", list_id=LIST_ID, status="failed", received=3, valid=3, chunks=1)
    report.activities = [ActivityReport(chunk=1, contacts=3, bytes=300)]
    report.error = {"type": "ConfigError", "message": "the list does not exist"}
    lines = report.summary_lines()
    assert any("submitted" in line and "in 0 import request(s) (1 prepared)" in line for line in lines)
    assert any(line.split()[:2] == ["delivered", "none"] for line in lines)
    report.status = "pending"  # one request sent, its activity still running
    report.activities[0].activity_id, report.submitted = "a1", 3
    lines = report.summary_lines()
    assert any("in 1 import request(s)" in line and "prepared" not in line for line in lines)
    assert any(line.split()[:3] == ["delivered", "unknown", "yet"] for line in lines)
