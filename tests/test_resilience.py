"""Faults during delivery: every valid contact ends on the list exactly once, and the report says what
happened. A crashed run is finished from its checkpoint without resubmitting a chunk that has an activity.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from exporter.config import ChunkLimits, Settings
from exporter.files import LocalFiles
from exporter.mapping import DataMapping
from exporter.pipeline import Exporter, ExportRequest, run_folder
from exporter.storage import LocalResultStore
from tests.test_export import read_rejects, write_csv

IMPORTS = "/v3/activities/contacts_json_import"
ROWS = [[f"user{i}@example.com", f"N{i}"] for i in range(45)] + [["broken", "X"], ["", "Y"]]
EXPECTED = sorted(r[0] for r in ROWS[:45])


class Crash(BaseException):
    """The process dies: not an error the exporter could catch and report."""


class DyingStore(LocalResultStore):
    """A real local store that "kills the process" on the n-th checkpoint write after a submission."""

    def __init__(self, root, *, die_at: int) -> None:
        super().__init__(root)
        self.die_at = die_at
        self.checkpoints = 0
        self.dead = False

    def put_bytes(self, path, data, *, content_type="application/octet-stream"):
        if self.dead:
            raise Crash("the process is gone")
        if path.endswith("state.json") and b'"activity_id": "' in data:
            self.checkpoints += 1
            if self.checkpoints == self.die_at:
                super().put_bytes(path, data, content_type=content_type)
                self.dead = True  # the checkpoint of chunk k was written; the process dies right after
                raise Crash("killed after checkpoint")
        return super().put_bytes(path, data, content_type=content_type)


def make(tmp_path, cc_client, *, state=None, settings=None):
    settings = replace(settings or Settings(chunks=ChunkLimits(max_contacts=10)), api=cc_client.settings)
    results = LocalResultStore(tmp_path / "results")
    return Exporter(settings, files=LocalFiles(), results=results, state=state or results, client=cc_client)


def request_for(tmp_path, sandbox):
    path = write_csv(tmp_path / "seg.csv", ["email", "name"], ROWS)
    return ExportRequest(
        segments=(path,),
        list_id=sandbox.create_list("R"),
        mapping=DataMapping(email="email", first_name="name"),
        export_name="resilience",
    )


def on_list(sandbox, list_id):
    return sorted(m["email_address"] for m in sandbox.list_members(list_id))


def assert_exactly_once(sandbox, request, report):
    assert on_list(sandbox, request.list_id) == EXPECTED
    assert report.status == "completed" and report.delivered == 45
    assert sorted(int(r["row"]) for r in read_rejects(report)) == [47, 48]  # exactly the invalid rows


@pytest.mark.parametrize("k", [1, 3, 5])
def test_killed_after_chunk_k_resumes_without_resubmitting(tmp_path, sandbox, cc_client, k):
    state = DyingStore(tmp_path / "state", die_at=k)
    request = request_for(tmp_path, sandbox)
    with pytest.raises(Crash):
        make(tmp_path, cc_client, state=state).run(request, run_id=f"run-{k}")
    assert sandbox.count("POST", IMPORTS) == k
    # a later invocation (the timer), a new process with the same storage
    fresh = LocalResultStore(tmp_path / "state")
    folder = f"exports/resilience/runs/run-{k}"
    report = make(tmp_path, cc_client, state=fresh).resume(folder)
    assert sandbox.count("POST", IMPORTS) == 5  # the minimum: chunks 1..k were not sent again
    assert_exactly_once(sandbox, request, report)
    assert [a.attempts for a in report.activities] == [1] * 5


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "cancelled"])
def test_failed_activity_is_resubmitted(tmp_path, sandbox, cc_client, outcome):
    sandbox.faults.activities(outcome, times=1, path=IMPORTS)
    request = request_for(tmp_path, sandbox)
    report = make(tmp_path, cc_client).run(request)
    assert_exactly_once(sandbox, request, report)
    assert sandbox.count("POST", IMPORTS) == 5 + 1
    first = report.activities[0]
    assert first.attempts == 2 and len(first.previous_activity_ids) == 1


def test_an_activity_that_keeps_failing_fails_the_run_and_says_how_many(tmp_path, sandbox, cc_client):
    sandbox.faults.activities("failed", times=None, path=IMPORTS)
    request = request_for(tmp_path, sandbox)
    report = make(tmp_path, cc_client).run(request)
    assert report.status == "failed" and report.error["type"] == "ActivityFailed"
    assert "45 contacts were not imported" in report.error["message"]
    assert sandbox.count("POST", IMPORTS) == 5 * 3  # first try + 2 resubmissions, no more
    assert on_list(sandbox, request.list_id) == []


@pytest.mark.parametrize("fault", ["throttle", "throttle_retry_after", "500", "503", "reset"])
def test_transient_faults_are_retried(tmp_path, sandbox, cc_client, fault):
    if fault == "throttle":
        sandbox.faults.throttle(path=IMPORTS, times=2)
    elif fault == "throttle_retry_after":
        sandbox.faults.throttle(path=IMPORTS, times=1, retry_after=0.2)
    elif fault == "reset":
        sandbox.faults.reset(path=IMPORTS, times=1)
    else:
        sandbox.faults.respond(
            int(fault), [{"error_key": "server", "error_message": "boom"}], path=IMPORTS, times=2
        )
    request = request_for(tmp_path, sandbox)
    report = make(tmp_path, cc_client).run(request)
    assert_exactly_once(sandbox, request, report)
    retried = {"throttle": 2, "throttle_retry_after": 1, "500": 2, "503": 2, "reset": 1}[fault]
    assert sandbox.count("POST", IMPORTS) == 5 + retried and report.retries >= retried


def test_quota_exceeded_pauses_until_the_daily_reset_then_resumes(tmp_path, sandbox, cc_client):
    request = request_for(tmp_path, sandbox)
    exporter = make(tmp_path, cc_client)
    sandbox.faults.quota_exceeded(path=IMPORTS, times=None)
    report = exporter.run(request, run_id="quota")
    assert report.status == "pending" and report.error["type"] == "QuotaExceededError"
    checkpoint = exporter.load_checkpoint(run_folder(report))
    resume_after = datetime.fromisoformat(checkpoint.resume_after.replace("Z", "+00:00"))
    assert resume_after > datetime.now(UTC) and resume_after - datetime.now(UTC) < timedelta(
        days=1, minutes=1
    )
    assert (resume_after.hour, resume_after.minute) == (0, 0)
    sandbox.faults.clear()
    report = exporter.resume(run_folder(report))
    assert_exactly_once(sandbox, request, report)


def test_terminal_errors_fail_at_once_with_the_cause(tmp_path, sandbox, cc_client):
    sandbox.faults.respond(
        403, [{"error_key": "unauthorized", "error_message": "missing privilege"}], path=IMPORTS, times=None
    )
    report = make(tmp_path, cc_client).run(request_for(tmp_path, sandbox))
    assert report.status == "failed" and "contacts:write" in report.error["message"]
    assert sandbox.count("POST", IMPORTS) == 1


def test_expired_token_mid_run_is_refreshed_once(tmp_path, sandbox, cc_client):
    request = request_for(tmp_path, sandbox)
    exporter = make(tmp_path, cc_client)
    cc_client.tokens.access_token()
    sandbox.faults.expire_access_tokens()
    report = exporter.run(request)
    assert_exactly_once(sandbox, request, report)
    assert report.token_refreshes == 2


def test_read_timeout_is_retried_and_the_list_still_holds_everyone_once(tmp_path, sandbox, cc_client):
    from exporter.constant_contact import ConstantContactClient

    impatient = ConstantContactClient(replace(cc_client.settings, timeout_seconds=0.5), cc_client.tokens)
    sandbox.faults.delay(1.0, path=IMPORTS, times=1)
    request = request_for(tmp_path, sandbox)
    report = make(tmp_path, impatient).run(request)
    assert_exactly_once(sandbox, request, report)
    # The timed-out request was still processed by the server (as a real one would be): the retry is
    # the only way to know the chunk arrived, at the cost of one duplicate import of the same contacts.
    # (a retry landing in the same second as the late original may meet a real 429 and wait it out)
    answered = [r.status for r in sandbox.requests if r.path == IMPORTS and r.status != 429]
    assert len(answered) == 5 + 1 and report.retries >= 1


def test_a_stuck_activity_leaves_the_run_pending_and_the_rest_delivered(tmp_path, sandbox, cc_client):
    sandbox.faults.activities("stuck", times=1, path=IMPORTS)
    fast = replace(
        Settings(chunks=ChunkLimits(max_contacts=10)),
        api=replace(cc_client.settings, activity_timeout_seconds=1.0),
    )
    request = request_for(tmp_path, sandbox)
    report = make(tmp_path, cc_client, settings=fast).run(request)
    assert report.status == "pending" and report.delivered is None
    assert [a.state for a in report.activities].count("completed") == 4
    assert len(on_list(sandbox, request.list_id)) == 35  # the four finished chunks
