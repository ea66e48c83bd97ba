"""End to end: segment files -> validation -> import requests -> the Constant Contact sandbox -> report.

Nothing is mocked: the exporter talks HTTP to a real sandbox server on loopback, and every request it
makes is checked against Constant Contact's official OpenAPI spec.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.config import EMAIL_MAX_LENGTH_SCHEMA, ChunkLimits, Settings, ValidationRules
from exporter.files import LocalFiles
from exporter.mapping import DataMapping
from exporter.pipeline import Exporter, ExportRequest
from exporter.storage import LocalResultStore
from tests.conftest import CONTACT_CSV, requires_sample
from tests.spec import SPEC_PATH, SpecMismatch, validate_request, validate_response

CONTOSO = DataMapping.from_args(
    email="EMail",
    first_name="FirstName",
    last_name="LastName",
    fields=["job_title=Occupation", "city=City", "birthday=DateOfBirth"],
)


def exporter_for(tmp_path, cc_client, settings=None, **kw) -> Exporter:
    settings = settings or Settings()
    settings = replace(settings, api=cc_client.settings)
    return Exporter(
        settings, files=LocalFiles(), results=LocalResultStore(tmp_path / "results"), client=cc_client, **kw
    )


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def read_rejects(report) -> list[dict[str, str]]:
    with open(report.rejects_file, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def imports(sandbox) -> int:
    return sandbox.count("POST", "/v3/activities/contacts_json_import")


@requires_sample
def test_contoso_sample_lands_in_the_list_and_the_report_adds_up(tmp_path, sandbox, cc_client):
    list_id = sandbox.create_list("Contoso")
    messages: list[str] = []
    report = exporter_for(tmp_path, cc_client, progress=messages.append).run(
        ExportRequest(segments=(str(CONTACT_CSV),), list_id=list_id, mapping=CONTOSO)
    )
    assert report.status == "completed", report.error
    assert report.received == 5000
    assert report.received == report.valid + report.rejected
    assert report.valid == report.submitted + report.duplicates
    members = sandbox.list_members(list_id)
    assert len(members) == report.delivered == report.submitted - report.refused_by_constant_contact
    assert report.activities and all(a.state == "completed" for a in report.activities)
    assert len(read_rejects(report)) == report.rejected
    # the report on disk is the one returned
    on_disk = json.loads(Path(report.report_file).read_text())
    assert on_disk["delivered"] == report.delivered and on_disk["run_id"] == report.run_id
    # a sample contact arrived with its mapped fields
    abbie = sandbox.contact("abbie_moss@collinsreedandhoward.com")
    assert abbie is not None and abbie["first_name"] == "Abbie" and abbie["job_title"] == "Software Engineer"
    assert any("submitted import 1/1" in m for m in messages)


@pytest.mark.skipif(not SPEC_PATH.exists(), reason="official spec not in ../shared")
@requires_sample
def test_every_request_the_exporter_makes_matches_the_official_spec(tmp_path, sandbox, cc_client):
    # The import schema caps email at 50 characters while the product accepts 80 (the default). With the
    # limit set to the schema's 50, every request must match the spec exactly.
    list_id = sandbox.create_list("Spec")
    settings = Settings(rules=ValidationRules(email_max_length=EMAIL_MAX_LENGTH_SCHEMA))
    report = exporter_for(tmp_path, cc_client, settings).run(
        ExportRequest(segments=(str(CONTACT_CSV),), list_id=list_id, mapping=CONTOSO)
    )
    assert report.status == "completed" and report.rejected > 0
    exchanges = [r for r in sandbox.requests if r.path.startswith("/v3/")]
    assert {r.path.split("/")[2] for r in exchanges} >= {"activities", "contact_lists"}
    for exchange in sandbox.requests:
        validate_request(exchange)
        validate_response(exchange)


@pytest.mark.skipif(not SPEC_PATH.exists(), reason="official spec not in ../shared")
@requires_sample
def test_with_the_default_80_limit_the_only_spec_deviation_is_email_length(tmp_path, sandbox, cc_client):
    list_id = sandbox.create_list("Spec80")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(str(CONTACT_CSV),), list_id=list_id, mapping=CONTOSO)
    )
    assert report.status == "completed"
    deviations = []
    for exchange in sandbox.requests:
        try:
            validate_request(exchange)
        except SpecMismatch as exc:
            deviations.append(str(exc))
        validate_response(exchange)
    assert len(deviations) == 1  # the one import request carrying 51..80-character emails
    details = [line for line in deviations[0].splitlines() if line.startswith("  import_data/")]
    assert details and all(line.endswith("is too long") and "/email:" in line for line in details)


def test_several_chunks_every_contact_once(tmp_path, sandbox, cc_client):
    rows = [[f"user{i}@example.com", f"F{i}", f"L{i}"] for i in range(1050)]
    path = write_csv(tmp_path / "seg.csv", ["Email", "First", "Last"], rows)
    list_id = sandbox.create_list("Chunks")
    settings = Settings(chunks=ChunkLimits(max_contacts=400))
    report = exporter_for(tmp_path, cc_client, settings).run(
        ExportRequest(
            segments=(path,),
            list_id=list_id,
            mapping=DataMapping(email="email", first_name="first", last_name="last"),
        )
    )
    assert report.status == "completed"
    assert [a.contacts for a in report.activities] == [400, 400, 250]
    assert imports(sandbox) == 3
    # several activities are awaited with the activities list; every exchange matches the spec
    assert any(r.method == "GET" and r.path == "/v3/activities" for r in sandbox.requests)
    if SPEC_PATH.exists():
        for exchange in sandbox.requests:
            validate_request(exchange)
            validate_response(exchange)
    assert sorted(m["email_address"] for m in sandbox.list_members(list_id)) == sorted(r[0] for r in rows)


def test_byte_limit_keeps_every_request_under_what_the_server_reads(tmp_path, cc_client, sandbox):
    rows = [[f"user{i}@example.com", "N" * 40] for i in range(300)]
    path = write_csv(tmp_path / "seg.csv", ["email", "name"], rows)
    list_id = sandbox.create_list("Bytes")
    settings = Settings(chunks=ChunkLimits(max_bytes=5000))
    report = exporter_for(tmp_path, cc_client, settings).run(
        ExportRequest(
            segments=(path,), list_id=list_id, mapping=DataMapping(email="email", first_name="name")
        )
    )
    assert report.status == "completed"
    assert len(report.activities) > 3 and all(a.bytes <= 5000 for a in report.activities)
    bodies = [r.body for r in sandbox.requests if r.path.endswith("contacts_json_import")]
    assert max(len(b) for b in bodies) <= 5000
    assert len(sandbox.list_members(list_id)) == 300


def test_rejects_duplicates_and_warnings_are_reported(tmp_path, sandbox, cc_client):
    rows = [
        ["ok@example.com", "Ada"],
        ["not-an-email", "Bob"],
        ["", "Cy"],
        ["OK@Example.com ", "Ada again"],
        ["long@example.com", "N" * 70],
        ["=cmd@x", "Formula"],
    ]
    path = write_csv(tmp_path / "seg.csv", ["E-mail", "First Name"], rows)
    list_id = sandbox.create_list("Rules")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(
            segments=(path,), list_id=list_id, mapping=DataMapping(email="e-mail", first_name="first name")
        )
    )
    assert (report.received, report.rejected, report.duplicates, report.submitted) == (6, 3, 1, 2)
    assert report.field_warnings == {"first_name truncated to 50 characters": 1}
    rejects = read_rejects(report)
    assert [(r["row"], r["code"]) for r in rejects] == [
        ("3", "email_invalid"),
        ("4", "email_missing"),
        ("7", "email_invalid"),
    ]
    assert rejects[2]["value"] == "'=cmd@x"  # no formula injection
    with open(report.duplicates_file, encoding="utf-8", newline="") as fh:
        dups = list(csv.DictReader(fh))
    assert [(d["row"], d["first_row"]) for d in dups] == [("5", "2")]
    assert len(sandbox.list_members(list_id)) == 2


def test_contact_refused_by_constant_contact_is_reported_as_refused_not_delivered(tmp_path, cc_client):
    from sandbox import Sandbox, SandboxConfig

    long_email = "a" * 55 + "@example.com"  # 67 chars: over the import schema's 50, under the product's 80
    path = write_csv(tmp_path / "seg.csv", ["email"], [["short@example.com"], [long_email]])
    with Sandbox(SandboxConfig(email_max_length=50, activity_step_seconds=0.01)) as strict:
        api = replace(
            cc_client.settings, api_base_url=strict.api_base_url, oauth_base_url=strict.oauth_base_url
        )
        from exporter.constant_contact import ConstantContactClient
        from exporter.secrets import MemorySecretStore, SecretNames
        from exporter.tokens import TokenProvider
        from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

        names = SecretNames()
        store = MemorySecretStore(
            {
                names.client_id: DEFAULT_CLIENT_ID,
                names.client_secret: DEFAULT_CLIENT_SECRET,
                names.refresh_token: strict.issue_refresh_token(),
            }
        )
        client = ConstantContactClient(api, TokenProvider(store, token_url=api.oauth_base_url + "/token"))
        list_id = strict.create_list("Strict")
        report = exporter_for(tmp_path, client).run(
            ExportRequest(segments=(path,), list_id=list_id, mapping=DataMapping(email="email"))
        )
        assert report.status == "completed"
        assert report.rejected == 0 and report.submitted == 2
        assert report.refused_by_constant_contact == 1
        assert report.delivered == 1 == len(strict.list_members(list_id))
        refused = [r for r in read_rejects(report) if r["code"] == "refused_by_constant_contact"]
        assert [(r["row"], r["value"]) for r in refused] == [("3", long_email)]
        assert long_email not in refused[0]["reason"]  # the value column has it once; the reason is masked
        # the report itself carries no email address
        assert long_email not in Path(report.report_file).read_text()


def test_unsubscribed_contact_is_not_re_added_and_stays_unsubscribed(tmp_path, sandbox, cc_client):
    sandbox.add_contact("gone@example.com", status="unsubscribed")
    path = write_csv(tmp_path / "seg.csv", ["email"], [["gone@example.com"], ["new@example.com"]])
    list_id = sandbox.create_list("Consent")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(path,), list_id=list_id, mapping=DataMapping(email="email"))
    )
    assert report.not_added_unsubscribed == 1
    assert report.delivered == 1
    assert [m["email_address"] for m in sandbox.list_members(list_id)] == ["new@example.com"]
    assert sandbox.contact("gone@example.com")["status"] == "unsubscribed"


def test_more_profiles_than_the_limit_is_refused_before_anything_is_sent(tmp_path, sandbox, cc_client):
    path = write_csv(tmp_path / "seg.csv", ["email"], [[f"u{i}@example.com"] for i in range(11)])
    list_id = sandbox.create_list("Limit")
    report = exporter_for(tmp_path, cc_client, Settings(max_profiles=10)).run(
        ExportRequest(segments=(path,), list_id=list_id, mapping=DataMapping(email="email"))
    )
    assert report.status == "failed"
    assert report.error["type"] == "LimitExceededError" and "more than 10 profiles" in report.error["message"]
    assert sandbox.count("*", "/v3") == 0


def test_a_run_stopped_by_the_limit_counts_the_rows_it_checked_and_no_more(tmp_path, sandbox, cc_client):
    rows = [[f"u{i}@example.com" if i % 10 else "not-an-email"] for i in range(5000)]
    path = write_csv(tmp_path / "seg.csv", ["email"], rows)
    list_id = sandbox.create_list("Limit")
    report = exporter_for(tmp_path, cc_client, Settings(max_profiles=4500)).run(
        ExportRequest(segments=(path,), list_id=list_id, mapping=DataMapping(email="email"))
    )
    assert report.error["type"] == "LimitExceededError"
    assert 0 < report.received < 4500  # the batches checked before the one that went over
    assert report.received == report.valid + report.rejected == report.segments[0].received
    assert report.rejected == len(range(0, report.received, 10))


def test_a_row_that_swallowed_rows_is_rejected_with_them_inside(tmp_path, sandbox, cc_client):
    """A stray quote closed by a literal one (Bob") hides bob's row inside jane's first name: strict
    parsing cannot see it, the reader sets the row aside, and the rejects file keeps both."""
    rows = [f"u{i}@example.com,U{i}" for i in range(3000)]
    rows[2500] = 'jane@example.com,"Jane\nbob@example.com,Bob"'  # row 2502, over two lines
    path = tmp_path / "seg.csv"
    path.write_text("Email,First\n" + "\n".join(rows) + "\n", encoding="utf-8")
    list_id = sandbox.create_list("Swallowed")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(
            segments=(str(path),), list_id=list_id, mapping=DataMapping(email="email", first_name="First")
        )
    )
    assert report.status == "completed", report.error
    assert (report.received, report.rejected, report.delivered, report.untrusted_rows) == (3000, 1, 2999, 1)
    (reject,) = read_rejects(report)
    assert (reject["row"], reject["code"]) == ("2502", "merged_rows")
    assert "jane@example.com" in reject["value"] and "bob@example.com,Bob" in reject["value"]
    members = {m["email_address"] for m in sandbox.list_members(list_id)}
    assert "jane@example.com" not in members and "u2501@example.com" in members


def test_a_bad_file_is_reported_not_half_exported(tmp_path, sandbox, cc_client):
    good = "".join(f"u{i}@example.com\n" for i in range(5000)).encode()
    path = tmp_path / "seg.csv"
    path.write_bytes(b"email\n" + good + b"bad\xff\xfe@example.com\n")
    list_id = sandbox.create_list("Bad")
    report = exporter_for(tmp_path, cc_client, Settings(chunks=ChunkLimits(max_contacts=1000))).run(
        ExportRequest(segments=(str(path),), list_id=list_id, mapping=DataMapping(email="email"))
    )
    assert report.status == "failed" and report.error["type"] == "SegmentError"
    assert "seg.csv" in report.error["message"]
    assert imports(sandbox) == 0 and sandbox.list_members(list_id) == []


def test_missing_column_and_unknown_list_fail_clearly_without_imports(tmp_path, sandbox, cc_client):
    path = write_csv(tmp_path / "seg.csv", ["email"], [["a@example.com"]])
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(path,), list_id=sandbox.create_list("L"), mapping=DataMapping(email="mail"))
    )
    assert report.status == "failed" and "'mail' (for email) not found" in report.error["message"]
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(
            segments=(path,),
            list_id="04fe9a97-a579-43c5-bb1a-58ed29bf0a6a",
            mapping=DataMapping(email="email"),
        )
    )
    assert report.status == "failed" and report.error["type"] == "ConfigError"
    assert "does not exist" in report.error["message"]
    assert imports(sandbox) == 0


def test_unknown_custom_field_fails_before_import(tmp_path, sandbox, cc_client):
    path = write_csv(tmp_path / "seg.csv", ["email", "tier"], [["a@example.com", "gold"]])
    mapping = DataMapping.from_args(email="email", fields=["cf:tier=tier"])
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(path,), list_id=sandbox.create_list("L"), mapping=mapping)
    )
    assert report.status == "failed" and "custom field(s) tier" in report.error["message"]
    sandbox.create_custom_field("tier")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(path,), list_id=sandbox.create_list("L2"), mapping=mapping)
    )
    assert report.status == "completed" and report.delivered == 1
    assert sandbox.contact("a@example.com")["custom_fields"] == {"tier": "gold"}


def test_dry_run_sends_nothing(tmp_path, sandbox, cc_client):
    path = write_csv(tmp_path / "seg.csv", ["email"], [["a@example.com"], ["bad"]])
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(
            segments=(path,),
            list_id=sandbox.create_list("Dry"),
            mapping=DataMapping(email="email"),
            dry_run=True,
        )
    )
    assert report.status == "completed" and report.dry_run
    assert (report.submitted, report.rejected, report.chunks) == (0, 1, 1)
    assert sandbox.count("*", "/v3") == 0 and sandbox.count("*", "/oauth2") == 0


def test_several_segments_deduplicate_across_files(tmp_path, sandbox, cc_client):
    a = write_csv(tmp_path / "a.csv", ["email"], [["x@example.com"], ["y@example.com"]])
    b = write_csv(tmp_path / "b.csv", ["Email "], [["Y@example.com"], ["z@example.com"]])
    list_id = sandbox.create_list("Multi")
    report = exporter_for(tmp_path, cc_client).run(
        ExportRequest(segments=(a, b), list_id=list_id, mapping=DataMapping(email="email"))
    )
    assert [(s.name, s.received) for s in report.segments] == [("a", 2), ("b", 2)]
    assert report.duplicates == 1 and report.delivered == 3


def test_email_limit_setting_rejects_before_sending(tmp_path, sandbox, cc_client):
    long_email = "a" * 55 + "@example.com"
    path = write_csv(tmp_path / "seg.csv", ["email"], [[long_email]])
    settings = Settings(rules=ValidationRules(email_max_length=50))
    report = exporter_for(tmp_path, cc_client, settings).run(
        ExportRequest(segments=(path,), list_id=sandbox.create_list("L"), mapping=DataMapping(email="email"))
    )
    assert report.rejected == 1 and read_rejects(report)[0]["code"] == "email_too_long"
    assert imports(sandbox) == 0
