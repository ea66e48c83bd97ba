"""OAuth tokens against the sandbox's real token endpoint: refresh, rotation, expiry, invalid grants."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from exporter.errors import AuthorizationError, ConfigError
from exporter.secrets import EnvSecretStore, FileSecretStore, MemorySecretStore, SecretNames
from exporter.tokens import TokenProvider, _expiry
from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Sandbox, SandboxConfig

NAMES = SecretNames()


class OrderedStore(MemorySecretStore):
    """The real in-memory store, remembering the order of writes (to prove refresh-token-first)."""

    def __init__(self, values):
        super().__init__(values)
        self.writes: list[str] = []

    def set(self, name, value):
        self.writes.append(name)
        super().set(name, value)


def provider(sandbox, store, **kw) -> TokenProvider:
    return TokenProvider(store, token_url=sandbox.oauth_base_url + "/token", **kw)


def token_requests(sandbox) -> int:
    """Token requests the endpoint answered (a 429 of its 1 request/second limit is waited out, not counted)."""
    return len([r for r in sandbox.requests if r.path.endswith("/v1/token") and r.status != 429])


def test_refresh_rotates_and_stores_the_new_refresh_token_first(sandbox, secret_store):
    store = OrderedStore(
        {n: secret_store.get(n) for n in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token)}
    )
    first_refresh = store.get(NAMES.refresh_token)
    tokens = provider(sandbox, store)
    access = tokens.access_token()
    assert access and store.writes == [NAMES.refresh_token, NAMES.access_token]
    new_refresh = store.get(NAMES.refresh_token)
    assert new_refresh and new_refresh != first_refresh
    # the old refresh token is dead at the server: rotation is real
    time.sleep(1.05)  # the token endpoint allows one request per second
    response = httpx.post(
        sandbox.oauth_base_url + "/token",
        auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        data={"grant_type": "refresh_token", "refresh_token": first_refresh},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    # cached: a second call makes no request
    assert tokens.access_token() == access and token_requests(sandbox) == 2  # ours + the probe above
    httpx.get(
        sandbox.api_base_url + "/contact_lists", headers={"Authorization": f"Bearer {access}"}
    ).raise_for_status()


def test_a_stored_access_token_is_reused_across_providers(sandbox, secret_store):
    first = provider(sandbox, secret_store).access_token()
    second = provider(sandbox, secret_store).access_token()  # another instance, same store
    assert first == second and token_requests(sandbox) == 1


def test_expired_access_token_mid_run_is_refreshed_once_and_the_request_retried(sandbox, cc_client):
    list_id = sandbox.create_list("L")
    assert cc_client.get_list(list_id)["list_id"] == list_id
    assert sandbox.faults.expire_access_tokens() >= 1
    assert cc_client.get_list(list_id)["list_id"] == list_id
    assert token_requests(sandbox) == 2
    statuses = [r.status for r in sandbox.requests if r.path.startswith("/v3/contact_lists/")]
    assert statuses == [200, 401, 200]


def test_access_token_near_expiry_is_refreshed_before_use(sandbox, secret_store):
    now = [1_000_000.0]
    tokens = provider(sandbox, secret_store, clock=lambda: now[0])
    first = tokens.access_token()
    now[0] += 86_400 - 200  # within the 5-minute margin of the 24 h lifetime
    second = tokens.access_token()
    assert first != second and token_requests(sandbox) == 2


def test_invalid_grant_after_a_concurrent_rotation_uses_the_newer_token(sandbox, secret_store):
    stale = secret_store.get(NAMES.refresh_token)

    class StaleOnce(MemorySecretStore):
        """Another instance rotates the token right after we read it."""

        served = False

        def get(self, name):
            value = super().get(name)
            if name == NAMES.refresh_token and not self.served:
                self.served = True
                rotated = httpx.post(
                    sandbox.oauth_base_url + "/token",
                    auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
                    data={"grant_type": "refresh_token", "refresh_token": value},
                ).json()
                super().set(name, rotated["refresh_token"])
                return stale
            return value

    store = StaleOnce(
        {n: secret_store.get(n) for n in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token)}
    )
    assert provider(sandbox, store).access_token()
    # the other instance's request, our stale one (invalid_grant, possibly after a 429 in the same second),
    # then one with the newer token
    # (429s, the endpoint's one-request-per-second limit, are waited out and not counted here)
    answers = [r.status for r in sandbox.requests if r.path.endswith("/token") and r.status != 429]
    assert answers == [200, 400, 200]
    assert store.get(NAMES.refresh_token) not in (stale, None)


def test_invalid_grant_with_no_newer_token_needs_reauthorization(sandbox, secret_store):
    secret_store.set(NAMES.refresh_token, "revoked-token")
    with pytest.raises(AuthorizationError, match="authorize the connection again"):
        provider(sandbox, secret_store).access_token()
    assert token_requests(sandbox) == 1  # no retry storm


def test_token_answer_without_refresh_token_keeps_the_old_one(sandbox, secret_store):
    old = secret_store.get(NAMES.refresh_token)
    sandbox.faults.respond(
        200,
        {"access_token": "abc", "token_type": "Bearer", "expires_in": 3600},
        path="/oauth2/default/v1/token",
    )
    assert provider(sandbox, secret_store).access_token() == "abc"
    assert secret_store.get(NAMES.refresh_token) == old


def test_missing_credentials_are_a_configuration_error(sandbox):
    with pytest.raises(ConfigError, match="client id/secret not found"):
        provider(sandbox, MemorySecretStore()).access_token()
    store = MemorySecretStore(
        {NAMES.client_id: DEFAULT_CLIENT_ID, NAMES.client_secret: DEFAULT_CLIENT_SECRET}
    )
    with pytest.raises(ConfigError, match=r"CC_REFRESH_TOKEN with EXPORTER_SECRET_STORE=env.*authorize"):
        provider(sandbox, store).access_token()
    bad = MemorySecretStore(
        {
            NAMES.client_id: DEFAULT_CLIENT_ID,
            NAMES.client_secret: "wrong",
            NAMES.refresh_token: sandbox.issue_refresh_token(),
        }
    )
    with pytest.raises(AuthorizationError, match="client id/secret"):
        provider(sandbox, bad).access_token()


def test_threads_sharing_a_provider_refresh_once(sandbox, secret_store):
    tokens = provider(sandbox, secret_store)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(tokens.access_token())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and token_requests(sandbox) == 1


def test_file_store_keeps_rotated_tokens_private(tmp_path, sandbox, secret_store):
    store = FileSecretStore(tmp_path / "s" / "secrets.json")
    for name in (NAMES.client_id, NAMES.client_secret, NAMES.refresh_token):
        store.set(name, secret_store.get(name))
    provider(sandbox, store).access_token()
    path = tmp_path / "s" / "secrets.json"
    assert path.stat().st_mode & 0o077 == 0
    data = json.loads(path.read_text())
    assert data[NAMES.refresh_token] != secret_store.get(NAMES.refresh_token)


@pytest.mark.parametrize(
    "value,expected",
    [(86_400, 1_086_400.0), (1_900_000_000, 1_900_000_000.0), (None, 1_003_600.0), ("x", 1_003_600.0)],
)
def test_expires_in_relative_or_epoch(value, expected):
    assert _expiry(value, 1_000_000.0) == expected


def test_a_public_client_from_the_device_flow_refreshes_without_a_secret(sandbox):
    started = httpx.post(
        sandbox.oauth_base_url + "/device/authorize",
        data={"client_id": DEFAULT_CLIENT_ID, "scope": "contact_data offline_access"},
    ).json()
    sandbox.approve_device(started["user_code"])
    time.sleep(1.05)
    granted = httpx.post(
        sandbox.oauth_base_url + "/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "client_id": DEFAULT_CLIENT_ID,
            "device_code": started["device_code"],
        },
    ).json()
    store = MemorySecretStore(
        {NAMES.client_id: DEFAULT_CLIENT_ID, NAMES.refresh_token: granted["refresh_token"]}
    )
    time.sleep(1.05)
    assert provider(sandbox, store).access_token()
    refresh = [r for r in sandbox.requests if r.path.endswith("/v1/token")][-1]
    assert refresh.status == 200 and "authorization" not in {k.lower() for k in refresh.headers}
    assert store.get(NAMES.refresh_token) != granted["refresh_token"]  # rotated, and stored


@pytest.mark.parametrize("rotating", [True, False])
def test_the_env_store_warns_when_a_rotated_refresh_token_dies_with_the_process(rotating, caplog):
    """EXPORTER_SECRET_STORE=env cannot keep a rotated refresh token: the next run would be refused with
    the environment's old value, so the run says so (naming the secret, never the token)."""
    with Sandbox(SandboxConfig(rotate_refresh_tokens=rotating)) as sb:
        refresh = sb.issue_refresh_token(DEFAULT_CLIENT_ID)
        env = {
            "CC_CLIENT_ID": DEFAULT_CLIENT_ID,
            "CC_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "CC_REFRESH_TOKEN": refresh,
        }
        store = EnvSecretStore(env)
        with caplog.at_level(logging.WARNING, logger="exporter.tokens"):
            assert provider(sb, store).access_token()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if rotating:
        assert len(warnings) == 1 and "cc-refresh-token" in warnings[0] and "Long Lived" in warnings[0]
        assert store.get(NAMES.refresh_token) not in warnings[0] and refresh not in warnings[0]
    else:  # a long-lived token comes back unchanged: nothing is lost
        assert warnings == [] and store.get(NAMES.refresh_token) == refresh


def test_a_store_that_keeps_writes_gives_no_rotation_warning(sandbox, secret_store, caplog):
    with caplog.at_level(logging.WARNING, logger="exporter.tokens"):
        assert provider(sandbox, secret_store).access_token()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
