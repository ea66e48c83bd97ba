"""``python -m exporter connections ...`` and ``exports ...`` against Azurite, a file secret store and the
sandbox: the same storage and secrets the Functions app reads."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter import functions
from exporter.cli import main
from sandbox import Sandbox
from tests.azurite import FLAGS, start_azurite
from tests.management_world import APP_A, SEGMENT, follow_authorize, sandbox_config


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config()) as sandbox:
        yield sandbox


@pytest.fixture
def env(monkeypatch, tmp_path, azurite, sb) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    values = {
        "EXPORTER_STORAGE": azurite.connection_string,
        "SEGMENTS_CONTAINER": f"segments-{suffix}",
        "RESULTS_CONTAINER": f"results-{suffix}",
        "STATE_CONTAINER": f"state-{suffix}",
        "EXPORTER_SECRET_STORE": "file",
        "EXPORTER_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "CC_API_BASE_URL": sb.api_base_url,
        "CC_OAUTH_BASE_URL": sb.oauth_base_url,
        "CC_POLL_INTERVAL_SECONDS": "0.02",
        "CC_POLL_INTERVAL_MAX_SECONDS": "0.1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def in_background(argv: list[str]) -> tuple[threading.Thread, io.StringIO, dict[str, object]]:
    """Run the CLI on a thread (it waits for a person); returns the thread, its stderr and its result."""
    out, err = io.StringIO(), io.StringIO()
    result: dict[str, object] = {}

    def target() -> None:
        result["code"] = main(argv, stdout=out, stderr=err, stdin=io.StringIO())
        result["out"] = out.getvalue()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, err, result


def wait_for(pattern: str, stream: io.StringIO, timeout: float = 15) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, stream.getvalue())
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} never appeared in: {stream.getvalue()}")


def secrets_of(env: dict[str, str]) -> dict[str, str]:
    path = Path(env["EXPORTER_SECRETS_FILE"])
    return json.loads(path.read_text()) if path.exists() else {}


def create_acme(*extra: str) -> dict:
    code, out, err = cli(
        "connections",
        "create",
        "acme",
        "--client-id",
        APP_A[0],
        "--client-secret-stdin",
        *extra,
        stdin=APP_A[1] + "\n",
    )
    assert code == 0, err
    return json.loads(out)


def test_device_flow_connects_a_headless_machine(env, sb):
    created = create_acme("--acknowledge-privacy", "--share-user", "carol@contoso.com")
    assert created["status"] == "not_connected" and created["created_by"].startswith("cli:")
    assert secrets_of(env)["cc-acme-client-secret"] == APP_A[1]
    thread, err, result = in_background(["connections", "authorize", "acme", "--device"])
    shown = wait_for(r"open (\S+) and enter the code (\w+)", err)
    assert shown.group(1) == f"{sb.base_url}/activate"
    wait_for(r"Waiting up to \d+ s", err)
    time.sleep(1.2)  # let it poll once before the person approves: authorization_pending
    sb.approve_device(shown.group(2))
    thread.join(timeout=20)
    assert result.get("code") == 0, err.getvalue()
    assert json.loads(str(result["out"]))["status"] == "connected"
    stored = secrets_of(env)
    assert stored["cc-acme-refresh-token"] and stored["cc-acme-refresh-token"] not in err.getvalue()
    device_polls = [r for r in sb.requests if r.path.endswith("/token")]
    assert len(device_polls) >= 2 and b"authorization_pending" in device_polls[0].response_body
    assert all(b"device_code" in r.body and b"client_secret" not in r.body for r in device_polls)
    code, out, _ = cli("connections", "show", "acme")
    assert code == 0 and json.loads(out)["connected_by"].startswith("cli:")


def test_a_denied_device_flow_fails_with_exit_1(env, sb):
    create_acme()
    thread, err, result = in_background(["connections", "authorize", "acme", "--device"])
    sb.approve_device(wait_for(r"enter the code (\w+)", err).group(1), approve=False)
    thread.join(timeout=20)
    assert result.get("code") == 1 and "denied" in err.getvalue()
    assert "cc-acme-refresh-token" not in secrets_of(env)


def test_the_device_flow_waits_no_longer_than_timeout(env, sb):
    create_acme()
    thread, err, result = in_background(["connections", "authorize", "acme", "--device", "--timeout", "1.5"])
    wait_for(r"Waiting up to 1 s for the approval", err)
    thread.join(timeout=20)  # no one approves
    assert not thread.is_alive() and result.get("code") == 1
    assert "no one approved the device code in time" in err.getvalue()
    assert "cc-acme-refresh-token" not in secrets_of(env)


def test_browser_flow_redirects_to_a_loopback_port(env, sb):
    create_acme()
    thread, err, result = in_background(
        ["connections", "authorize", "acme", "--port", "0", "--timeout", "20"]
    )
    url = wait_for(r"(http://127\.0\.0\.1:\d+/oauth2/default/v1/authorize\?\S+)", err).group(1)
    back = follow_authorize(url)
    assert re.match(r"http://127\.0\.0\.1:\d+/callback\?", back["url"])
    assert httpx.get(back["url"].replace("state=", "state=x"), timeout=5).status_code == 400  # forged state
    assert httpx.get(back["url"], timeout=5).status_code == 200
    thread.join(timeout=20)
    assert result.get("code") == 0, err.getvalue()
    assert secrets_of(env)["cc-acme-refresh-token"]
    assert back["code"] not in err.getvalue()


def _connected(env: dict[str, str], sb: Sandbox, *extra: str) -> None:
    create_acme(*extra)
    thread, err, result = in_background(["connections", "authorize", "acme", "--device"])
    sb.approve_device(wait_for(r"enter the code (\w+)", err).group(1))
    thread.join(timeout=20)
    assert result.get("code") == 0, err.getvalue()


def _segment(env: dict[str, str]) -> None:
    functions.reset()
    svc = functions.service()  # the app's containers, from the same settings
    svc.blob_service.get_container_client(env["SEGMENTS_CONTAINER"]).upload_blob(
        "m.csv", SEGMENT, overwrite=True
    )
    functions.reset()


def test_exports_put_run_list_show_delete(env, sb, tmp_path):
    _connected(env, sb, "--acknowledge-privacy")
    _segment(env)
    sb.create_custom_field("tier")
    list_id = sb.create_list("CLI")
    config = tmp_path / "export.json"
    mapping = {"email": "EMail", "fields": {"cf:tier": "Tier"}}
    config.write_text(
        json.dumps({"connection": "acme", "list_id": list_id, "mapping": mapping, "segments": ["m.csv"]})
    )
    code, out, err = cli("exports", "put", "news", "--file", str(config))
    assert code == 0 and json.loads(out)["name"] == "news", err
    code, out, err = cli("exports", "run", "news", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "completed" and report["trigger"] == "cli" and report["delivered"] == 3
    assert len(sb.list_members(list_id)) == 3
    assert [e["name"] for e in json.loads(cli("exports", "list")[1])["exports"]] == ["news"]
    assert json.loads(cli("exports", "show", "news")[1])["list_id"] == list_id
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "connection": "acme",
                "list_id": list_id,
                "mapping": {"email": "EMail", "fields": {"cf:nope": "X"}},
                "segments": ["m.csv"],
            }
        )
    )
    code, _, err = cli("exports", "put", "bad", "--file", str(bad))
    assert code == 2 and "cf:nope" in err
    assert cli("exports", "delete", "news")[0] == 0
    code, _, err = cli("exports", "show", "news")
    assert code == 2 and "not found" in err


def test_runs_need_the_privacy_acknowledgement_and_delete_needs_yes(env, sb, tmp_path):
    _connected(env, sb)
    config = tmp_path / "export.json"
    config.write_text(
        json.dumps(
            {
                "connection": "acme",
                "list_id": sb.create_list("L"),
                "mapping": {"email": "EMail"},
                "segments": ["m.csv"],
            }
        )
    )
    assert cli("exports", "put", "news", "--file", str(config))[0] == 0
    code, _, err = cli("exports", "run", "news")
    assert code == 2 and "data privacy acknowledgement" in err
    code, out, _ = cli("connections", "update", "acme", "--acknowledge-privacy", "--share-role", "Marketing")
    assert code == 0 and json.loads(out)["privacy_acknowledged"] is True
    assert json.loads(out)["access"] == {"users": [], "roles": ["Marketing"]}
    code, _, err = cli("connections", "delete", "acme")
    assert code == 2 and "--yes" in err and "cc-acme-refresh-token" in secrets_of(env)
    code, out, _ = cli("connections", "delete", "acme", "--yes")
    assert code == 0 and json.loads(out)["disabled_exports"] == ["news"]
    assert not [k for k in secrets_of(env) if k.startswith("cc-acme-")]
    assert json.loads(cli("connections", "list")[1]) == {"connections": []}


def test_without_storage_settings_the_cli_says_what_to_set(monkeypatch):
    for key in ("EXPORTER_STORAGE", "EXPORTER_STORAGE__accountName", "EXPORTER_STORAGE__blobServiceUri"):
        monkeypatch.delenv(key, raising=False)
    code, _, err = cli("connections", "list")
    assert code == 2 and "EXPORTER_STORAGE" in err


def test_a_storage_error_is_one_line_with_what_to_do(env, monkeypatch, tmp_path):
    """The README's own Azurite command once lacked --skipApiVersionCheck: the SDK's newer API version
    was refused with a 400 and a traceback holding the whole XML error body."""
    strict = [flag for flag in FLAGS if flag != "--skipApiVersionCheck"]
    with start_azurite(tmp_path / "strict", flags=strict) as azurite:
        monkeypatch.setenv("EXPORTER_STORAGE", azurite.connection_string)
        code, out, err = cli("connections", "list")
    assert code == 1 and out == ""
    assert err.startswith("error: storage: ") and err.count("\n") == 1
    assert "--skipApiVersionCheck" in err and "Traceback" not in err and "<?xml" not in err
