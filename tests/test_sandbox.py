"""The sandbox behaves as the Constant Contact documentation says (facts: constant-contact-notes.md).

Every test talks HTTP to a real sandbox on 127.0.0.1 through httpx.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parents[1]
FINISHED = {"completed", "failed", "timed_out", "cancelled"}
BASIC = ("Basic", base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode())
THROTTLED = {"error_key": "throttled", "error_message": "Too Many Requests"}
QUOTA = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
UNAUTHORIZED = {"error_key": "unauthorized", "error_message": "Unauthorized"}
INVALID_REFRESH = {"error": "invalid_grant", "error_description": "The refresh token is invalid or expired."}

FAST = SandboxConfig(requests_per_second=None, daily_quota=None, activity_step_seconds=0.01)


def start(config: SandboxConfig = FAST) -> Sandbox:
    sb = Sandbox(config)
    sb.start()
    return sb


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(FAST) as box:
        yield box


@pytest.fixture
def api(sb: Sandbox) -> Iterator[httpx.Client]:
    with authed(sb) as client:
        yield client


def authed(sb: Sandbox, timeout: float = 5) -> httpx.Client:
    token = sb.issue_access_token()
    return httpx.Client(
        base_url=sb.api_base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    )


def token_call(sb: Sandbox, data: dict[str, str], auth: str | None = " ".join(BASIC)) -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    return httpx.post(f"{sb.oauth_base_url}/token", data=data, headers=headers, timeout=5)


def import_(api: httpx.Client, rows: list[dict[str, Any]], list_ids: list[str]) -> dict[str, Any]:
    r = api.post("/activities/contacts_json_import", json={"import_data": rows, "list_ids": list_ids})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def wait(api: httpx.Client, activity_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/activities/{activity_id}").json()
        if body["state"] in FINISHED:
            return body
        time.sleep(0.01)
    raise AssertionError(f"activity {activity_id} did not finish")


# -- OAuth -----------------------------------------------------------------------------------------
def test_refresh_grant_rotates_and_refuses_the_used_token(sb: Sandbox) -> None:
    first = sb.issue_refresh_token()
    r = token_call(sb, {"grant_type": "refresh_token", "refresh_token": first})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86_400  # relative seconds
    assert body["scope"] == "contact_data offline_access"
    assert body["refresh_token"] != first
    assert r.headers["Cache-Control"] == "no-store"

    sb.advance(1.1)  # the token endpoint allows 1 request/s per client
    reused = token_call(sb, {"grant_type": "refresh_token", "refresh_token": first})
    assert (reused.status_code, reused.json()) == (400, INVALID_REFRESH)

    sb.advance(1.1)
    again = token_call(sb, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert again.status_code == 200
    assert httpx.get(
        f"{sb.api_base_url}/contact_lists",
        headers={"Authorization": f"Bearer {again.json()['access_token']}"},
    ).is_success


def test_long_lived_refresh_token_is_returned_unchanged_and_stays_valid() -> None:
    with Sandbox(SandboxConfig(rotate_refresh_tokens=False)) as sb:
        token = sb.issue_refresh_token()
        for _ in range(2):
            r = token_call(sb, {"grant_type": "refresh_token", "refresh_token": token})
            assert r.status_code == 200
            assert r.json()["refresh_token"] == token
            sb.advance(1.1)


def test_refresh_token_expires_after_180_idle_days(sb: Sandbox) -> None:
    token = sb.issue_refresh_token()
    sb.advance(181 * 86_400)
    r = token_call(sb, {"grant_type": "refresh_token", "refresh_token": token})
    assert (r.status_code, r.json()) == (400, INVALID_REFRESH)


def test_bad_client_credentials_are_401_invalid_client(sb: Sandbox) -> None:
    token = sb.issue_refresh_token()
    wrong = "Basic " + base64.b64encode(f"{DEFAULT_CLIENT_ID}:nope".encode()).decode()
    r = token_call(sb, {"grant_type": "refresh_token", "refresh_token": token}, auth=wrong)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    sb.advance(1.1)
    # A confidential grant cannot be refreshed without the secret.
    r = token_call(
        sb, {"grant_type": "refresh_token", "refresh_token": token, "client_id": DEFAULT_CLIENT_ID}, None
    )
    assert r.status_code == 401


def test_refresh_token_only_with_offline_access(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match="offline_access"):
        sb.issue_refresh_token(scope="contact_data")
    redirect = "http://localhost:8123/cb"
    r = httpx.get(
        f"{sb.oauth_base_url}/authorize",
        params={
            "client_id": DEFAULT_CLIENT_ID,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "contact_data",
            "state": "s1",
        },
    )
    code = httpx.URL(r.headers["Location"]).params["code"]
    body = token_call(sb, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}).json()
    assert "access_token" in body
    assert "refresh_token" not in body


def test_authorization_code_with_pkce_single_use(sb: Sandbox) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://localhost:8123/callback"
    r = httpx.get(
        f"{sb.oauth_base_url}/authorize",
        params={
            "client_id": DEFAULT_CLIENT_ID,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "contact_data offline_access",
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert r.status_code == 302
    location = httpx.URL(r.headers["Location"])
    assert str(location).startswith(redirect) and location.params["state"] == "xyz"
    code = location.params["code"]
    public = "Basic " + base64.b64encode(DEFAULT_CLIENT_ID.encode()).decode()  # PKCE: no secret
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
    bad = token_call(sb, form | {"code_verifier": "w" * 50}, auth=public)
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
    sb.advance(1.1)
    # The failed attempt burnt the code: codes are single use.
    burnt = token_call(sb, form | {"code_verifier": verifier}, auth=public)
    assert burnt.json()["error"] == "invalid_grant"


def test_authorization_code_expires_after_five_minutes(sb: Sandbox) -> None:
    redirect = "http://localhost:8123/cb"
    params = {
        "client_id": DEFAULT_CLIENT_ID,
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": "contact_data offline_access",
    }
    fresh = httpx.URL(httpx.get(f"{sb.oauth_base_url}/authorize", params=params).headers["Location"])
    stale = httpx.URL(httpx.get(f"{sb.oauth_base_url}/authorize", params=params).headers["Location"])
    ok = token_call(
        sb, {"grant_type": "authorization_code", "code": fresh.params["code"], "redirect_uri": redirect}
    )
    assert ok.status_code == 200 and "refresh_token" in ok.json()
    sb.advance(301)
    late = token_call(
        sb, {"grant_type": "authorization_code", "code": stale.params["code"], "redirect_uri": redirect}
    )
    assert (late.status_code, late.json()["error"]) == (400, "invalid_grant")


def test_device_flow_pending_until_approved(sb: Sandbox) -> None:
    r = httpx.post(
        f"{sb.oauth_base_url}/device/authorize",
        data={"client_id": DEFAULT_CLIENT_ID, "scope": "contact_data offline_access"},
    )
    assert r.status_code == 200
    device = r.json()
    assert {"device_code", "user_code", "verification_uri", "expires_in", "interval"} <= device.keys()
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device["device_code"],
        "client_id": DEFAULT_CLIENT_ID,
    }
    pending = token_call(sb, form, auth=None)
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    sb.approve_device(device["user_code"])
    sb.advance(1.1)
    done = token_call(sb, form, auth=None)
    assert done.status_code == 200
    assert {"access_token", "refresh_token"} <= done.json().keys()
    # The verification page plays the person: opening it approves the device.
    other = httpx.post(
        f"{sb.oauth_base_url}/device/authorize",
        data={"client_id": DEFAULT_CLIENT_ID, "scope": "contact_data"},
    )
    assert httpx.get(other.json()["verification_uri_complete"]).status_code == 200
    sb.advance(1.1)
    approved = token_call(sb, form | {"device_code": other.json()["device_code"]}, auth=None)
    assert approved.status_code == 200 and "refresh_token" not in approved.json()  # no offline_access


def test_token_endpoint_allows_one_request_per_second(sb: Sandbox) -> None:
    token = sb.issue_refresh_token()
    first = token_call(sb, {"grant_type": "refresh_token", "refresh_token": token})
    second = token_call(sb, {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]})
    assert first.status_code == 200
    assert second.status_code == 429


def test_expired_access_token_is_401_single_object() -> None:
    with Sandbox(SandboxConfig(access_token_ttl=60)) as sb:
        r = token_call(sb, {"grant_type": "refresh_token", "refresh_token": sb.issue_refresh_token()})
        assert r.json()["expires_in"] == 60
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert httpx.get(f"{sb.api_base_url}/contact_lists", headers=headers).status_code == 200
        sb.advance(61)
        expired = httpx.get(f"{sb.api_base_url}/contact_lists", headers=headers)
        assert (expired.status_code, expired.json()) == (401, UNAUTHORIZED)
        missing = httpx.get(f"{sb.api_base_url}/contact_lists")
        assert (missing.status_code, missing.json()) == (401, UNAUTHORIZED)


def test_access_token_is_a_decodable_jwt_with_exp(sb: Sandbox) -> None:
    token = sb.issue_access_token()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["cid"] == DEFAULT_CLIENT_ID
    assert claims["exp"] - claims["iat"] == 86_400


# -- lists, custom fields, contacts ----------------------------------------------------------------
def test_contact_lists_create_conflict_and_lookup(api: httpx.Client) -> None:
    created = api.post("/contact_lists", json={"name": "Segment A", "description": "d", "favorite": True})
    assert created.status_code == 201
    list_id = created.json()["list_id"]
    dup = api.post("/contact_lists", json={"name": "Segment A"})
    assert dup.status_code == 409
    assert dup.json()[0]["error_key"] == "contacts.api.conflict"
    found = api.get("/contact_lists", params={"name": "Segment A", "include_count": "true"}).json()
    assert [x["list_id"] for x in found["lists"]] == [list_id] and found["lists_count"] == 1
    assert api.get(f"/contact_lists/{list_id}").json()["name"] == "Segment A"
    assert api.get("/contact_lists/3fa85f64-5717-4562-b3fc-2c963f66afa6").status_code == 404
    bad = api.get("/contact_lists/not-a-uuid")
    assert bad.status_code == 404 and bad.json()[0]["error_key"] == "contacts.api.not_found"


def test_custom_field_name_is_label_with_underscores(api: httpx.Client) -> None:
    r = api.post("/contact_custom_fields", json={"label": "Favorite color", "type": "string"})
    assert r.status_code == 201 and r.json()["name"] == "Favorite_color"
    dup = api.post("/contact_custom_fields", json={"label": "Favorite color", "type": "string"})
    assert dup.status_code == 409
    names = [f["name"] for f in api.get("/contact_custom_fields").json()["custom_fields"]]
    assert names == ["Favorite_color"]


def test_get_contacts_filters_and_pages(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.add_contact("a@example.com", list_ids=[list_id])
    sb.add_contact("b@example.com", status="unsubscribed")
    sb.add_contact("c@example.com", status="deleted")
    default = api.get("/contacts").json()["contacts"]
    assert {c["email_address"]["address"] for c in default} == {"a@example.com", "b@example.com"}
    everyone = api.get("/contacts", params={"status": "all", "limit": 2, "include_count": "true"}).json()
    assert everyone["contacts_count"] == 3 and len(everyone["contacts"]) == 2
    rest = api.get(everyone["_links"]["next"]["href"].removeprefix("/v3")).json()
    assert [c["email_address"]["address"] for c in rest["contacts"]] == ["c@example.com"]
    one = api.get("/contacts", params={"email": "A@Example.com", "include": "list_memberships"}).json()
    assert one["contacts"][0]["list_memberships"] == [list_id]
    by_list = api.get("/contacts", params={"lists": list_id}).json()["contacts"]
    assert [c["email_address"]["address"] for c in by_list] == ["a@example.com"]


# -- contacts_json_import --------------------------------------------------------------------------
def test_import_accepts_40000_contacts_and_refuses_40001(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("Big")
    rows = [{"email": f"u{i}@example.com"} for i in range(40_001)]
    refused = api.post("/activities/contacts_json_import", json={"import_data": rows, "list_ids": [list_id]})
    assert refused.status_code == 400
    assert "40000" in refused.json()[0]["error_message"]
    accepted = api.post(
        "/activities/contacts_json_import", json={"import_data": rows[:40_000], "list_ids": [list_id]}
    )
    assert accepted.status_code == 201
    assert accepted.json()["status"]["items_total_count"] == 40_000


def test_import_body_beyond_max_bytes_is_dropped_so_the_request_fails() -> None:
    with Sandbox(SandboxConfig(max_body_bytes=2_000, requests_per_second=None)) as sb, authed(sb) as api:
        list_id = sb.create_list("L")
        rows = [{"email": f"user{i}@example.com", "first_name": "A"} for i in range(60)]
        body = orjson.dumps({"list_ids": [list_id], "import_data": rows})
        assert len(body) > 2_000
        r = api.post(
            "/activities/contacts_json_import", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400
        assert "2000 bytes" in r.json()[0]["error_message"]
        assert sb.contact("user0@example.com") is None  # nothing was imported
        # Faithful truncation: what survives the first max_body_bytes is what counts.
        small = orjson.dumps({"list_ids": [list_id], "import_data": rows[:5]})
        padded = small + b" " * (2_500 - len(small))
        ok = api.post(
            "/activities/contacts_json_import", content=padded, headers={"Content-Type": "application/json"}
        )
        assert ok.status_code == 201 and ok.json()["status"]["items_total_count"] == 5


def test_json_endpoints_need_application_json(api: httpx.Client, sb: Sandbox) -> None:
    body = orjson.dumps({"import_data": [{"email": "a@example.com"}], "list_ids": [sb.create_list("L")]})
    r = api.post("/activities/contacts_json_import", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and isinstance(r.json(), list)
    r = api.post("/contact_lists", content=b'{"name":"x"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize(
    ("list_ids", "status"),
    [(None, 400), ([], 400), (["nope"], 400), (["3fa85f64-5717-4562-b3fc-2c963f66afa6"], 400)],
)
def test_import_list_ids_are_validated(api: httpx.Client, list_ids: Any, status: int) -> None:
    payload: dict[str, Any] = {"import_data": [{"email": "a@example.com"}]}
    if list_ids is not None:
        payload["list_ids"] = list_ids
    r = api.post("/activities/contacts_json_import", json=payload)
    assert r.status_code == status and r.json()[0]["error_key"] == "contacts.api.validation.error"


def test_activity_goes_initialized_processing_completed() -> None:
    config = SandboxConfig(requests_per_second=None, activity_step_seconds=0.15)
    with Sandbox(config) as sb, authed(sb) as api:
        created = import_(
            api, [{"email": "a@example.com"}, {"email": "b@example.com"}], [sb.create_list("L")]
        )
        assert created["state"] == "initialized" and created["percent_done"] == 0
        assert created["_links"]["self"]["href"] == f"/v3/activities/{created['activity_id']}"
        seen = [created["state"]]
        while seen[-1] != "completed":
            state = api.get(f"/activities/{created['activity_id']}").json()["state"]
            if state != seen[-1]:
                seen.append(state)
            time.sleep(0.02)
        assert seen == ["initialized", "processing", "completed"]
        final = api.get(f"/activities/{created['activity_id']}").json()
        assert final["percent_done"] == 100
        assert final["status"]["items_completed_count"] == final["status"]["items_total_count"] == 2
        assert "started_at" in final and "completed_at" in final


def test_unknown_activity_is_404_array(api: httpx.Client) -> None:
    r = api.get("/activities/3fa85f64-5717-4562-b3fc-2c963f66afa6")
    assert r.status_code == 404 and r.json()[0]["error_key"] == "contacts.api.not_found"


def test_unsubscribed_contact_is_not_added_and_stays_unsubscribed(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.add_contact("gone@example.com", status="unsubscribed")
    done = wait(
        api,
        import_(api, [{"email": "gone@example.com"}, {"email": "new@example.com"}], [list_id])["activity_id"],
    )
    assert done["state"] == "completed"
    assert done["status"]["cannot_add_to_list_count"] == 1
    assert [m["email_address"] for m in sb.list_members(list_id)] == ["new@example.com"]
    gone = sb.contact("gone@example.com")
    assert gone is not None
    assert gone["status"] == gone["permission_to_send"] == "unsubscribed"
    assert gone["list_ids"] == []


def test_duplicates_in_one_import_last_entry_wins(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    rows = [
        {"email": "dup@example.com", "first_name": "First", "last_name": "One"},
        {"email": "other@example.com"},
        {"email": "dup@example.com", "first_name": "Last"},
    ]
    done = wait(api, import_(api, rows, [list_id])["activity_id"])
    assert done["status"]["person_count"] == 2
    dup = sb.contact("dup@example.com")
    assert dup is not None and dup["first_name"] == "Last" and dup["last_name"] is None
    assert len(sb.list_members(list_id)) == 2


def test_import_row_rules() -> None:
    config = SandboxConfig(requests_per_second=None, activity_step_seconds=0.01, email_max_length=50)
    with Sandbox(config) as sb, authed(sb) as api:
        list_id = sb.create_list("L")
        sb.create_custom_field("tier")
        sb.add_contact("kept@example.com", first_name="Keep", last_name="Me")
        sb.add_contact("revived@example.com", status="deleted")
        long_email = "x" * 39 + "@example.com"  # 51 characters
        rows = [
            {"email": "not-an-email"},
            {"email": long_email},
            {"email": "longname@example.com", "first_name": "n" * 51},
            {"email": "cf@example.com", "cf:nope": "x"},
            {"first_name": "No Email"},
            {"email": "kept@example.com", "last_name": "Changed", "cf:tier": "gold"},
            {"email": "revived@example.com"},
            {"email": "fresh@example.com", "first_name": "", "cf:tier": "silver"},
        ]
        done = wait(api, import_(api, rows, [list_id])["activity_id"])
        status = done["status"]
        assert status["correctable_count"] == 4
        assert status["error_count"] == 1
        assert status["person_count"] == 3
        errors = " | ".join(done["activity_errors"])
        for email in ("not-an-email", long_email, "longname@example.com", "cf@example.com"):
            assert email in errors
        assert "Invalid email address: not-an-email" in done["activity_errors"]
        kept = sb.contact("kept@example.com")
        assert kept is not None
        assert (kept["first_name"], kept["last_name"]) == ("Keep", "Changed")
        assert kept["custom_fields"] == {"tier": "gold"}
        assert kept["permission_to_send"] == "implicit"
        revived = sb.contact("revived@example.com")
        assert revived is not None and revived["status"] == "active" and revived["list_ids"] == [list_id]
        fresh = sb.contact("fresh@example.com")
        assert fresh is not None
        assert (fresh["permission_to_send"], fresh["opt_in_source"]) == ("implicit", "Account")
        assert fresh["first_name"] is None and fresh["custom_fields"] == {"tier": "silver"}
        assert sb.contact("not-an-email") is None and sb.contact(long_email) is None
        members = {m["email_address"] for m in sb.list_members(list_id)}
        assert members == {"kept@example.com", "revived@example.com", "fresh@example.com"}


def test_contact_exports_csv_round_trip(sb: Sandbox, api: httpx.Client) -> None:
    list_id = sb.create_list("L")
    sb.create_custom_field("tier")
    rows = [
        {"email": f"p{i}@example.com", "first_name": f"F{i}", "last_name": "Ł", "cf:tier": "gold"}
        for i in range(3)
    ]
    wait(api, import_(api, rows, [list_id])["activity_id"])
    sb.add_contact("elsewhere@example.com")
    created = api.post("/activities/contact_exports", json={"list_ids": [list_id]})
    assert created.status_code == 201
    done = wait(api, created.json()["activity_id"])
    href = done["_links"]["results"]["href"]
    assert href == f"/v3/contact_exports/{done['activity_id']}"
    r = api.get(href.removeprefix("/v3"))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0])[:3] == ["email_address", "first_name", "last_name"]
    got = [
        {
            "email": t["email_address"],
            "first_name": t["first_name"],
            "last_name": t["last_name"],
            "cf:tier": t["cf:tier"],
        }
        for t in table
    ]
    assert got == rows
    assert done["status"]["items_total_count"] == 3
    picked = wait(
        api,
        api.post(
            "/activities/contact_exports", json={"list_ids": [list_id], "fields": ["email_address"]}
        ).json()["activity_id"],
    )
    text = api.get(picked["_links"]["results"]["href"].removeprefix("/v3")).text
    assert text.splitlines()[0] == "email_address" and len(text.splitlines()) == 4


def test_export_file_is_404_until_the_activity_completes() -> None:
    with Sandbox(SandboxConfig(requests_per_second=None, activity_step_seconds=0.3)) as sb, authed(sb) as api:
        created = api.post("/activities/contact_exports", json={"list_ids": [sb.create_list("L")]}).json()
        assert api.get(f"/contact_exports/{created['activity_id']}").status_code == 404
        wait(api, created["activity_id"])
        assert api.get(f"/contact_exports/{created['activity_id']}").status_code == 200


def test_remove_list_memberships_only_removes_membership(sb: Sandbox, api: httpx.Client) -> None:
    keep, drop = sb.create_list("Keep"), sb.create_list("Drop")
    cid = sb.add_contact("a@example.com", list_ids=[keep, drop])
    r = api.post(
        "/activities/remove_list_memberships", json={"source": {"contact_ids": [cid]}, "list_ids": [drop]}
    )
    assert r.status_code == 201 and r.json()["status"]["list_count"] == 1
    wait(api, r.json()["activity_id"])
    assert sb.list_members(drop) == []
    contact = sb.contact("a@example.com")
    assert contact is not None and contact["status"] == "active" and contact["list_ids"] == [keep]
    too_many = api.post(
        "/activities/remove_list_memberships",
        json={"source": {"contact_ids": [cid] * 501}, "list_ids": [drop]},
    )
    assert too_many.status_code == 400


# -- limits ----------------------------------------------------------------------------------------
def test_four_requests_per_second_then_throttled() -> None:
    with Sandbox(SandboxConfig(requests_per_second=4, daily_quota=None)) as sb, authed(sb) as api:
        codes = [api.get("/contact_lists").status_code for _ in range(4)]
        throttled = api.get("/contact_lists")
        assert codes == [200] * 4
        assert (throttled.status_code, throttled.json()) == (429, THROTTLED)
        assert "Retry-After" not in throttled.headers  # none documented
        sb.advance(1.01)
        assert api.get("/contact_lists").status_code == 200


def test_rate_limit_is_per_client_id_not_per_token() -> None:
    config = SandboxConfig(requests_per_second=2, clients={"app-a": "s", "app-b": "s"})
    with (
        Sandbox(config) as sb,
        authed_for(sb, "app-a") as a1,
        authed_for(sb, "app-a") as a2,
        authed_for(sb, "app-b") as b,
    ):
        assert [a1.get("/contact_lists").status_code, a2.get("/contact_lists").status_code] == [200, 200]
        assert a1.get("/contact_lists").status_code == 429
        assert b.get("/contact_lists").status_code == 200


def authed_for(sb: Sandbox, client_id: str) -> httpx.Client:
    token = sb.issue_access_token(client_id)
    return httpx.Client(base_url=sb.api_base_url, headers={"Authorization": f"Bearer {token}"})


def test_daily_quota_resets_at_midnight_utc() -> None:
    with Sandbox(SandboxConfig(requests_per_second=None, daily_quota=3)) as sb:
        sb.set_now(datetime(2030, 5, 1, 23, 59, 58, tzinfo=UTC))
        api = authed(sb)
        assert [api.get("/contact_lists").status_code for _ in range(3)] == [200] * 3
        over = api.get("/contact_lists")
        assert (over.status_code, over.json()) == (429, QUOTA)
        assert sb.quota_used() == 3
        sb.set_now(datetime(2030, 5, 2, 0, 0, 1, tzinfo=UTC))
        assert api.get("/contact_lists").status_code == 200


def test_queued_activities_limit_is_429() -> None:
    with Sandbox(SandboxConfig(requests_per_second=None, max_queued_activities=2)) as box, authed(box) as api:
        box.faults.activities("stuck", times=2)
        list_id = box.create_list("L")
        for _ in range(2):
            import_(api, [{"email": "a@example.com"}], [list_id])
        r = api.post(
            "/activities/contacts_json_import",
            json={"import_data": [{"email": "a@example.com"}], "list_ids": [list_id]},
        )
        assert r.status_code == 429
        assert r.json()["error_message"] == (
            "Too many requests. You exceeded 2 queued activities for this user account."
        )


# -- fault injection -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503])
def test_fault_respond_once(sb: Sandbox, api: httpx.Client, status: int) -> None:
    sb.faults.respond(
        status, [{"error_key": "server_error", "error_message": "boom"}], path="/v3/contact_lists"
    )
    assert api.get("/contact_lists").status_code == status
    assert api.get("/contact_lists").status_code == 200
    assert sb.requests[-2].fault == "respond"


def test_fault_throttle_with_and_without_retry_after(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.throttle(retry_after=2)
    sb.faults.throttle()
    sb.faults.quota_exceeded()
    first, second, third = api.get("/contact_lists"), api.get("/contact_lists"), api.get("/contact_lists")
    assert (first.status_code, first.json(), first.headers["Retry-After"]) == (429, THROTTLED, "2")
    assert second.status_code == 429 and "Retry-After" not in second.headers
    assert (third.status_code, third.json()) == (429, QUOTA)
    assert api.get("/contact_lists").status_code == 200


def test_fault_matches_method_and_path_prefix_n_times(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.respond(500, method="POST", path="/v3/activities", times=2)
    assert api.get("/activities").status_code == 200
    list_id = sb.create_list("L")
    payload = {"import_data": [{"email": "a@example.com"}], "list_ids": [list_id]}
    codes = [api.post("/activities/contacts_json_import", json=payload).status_code for _ in range(3)]
    assert codes == [500, 500, 201]
    assert sb.faults.pending() == []


def test_fault_reset_closes_without_answer(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.reset(path="/v3/contact_lists")
    with pytest.raises(httpx.TransportError):
        api.get("/contact_lists")
    assert sb.requests[-1].status is None and sb.requests[-1].fault == "reset"
    assert api.get("/contact_lists").status_code == 200


def test_fault_reset_after_processing_still_changes_state(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.reset(method="POST", path="/v3/contact_lists", after=True)
    with pytest.raises(httpx.TransportError):
        api.post("/contact_lists", json={"name": "Made anyway"})
    assert api.post("/contact_lists", json={"name": "Made anyway"}).status_code == 409


def test_fault_delay_causes_a_read_timeout(sb: Sandbox) -> None:
    sb.faults.delay(0.6, path="/v3/contact_lists")
    with authed(sb, timeout=0.2) as api:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            api.get("/contact_lists")
        assert time.monotonic() - started < 0.5
    assert sb.count("GET", "/v3/contact_lists") == 1


def test_fault_expire_access_tokens(sb: Sandbox, api: httpx.Client) -> None:
    assert api.get("/contact_lists").status_code == 200
    assert sb.faults.expire_access_tokens() >= 1
    r = api.get("/contact_lists")
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "cancelled"])
def test_fault_activity_ends_badly_and_applies_nothing(sb: Sandbox, api: httpx.Client, outcome: Any) -> None:
    list_id = sb.create_list("L")
    sb.faults.activities(outcome)
    done = wait(api, import_(api, [{"email": "a@example.com"}], [list_id])["activity_id"])
    assert done["state"] == outcome
    assert sb.list_members(list_id) == [] and sb.contact("a@example.com") is None
    again = wait(api, import_(api, [{"email": "a@example.com"}], [list_id])["activity_id"])
    assert again["state"] == "completed"


def test_fault_activity_stuck_stays_processing(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.activities("stuck", path="/v3/activities/contacts_json_import")
    activity_id = import_(api, [{"email": "a@example.com"}], [sb.create_list("L")])["activity_id"]
    assert sb.wait_for_activities(2)
    time.sleep(0.05)
    assert api.get(f"/activities/{activity_id}").json()["state"] == "processing"


def test_journal_and_counter(sb: Sandbox, api: httpx.Client) -> None:
    api.post("/contact_lists", json={"name": "J"})
    api.get("/contact_lists")
    api.get("/contact_lists", params={"name": "J"})
    assert sb.count("GET", "/v3/contact_lists") == 2
    assert sb.count("*", "/v3/contact_lists") == 3
    post = sb.requests[0]
    assert (post.method, post.path, post.status) == ("POST", "/v3/contact_lists", 201)
    assert post.json() == {"name": "J"} and post.response_json()["name"] == "J"
    assert post.headers["Authorization"].startswith("Bearer ")
    assert sb.requests[-1].args == {"name": ["J"]}


# -- the standalone process ------------------------------------------------------------------------
def test_cli_prints_connection_line_and_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "sandbox", "--port", "0", "--state-file", str(state)]
    cmd += ["--email-max-length", "50", "--activity-step-seconds", "0.01"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run_once(action: Any) -> Any:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = json.loads(proc.stdout.readline())
            return action(line)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0

    def create(line: dict[str, Any]) -> None:
        assert line["client_id"] == DEFAULT_CLIENT_ID and DEFAULT_CLIENT_SECRET not in json.dumps(line)
        r = httpx.post(
            f"{line['oauth_base_url']}/token",
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
            data={"grant_type": "refresh_token", "refresh_token": line["refresh_token"]},
        )
        token = r.json()["access_token"]
        made = httpx.post(
            f"{line['api_base_url']}/contact_lists",
            json={"name": "Persisted"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert made.status_code == 201

    def read(line: dict[str, Any]) -> list[str]:
        r = httpx.post(
            f"{line['oauth_base_url']}/token",
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
            data={"grant_type": "refresh_token", "refresh_token": line["refresh_token"]},
        )
        lists = httpx.get(
            f"{line['api_base_url']}/contact_lists",
            headers={"Authorization": f"Bearer {r.json()['access_token']}"},
        ).json()["lists"]
        return [x["name"] for x in lists]

    run_once(create)
    assert state.exists()
    assert run_once(read) == ["Persisted"]
