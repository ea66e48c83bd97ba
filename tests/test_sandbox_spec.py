"""Sandbox responses checked against the official Constant Contact v3 OpenAPI spec (via tests/spec.py).

The sandbox is only a useful stand-in if what it says is what the spec says CC says. Each test drives
the sandbox over HTTP and validates the recorded exchanges; the last tests show the validator itself
can fail, and pin the spec's own bugs so a fixed spec is noticed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, RecordedExchange, Sandbox, SandboxConfig
from tests.spec import SpecMismatch, requires_spec, validate_exchange, validate_request, validate_response

pytestmark = requires_spec

FAST = SandboxConfig(requests_per_second=None, daily_quota=None, activity_step_seconds=0.01)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(FAST) as box:
        yield box


@pytest.fixture
def api(sb: Sandbox) -> Iterator[httpx.Client]:
    token = sb.issue_access_token()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=sb.api_base_url, headers=headers, timeout=5) as client:
        yield client


def last(sb: Sandbox, method: str, path_prefix: str) -> RecordedExchange:
    """The most recent recorded exchange for method + path prefix."""
    return next(r for r in reversed(sb.requests) if r.method == method and r.path.startswith(path_prefix))


def finish(sb: Sandbox, api: httpx.Client, activity_id: str) -> dict[str, Any]:
    assert sb.wait_for_activities(5)
    body: dict[str, Any] = api.get(f"/activities/{activity_id}").json()
    return body


def test_token_and_device_responses_match_the_spec_schemas(sb: Sandbox) -> None:
    auth = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    refresh = sb.issue_refresh_token()
    httpx.post(
        f"{sb.oauth_base_url}/token",
        auth=auth,
        data={"grant_type": "refresh_token", "refresh_token": refresh},
    )
    sb.advance(1.1)
    httpx.post(
        f"{sb.oauth_base_url}/token",
        auth=auth,
        data={"grant_type": "refresh_token", "refresh_token": refresh},
    )
    ok, refused = [r for r in sb.requests if r.path.endswith("/token")]
    assert (ok.status, refused.status) == (200, 400)
    validate_exchange(ok)
    validate_exchange(refused)
    httpx.post(
        f"{sb.oauth_base_url}/device/authorize",
        data={"client_id": DEFAULT_CLIENT_ID, "scope": "contact_data"},
    )
    validate_response(last(sb, "POST", "/oauth2/default/v1/device/authorize"))


def test_list_endpoints_match_the_spec(sb: Sandbox, api: httpx.Client) -> None:
    list_id = api.post("/contact_lists", json={"name": "Spec", "description": "d", "favorite": False}).json()[
        "list_id"
    ]
    api.post("/contact_lists", json={"name": "Spec"})  # 409
    api.get("/contact_lists", params={"include_count": "true", "include_membership_count": "all", "limit": 1})
    api.get(f"/contact_lists/{list_id}", params={"include_membership_count": "active"})
    api.get("/contact_lists/3fa85f64-5717-4562-b3fc-2c963f66afa6")  # 404
    assert [r.status for r in sb.requests] == [201, 409, 200, 200, 404]
    for rec in sb.requests:
        validate_exchange(rec)


def test_import_201_and_activity_status_match_the_spec(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.create_custom_field("tier")
    sb.add_contact("gone@example.com", status="unsubscribed")
    rows = [
        {"email": "a@example.com", "first_name": "Ada", "last_name": "L", "cf:tier": "gold"},
        {"email": "gone@example.com"},
        {"email": "broken"},
    ]
    created = api.post("/activities/contacts_json_import", json={"import_data": rows, "list_ids": [list_id]})
    assert created.status_code == 201
    done = finish(sb, api, created.json()["activity_id"])
    assert done["state"] == "completed" and done["activity_errors"]
    api.get("/activities", params={"state": "completed", "limit": 10})
    for rec in sb.requests:
        validate_exchange(rec)


def test_contacts_and_custom_fields_match_the_spec(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.create_custom_field("tier")
    sb.add_contact("a@example.com", list_ids=[list_id], first_name="A", custom_fields={"tier": "x"})
    sb.add_contact("d@example.com", status="deleted")
    sb.add_contact("u@example.com", status="unsubscribed")
    api.post("/contact_custom_fields", json={"label": "Favorite color", "type": "string"})
    api.get("/contact_custom_fields")
    api.get("/contacts", params={"status": "all", "include": "custom_fields,list_memberships", "limit": 2})
    api.get("/contacts", params={"email": "a@example.com", "lists": list_id, "include_count": "true"})
    assert all(r.status in (200, 201) for r in sb.requests)
    for rec in sb.requests:
        validate_exchange(rec)


def test_contact_exports_csv_matches_the_spec(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.add_contact("a@example.com", list_ids=[list_id], first_name="A")
    created = api.post("/activities/contact_exports", json={"list_ids": [list_id], "status": "active"})
    done = finish(sb, api, created.json()["activity_id"])
    csv_reply = api.get(done["_links"]["results"]["href"].removeprefix("/v3"))
    assert csv_reply.status_code == 200 and "a@example.com" in csv_reply.text
    for rec in sb.requests:
        validate_exchange(rec)


def test_remove_list_memberships_response_matches_the_spec(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    cid = sb.add_contact("a@example.com", list_ids=[list_id])
    created = api.post(
        "/activities/remove_list_memberships", json={"source": {"contact_ids": [cid]}, "list_ids": [list_id]}
    )
    assert created.status_code == 201
    validate_response(last(sb, "POST", "/v3/activities/remove_list_memberships"))


def test_error_responses_match_the_documented_shapes() -> None:
    config = SandboxConfig(requests_per_second=1, daily_quota=3, max_queued_activities=1)
    with Sandbox(config) as sb:
        sb.faults.activities("stuck")
        token = sb.issue_access_token()
        with httpx.Client(base_url=sb.api_base_url, headers={"Authorization": f"Bearer {token}"}) as api:
            httpx.get(f"{sb.api_base_url}/contact_lists", headers={"Authorization": "Bearer expired"})  # 401
            api.get("/activities/3fa85f64-5717-4562-b3fc-2c963f66afa6")  # 404
            api.get("/contact_lists")  # 429 throttled (1 rps)
            sb.advance(1.1)
            list_id = sb.create_list("L")
            payload = {"import_data": [{"email": "a@example.com"}], "list_ids": [list_id]}
            api.post("/activities/contacts_json_import", json=payload)  # 201, stuck
            sb.advance(1.1)
            api.post("/activities/contacts_json_import", json=payload)  # 429 queued activities
            sb.advance(1.1)
            api.get("/contact_lists")  # 429 quota (3 spent)
    statuses = [r.status for r in sb.requests]
    assert statuses == [401, 404, 429, 201, 429, 429]
    for rec in sb.requests:
        validate_response(rec)


def test_spec_bug_remove_list_memberships_max_items_zero(sb: Sandbox, api: httpx.Client) -> None:
    """SPEC BUG (SPEC-CS and SPEC-PHPFUI): list_ids and source.contact_ids carry ``maxItems: 0``, so a
    valid request fails request validation. If this test starts failing, the spec was fixed."""
    list_id = sb.create_list("L")
    cid = sb.add_contact("a@example.com", list_ids=[list_id])
    api.post(
        "/activities/remove_list_memberships", json={"source": {"contact_ids": [cid]}, "list_ids": [list_id]}
    )
    with pytest.raises(SpecMismatch, match="expected to be empty"):
        validate_request(last(sb, "POST", "/v3/activities/remove_list_memberships"))


def test_spec_conflict_import_email_max_length_50(sb: Sandbox, api: httpx.Client) -> None:
    """CONFLICT: the import schema says email maxLength 50, the product accepts 80. The sandbox follows
    the product (email_max_length=80 by default); the spec check flags the longer address."""
    email = "x" * 60 + "@example.com"
    payload = {"import_data": [{"email": email}], "list_ids": [sb.create_list("L")]}
    assert api.post("/activities/contacts_json_import", json=payload).status_code == 201
    with pytest.raises(SpecMismatch, match="too long"):
        validate_request(last(sb, "POST", "/v3/activities/contacts_json_import"))


def _rec(path: str, status: int, body: bytes, method: str = "GET", **kw: Any) -> RecordedExchange:
    headers = {"Authorization": "Bearer t"}
    return RecordedExchange(
        method, path, "", headers, b"", status, {"Content-Type": "application/json"}, body, time.time(), **kw
    )


@pytest.mark.parametrize(
    ("rec", "why"),
    [
        (_rec("/v3/activities/3fa85f64-5717-4562-b3fc-2c963f66afa6", 200, b'{"state": 1}'), "not of type"),
        (_rec("/v3/contact_lists", 401, b'[{"error_key": "unauthorized"}]'), "single object"),
        (_rec("/v3/contact_lists", 404, b'{"error_key": "x", "error_message": "y"}'), "APIErrorSchema"),
        (_rec("/v3/contact_lists", 418, b'[{"error_key": "x", "error_message": "y"}]'), "not documented"),
        (_rec("/oauth2/default/v1/token", 200, b'{"token_type": "Bearer"}', "POST"), "lacks"),
        (_rec("/v3/contact_lists", None, b""), "reset"),  # type: ignore[arg-type]
        (_rec("/v3/nowhere", 200, b"{}"), "PathNotFound"),
    ],
)
def test_the_validator_rejects_mismatches(rec: RecordedExchange, why: str) -> None:
    with pytest.raises(SpecMismatch, match=why):
        validate_response(rec)


def test_the_validator_rejects_bad_requests() -> None:
    no_auth = RecordedExchange("GET", "/v3/contact_lists", "", {}, b"", 401)
    with pytest.raises(SpecMismatch, match="Bearer"):
        validate_request(no_auth)
    bad_limit = _rec("/v3/contact_lists", 200, b"{}")
    bad_limit = RecordedExchange(
        "GET", "/v3/contacts", "limit=501", bad_limit.headers, b"", 400, {}, b"", 0.0
    )
    with pytest.raises(SpecMismatch, match="limit"):
        validate_request(bad_limit)
    bad_csv = RecordedExchange(
        "GET", "/v3/contacts", "include=custom_fields,nope", bad_limit.headers, b"", 200
    )
    with pytest.raises(SpecMismatch, match="outside the enum"):
        validate_request(bad_csv)
    token_json = RecordedExchange(
        "POST", "/oauth2/default/v1/token", "", {"Content-Type": "application/json"}, b"{}", 400
    )
    with pytest.raises(SpecMismatch, match="x-www-form-urlencoded"):
        validate_request(token_json)
