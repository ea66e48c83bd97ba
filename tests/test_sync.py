"""Sync modes against the sandbox: incremental by default, mirror with a shrink guard, dry run, consent."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.config import Settings
from exporter.files import LocalFiles
from exporter.mapping import DataMapping
from exporter.pipeline import Exporter, ExportRequest
from exporter.storage import LocalResultStore
from tests.test_export import write_csv

MAPPING = DataMapping(email="email", first_name="first")
IMPORTS = "/v3/activities/contacts_json_import"
REMOVALS = "/v3/activities/remove_list_memberships"


@pytest.fixture
def run(tmp_path, cc_client, sandbox):
    """Run an export of the given (email, first name) rows to one list, with one state store."""
    list_id = sandbox.create_list("Sync")
    exporter = Exporter(
        replace(Settings(), api=cc_client.settings),
        files=LocalFiles(),
        results=LocalResultStore(tmp_path / "results"),
        client=cc_client,
    )
    counter = iter(range(1000))

    def go(rows, **options):
        path = write_csv(tmp_path / f"day{next(counter)}.csv", ["email", "first"], [list(r) for r in rows])
        request = ExportRequest(
            segments=(path,), list_id=list_id, mapping=MAPPING, export_name="sync", **options
        )
        return exporter.run(request)

    go.list_id = list_id
    return go


def members(sandbox, list_id):
    return sorted(m["email_address"] for m in sandbox.list_members(list_id))


ABC = [("a@example.com", "A"), ("b@example.com", "B"), ("c@example.com", "C")]


def test_mirror_removes_the_leaver_only(run, sandbox):
    first = run(ABC, mode="mirror")
    assert first.status == "completed" and first.sync["creates"] == 3
    second = run(ABC[:2], mode="mirror")
    assert second.status == "completed", second.error
    assert second.sync["removed"] == 1 and second.sync["unchanged"] == 2
    assert members(sandbox, run.list_id) == ["a@example.com", "b@example.com"]
    assert sandbox.contact("c@example.com")["status"] == "active"  # membership only: never unsubscribed
    assert sandbox.count("POST", REMOVALS) == 1


def test_add_only_keeps_the_leaver_and_says_so(run, sandbox):
    run(ABC)
    second = run(ABC[:2])
    assert second.sync["leavers_kept"] == 1 and "1 leaver(s) kept" in second.sync["note"]
    assert members(sandbox, run.list_id) == ["a@example.com", "b@example.com", "c@example.com"]
    assert sandbox.count("POST", REMOVALS) == 0


def test_contacts_someone_else_put_on_the_list_are_never_removed(run, sandbox):
    sandbox.add_contact("form@example.com", list_ids=[run.list_id])  # a sign-up form added them
    sandbox.add_contact("other@example.com", list_ids=[run.list_id])
    run([*ABC, ("form@example.com", "F")], mode="mirror")  # also in the segment on day 1
    second = run(ABC[:1], mode="mirror", allow_shrink=True)
    assert second.sync["removed"] == 2  # b and c, which this export added
    assert second.sync["leavers_not_ours"] == 1  # form@, on the list before the export
    assert members(sandbox, run.list_id) == ["a@example.com", "form@example.com", "other@example.com"]


def test_mirror_after_add_only_keeps_contacts_it_cannot_tell_are_its_own_and_says_so(run, sandbox):
    run(ABC)  # add-only: the list is not read first, so ownership is unknown
    second = run(ABC[:2], mode="mirror")
    assert second.status == "completed" and second.sync["removals_planned"] == 0
    assert second.sync["leavers"] == second.sync["leavers_not_ours"] == 1
    assert "1 leaver(s) kept" in second.sync["note"] and "add-only" in second.sync["note"]
    assert sandbox.count("POST", REMOVALS) == 0 and len(members(sandbox, run.list_id)) == 3


@pytest.mark.parametrize("day2", [[], [("a@example.com", "A")]])
def test_shrink_guard_blocks_removals_without_the_override(run, sandbox, day2):
    day1 = [(f"p{i}@example.com", "P") for i in range(20)] + [("a@example.com", "A")]
    run(day1, mode="mirror")
    guarded = run(day2, mode="mirror")  # empty, or 95% smaller
    assert guarded.status == "completed"
    assert "no one removed" in guarded.sync["removals_skipped"]
    assert len(members(sandbox, run.list_id)) == 21 and sandbox.count("POST", REMOVALS) == 0
    forced = run(day2, mode="mirror", allow_shrink=True)
    assert forced.sync["removed"] == 21 - len(day2)
    assert members(sandbox, run.list_id) == sorted(e for e, _ in day2)


def test_no_one_is_removed_while_rows_could_not_be_read_safely(run, sandbox):
    """c's row gained a cell (a comma in an unquoted value): rejected, so c looks like a leaver. A row
    that could not be read may hide any profile, so mirror mode removes no one that run."""
    run(ABC, mode="mirror")
    damaged = run([*ABC[:2], ("c@example.com", "C", "surplus")], mode="mirror")
    assert damaged.status == "completed" and damaged.untrusted_rows == 1 and damaged.sync["leavers"] == 1
    assert "1 row(s) could not be read safely" in damaged.sync["removals_skipped"]
    assert any("could not be read safely" in line for line in damaged.summary_lines())
    assert members(sandbox, run.list_id) == [e for e, _ in ABC] and sandbox.count("POST", REMOVALS) == 0
    repaired = run(ABC[:2], mode="mirror")  # c really left: removed now
    assert repaired.sync["removed"] == 1 and members(sandbox, run.list_id) == [e for e, _ in ABC[:2]]


def test_dry_run_reports_exactly_what_the_next_real_run_does_and_sends_nothing(run, sandbox):
    run(ABC, mode="mirror")
    day2 = [("a@example.com", "A"), ("b@example.com", "Bee"), ("d@example.com", "D")]
    sandbox.clear_requests()
    dry = run(day2, mode="mirror", dry_run=True)
    assert sandbox.count() == 0
    real = run(day2, mode="mirror")
    for key in ("creates", "updates", "unchanged", "leavers", "removals_planned"):
        assert dry.sync[key] == real.sync[key], key
    assert (dry.sync["creates"], dry.sync["updates"], dry.sync["unchanged"]) == (1, 1, 1)
    assert dry.sync["removals_planned"] == real.sync["removed"] == 1
    assert [(s["change"], s["row"]) for s in dry.sync["sample"]] == [("update", 3), ("create", 4)]
    assert all("***@" in s["email"] for s in dry.sync["sample"])  # masked


def test_an_unchanged_segment_sends_no_import_and_a_change_sends_one_contact(run, sandbox):
    run(ABC)
    again = run(ABC)
    assert sandbox.count("POST", IMPORTS) == 1
    assert again.submitted == 0 and again.sync["unchanged"] == 3 and again.status == "completed"
    changed = run([ABC[0], ("b@example.com", "Bea"), ABC[2]])
    assert changed.submitted == 1 and changed.sync["updates"] == 1
    assert sandbox.contact("b@example.com")["first_name"] == "Bea"
    full = run(ABC, full_sync=True)
    assert full.submitted == 3 and full.sync["incremental"] is False


def test_unsubscribed_contacts_stay_unsubscribed_across_runs(run, sandbox):
    sandbox.add_contact("gone@example.com", status="unsubscribed")
    for _ in range(2):
        report = run([("gone@example.com", "G")], full_sync=True)
        assert report.not_added_unsubscribed == 1
    assert sandbox.contact("gone@example.com")["status"] == "unsubscribed"
    assert members(sandbox, run.list_id) == []
    bodies = [r.json() for r in sandbox.requests if r.path == IMPORTS]
    assert all("permission_to_send" not in item for body in bodies for item in body["import_data"])


def test_consent_column_keeps_people_who_said_no_out(tmp_path, sandbox, cc_client):
    path = write_csv(
        tmp_path / "c.csv",
        ["email", "Email Subscriber"],
        [["yes@example.com", "Yes"], ["no@example.com", "No"], ["blank@example.com", ""]],
    )
    exporter = Exporter(
        replace(Settings(), api=cc_client.settings),
        files=LocalFiles(),
        results=LocalResultStore(tmp_path / "r"),
        client=cc_client,
    )
    list_id = sandbox.create_list("Consent")
    report = exporter.run(
        ExportRequest(
            segments=(path,),
            list_id=list_id,
            mapping=DataMapping(email="email"),
            consent_field="email subscriber",
        )
    )
    assert report.sync["consent_excluded"] == 2 and report.submitted == 1
    assert members(sandbox, list_id) == ["yes@example.com"]


def test_budget_is_estimated_before_sending(run):
    report = run(ABC)
    assert report.budget["daily_quota"] == 10_000
    assert 3 <= report.budget["estimated_requests"] <= 20
