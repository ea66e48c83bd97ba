"""The real azure-keyvault-secrets SDK against LocalKeyVault, then KeyVaultSecretStore on top of it.

What is under test is the protocol as the SDK speaks it (challenge handshake, versions, soft delete,
paging, retries), so nothing here mocks the SDK: every call goes over HTTPS to tests/keyvault_server.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from exporter.secrets import KeyVaultSecretStore
from tests.keyvault_server import (
    DEFAULT_TENANT,
    LocalKeyVault,
    RecordedRequest,
    StaticTokenCredential,
)

# Retries in tests must be quick: the backoff factor is what azure-core sleeps between plain retries.
FAST_RETRY = {"retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}


@pytest.fixture
def vault() -> Iterator[LocalKeyVault]:
    """A fresh vault per test, so journals and state never leak between tests."""
    with LocalKeyVault() as local:
        yield local


@pytest.fixture
def client(vault: LocalKeyVault) -> Iterator[SecretClient]:
    """The SDK client the way tests/keyvault_server.py documents it, with fast retries."""
    with vault.secret_client(**FAST_RETRY) as secret_client:
        yield secret_client


def statuses(requests: list[RecordedRequest]) -> list[int]:
    """The status codes served, in order: the shortest readable summary of an exchange."""
    return [r.status for r in requests]


# ------------------------------------------------------------------------------------ authentication


def test_first_request_is_challenged_then_authenticated(vault: LocalKeyVault, client: SecretClient) -> None:
    """The SDK must learn tenant and scope from the 401 challenge before it sends any token."""
    client.set_secret("cc-client-id", "abc")
    client.get_secret("cc-client-id")

    journal = vault.requests
    assert [(r.method, r.has_authorization, r.status) for r in journal] == [
        ("PUT", False, 401),  # bodiless probe elicits the challenge
        ("PUT", True, 200),  # the original request, now with a token
        ("GET", True, 200),  # challenge cached: no second handshake
    ]
    assert all(r.query.get("api-version") for r in journal)
    first = vault.credential.calls[0]
    assert first.scopes == ("https://vault.azure.net/.default",)
    assert first.tenant_id == DEFAULT_TENANT


def test_default_client_refuses_local_vault_without_sending_token(vault: LocalKeyVault) -> None:
    """Challenge-resource verification (on by default) rejects a host outside *.vault.azure.net, tokenless."""
    with (
        SecretClient(vault.vault_url, vault.credential, connection_verify=vault.ca_bundle_path) as strict,
        pytest.raises(ValueError, match="verify_challenge_resource"),
    ):
        strict.get_secret("anything")
    assert [(r.has_authorization, r.status) for r in vault.requests] == [(False, 401)]
    assert vault.credential.calls == []


def test_wrong_token_is_rejected(vault: LocalKeyVault) -> None:
    """A token the vault does not accept ends in ClientAuthenticationError, not a retry loop."""
    impostor = StaticTokenCredential("not-the-vault-token")
    with (
        vault.secret_client(credential=impostor, **FAST_RETRY) as bad,
        pytest.raises(ClientAuthenticationError),
    ):
        bad.get_secret("cc-client-id")
    assert [(r.has_authorization, r.status) for r in vault.requests] == [(False, 401), (True, 401)]


def test_journal_and_credential_never_show_the_token(vault: LocalKeyVault, client: SecretClient) -> None:
    """Secrets and tokens must not end up in test output or logs via the journal."""
    client.set_secret("cc-refresh-token", "r1")
    token = vault.credential.get_token("https://vault.azure.net/.default").token
    assert token not in repr(vault.requests)
    assert token not in repr(vault.credential)


# ------------------------------------------------------------------------------------------------ TLS


def test_tls_is_verified_against_the_throwaway_ca(vault: LocalKeyVault) -> None:
    """Without the CA bundle the SDK must refuse the server's certificate: TLS is real, not switched off."""
    with (
        SecretClient(vault.vault_url, vault.credential, verify_challenge_resource=False, retry_total=0) as c,
        pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        c.get_secret("cc-client-id")
    assert vault.requests == []


def test_requests_ca_bundle_environment_variable_also_works(
    vault: LocalKeyVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-core's requests transport honours REQUESTS_CA_BUNDLE when no connection_verify is given."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", vault.ca_bundle_path)
    with SecretClient(vault.vault_url, vault.credential, verify_challenge_resource=False) as c:
        c.set_secret("cc-client-id", "abc")
    assert vault.secrets["cc-client-id"][-1].value == "abc"


# ------------------------------------------------------------------------------------- set, get, versions


def test_set_get_and_versions(vault: LocalKeyVault, client: SecretClient) -> None:
    """Each set makes a new version; get without a version is the latest, with one is exactly that one."""
    first = client.set_secret("cc-refresh-token", "r1", content_type="text/plain")
    second = client.set_secret("cc-refresh-token", "r2")

    assert first.properties.version != second.properties.version
    assert first.id == f"{vault.vault_url}/secrets/cc-refresh-token/{first.properties.version}"
    assert first.properties.enabled is True
    assert first.properties.created_on is not None
    assert first.properties.content_type == "text/plain"

    assert client.get_secret("cc-refresh-token").value == "r2"
    assert client.get_secret("cc-refresh-token", first.properties.version).value == "r1"

    versions = {p.version for p in client.list_properties_of_secret_versions("cc-refresh-token")}
    assert versions == {first.properties.version, second.properties.version}
    assert [v.value for v in vault.secrets["cc-refresh-token"]] == ["r1", "r2"]


def test_names_are_case_insensitive(vault: LocalKeyVault, client: SecretClient) -> None:
    """Key Vault treats names case-insensitively; so must the stand-in, or a casing bug would pass here."""
    client.set_secret("CC-Client-Id", "abc")
    client.set_secret("cc-client-ID", "def")  # same secret, second version
    assert client.get_secret("cc-CLIENT-id").value == "def"
    assert [v.value for v in vault.secrets["CC-Client-Id"]] == ["abc", "def"]  # first spelling is kept


def test_missing_secret_is_resource_not_found(client: SecretClient) -> None:
    """404 maps to ResourceNotFoundError carrying Key Vault's error code, for a missing name or version."""
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("cc-nothing-here")
    assert missing.value.status_code == 404
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"

    client.set_secret("cc-client-id", "abc")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("cc-client-id", "0" * 32)


@pytest.mark.parametrize("name", ["bad_name", "a.b", "x" * 128])
def test_bad_name_is_400(vault: LocalKeyVault, client: SecretClient, name: str) -> None:
    """Names outside [0-9a-zA-Z-]{1,127} are the service's BadParameter, not a missing secret."""
    with pytest.raises(HttpResponseError) as bad:
        client.set_secret(name, "v")
    assert bad.value.status_code == 400
    assert not isinstance(bad.value, ResourceNotFoundError)
    assert bad.value.error is not None and bad.value.error.code == "BadParameter"
    assert vault.secrets == {}


def test_disabled_secret_cannot_be_read(client: SecretClient) -> None:
    """A disabled version answers 403, as Key Vault does, rather than leaking its value."""
    client.set_secret("cc-client-secret", "s", enabled=False)
    with pytest.raises(HttpResponseError) as forbidden:
        client.get_secret("cc-client-secret")
    assert forbidden.value.status_code == 403


# ------------------------------------------------------------------------------------------------ paging


def test_list_follows_next_links(vault: LocalKeyVault, client: SecretClient) -> None:
    """Listing pages through nextLink until it is null; every secret appears exactly once."""
    names = [f"cc-s{i}" for i in range(5)]
    for name in names:
        vault.seed(name, "v")
    vault.clear_requests()

    paged = client.list_properties_of_secrets(max_page_size=2).by_page()
    pages = [[str(p.name) for p in page] for page in paged]

    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(n for page in pages for n in page) == names
    lists = [r for r in vault.requests if r.path == "/secrets" and r.has_authorization]
    assert len(lists) == 3
    assert "$skiptoken" not in lists[0].query
    assert all("$skiptoken" in r.query and r.query["maxresults"] == "2" for r in lists[1:])


def test_versions_listing_pages_too(vault: LocalKeyVault, client: SecretClient) -> None:
    """The versions collection is paged with the same nextLink mechanism."""
    for i in range(4):
        vault.seed("cc-access-token", f"t{i}")
    pages = list(client.list_properties_of_secret_versions("cc-access-token", max_page_size=3).by_page())
    assert [len(list(page)) for page in pages] == [3, 1]


# ------------------------------------------------------------------------------------ delete, purge, recover


def test_delete_poller_waits_until_deleted_then_purge() -> None:
    """begin_delete_secret's poller polls GET /deletedsecrets/{name} until it stops answering 404; purging
    before then is a 409, after it a 204 that removes the secret for good."""
    with LocalKeyVault(delete_delay_polls=2) as vault, vault.secret_client(**FAST_RETRY) as client:
        client.set_secret("cc-refresh-token", "r1")
        poller = client.begin_delete_secret("cc-refresh-token", _polling_interval=0.01)
        deleted = poller.result()
        assert deleted.recovery_id == f"{vault.vault_url}/deletedsecrets/cc-refresh-token"
        assert deleted.scheduled_purge_date is not None and deleted.deleted_date is not None
        assert deleted.scheduled_purge_date > deleted.deleted_date

        with pytest.raises(ResourceExistsError):  # still being deleted
            client.purge_deleted_secret("cc-refresh-token")

        poller.wait()
        assert poller.done()
        polls = [r.status for r in vault.requests if r.path == "/deletedsecrets/cc-refresh-token"]
        assert polls == [409, 404, 404, 200]  # the early purge, then the poller's two misses and its hit

        assert client.get_deleted_secret("cc-refresh-token").name == "cc-refresh-token"
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("cc-refresh-token")

        client.purge_deleted_secret("cc-refresh-token")
        assert vault.requests[-1].status == 204
        assert vault.deleted_secrets == {}
        with pytest.raises(ResourceNotFoundError):
            client.get_deleted_secret("cc-refresh-token")


def test_deleted_name_cannot_be_reused_until_recovered(vault: LocalKeyVault, client: SecretClient) -> None:
    """Soft delete keeps the name: set is a 409 until recovery (or purge); recovery brings the value back."""
    client.set_secret("cc-client-id", "abc")
    client.begin_delete_secret("cc-client-id").wait()
    assert [d.name for d in client.list_deleted_secrets()] == ["cc-client-id"]

    with pytest.raises(ResourceExistsError):
        client.set_secret("cc-client-id", "new")

    client.begin_recover_deleted_secret("cc-client-id", _polling_interval=0.01).wait()
    assert client.get_secret("cc-client-id").value == "abc"
    assert vault.deleted_secrets == {}


def test_delete_missing_secret_is_not_found(client: SecretClient) -> None:
    """Deleting what is not there is a 404 from the first request, before any polling."""
    with pytest.raises(ResourceNotFoundError):
        client.begin_delete_secret("cc-never-set")


# ------------------------------------------------------------------------------------------------ retries


def test_429_retry_after_is_honoured(vault: LocalKeyVault, client: SecretClient) -> None:
    """Throttling: the SDK's retry policy waits for Retry-After (not its tiny backoff), then succeeds."""
    vault.seed("cc-access-token", "t")
    client.get_secret("cc-access-token")  # handshake out of the way
    vault.clear_requests()
    vault.fail_next(429, retry_after=0.4)

    started = time.monotonic()
    assert client.get_secret("cc-access-token").value == "t"
    elapsed = time.monotonic() - started

    assert statuses(vault.requests) == [429, 200]
    assert elapsed >= 0.4
    assert vault.pending_faults == 0


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(vault: LocalKeyVault, client: SecretClient, status: int) -> None:
    """Transient 5xx answers are retried by the SDK itself; the caller sees only the success."""
    vault.fail_next(status, times=2)
    client.set_secret("cc-client-id", "abc")
    assert statuses(vault.requests) == [401, status, status, 200]
    assert vault.secrets["cc-client-id"][-1].value == "abc"


def test_retries_give_up_after_the_status_budget(vault: LocalKeyVault, client: SecretClient) -> None:
    """azure-core retries a bad status 3 times by default; a 4th failure reaches the caller."""
    vault.seed("cc-client-id", "abc")
    client.get_secret("cc-client-id")
    vault.clear_requests()
    vault.fail_next(503, times=5)
    with pytest.raises(HttpResponseError) as unavailable:
        client.get_secret("cc-client-id")
    assert unavailable.value.status_code == 503
    assert statuses(vault.requests) == [503, 503, 503, 503]
    assert vault.pending_faults == 1


# ------------------------------------------------------------------------------------ KeyVaultSecretStore


def test_store_through_an_injected_client(vault: LocalKeyVault, client: SecretClient) -> None:
    """The project's store: None for a missing secret, latest value wins, delete waits for the poller."""
    store = KeyVaultSecretStore(vault.vault_url, client=client)

    assert store.get("cc-refresh-token") is None
    store.set("cc-refresh-token", "r1")
    store.set("cc-refresh-token", "r2")
    assert store.get("cc-refresh-token") == "r2"
    assert [(v.value, v.content_type) for v in vault.secrets["cc-refresh-token"]] == [
        ("r1", "text/plain"),
        ("r2", "text/plain"),
    ]

    store.delete("cc-refresh-token")
    assert store.get("cc-refresh-token") is None
    assert "cc-refresh-token" in vault.deleted_secrets
    assert any(r.path == "/deletedsecrets/cc-refresh-token" and r.status == 200 for r in vault.requests)
    store.delete("cc-refresh-token")  # already gone: no error

    # Created again (a connection deleted and re-created): the soft-deleted name is recovered, then set.
    store.set("cc-refresh-token", "r3")
    assert store.get("cc-refresh-token") == "r3"
    assert "cc-refresh-token" not in vault.deleted_secrets
    assert any(r.path.endswith("/deletedsecrets/cc-refresh-token/recover") for r in vault.requests)


def test_store_builds_its_own_client_from_a_credential(vault: LocalKeyVault) -> None:
    """With credential= the store makes its SecretClient; locally that needs the CA and no resource check."""
    store = KeyVaultSecretStore(
        vault.vault_url,
        credential=vault.credential,
        connection_verify=vault.ca_bundle_path,
        verify_challenge_resource=False,
    )
    store.set("cc-client-id", "abc")
    assert store.get("cc-client-id") == "abc"
    exchange = [(r.has_authorization, r.status) for r in vault.requests]
    assert exchange == [(False, 401), (True, 200), (True, 200)]


def test_store_with_ca_from_environment(vault: LocalKeyVault, monkeypatch: pytest.MonkeyPatch) -> None:
    """connection_verify may stay at its default when REQUESTS_CA_BUNDLE names the CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", vault.ca_bundle_path)
    store = KeyVaultSecretStore(vault.vault_url, credential=vault.credential, verify_challenge_resource=False)
    store.set("cc-client-secret", "s")
    assert vault.secrets["cc-client-secret"][-1].value == "s"


def test_store_defaults_stay_production_safe(vault: LocalKeyVault) -> None:
    """Left at its default the store verifies the challenge resource, so it refuses the local vault and never
    sends the token. (The TLS default is covered at SDK level: through the store, connection retries make a
    certificate failure take ~5 s.)"""
    resource_default = KeyVaultSecretStore(
        vault.vault_url, credential=vault.credential, connection_verify=vault.ca_bundle_path
    )
    with pytest.raises(ValueError, match="verify_challenge_resource"):
        resource_default.get("cc-client-id")
    assert not any(r.has_authorization for r in vault.requests)


def test_store_get_raises_on_errors_other_than_404(vault: LocalKeyVault, client: SecretClient) -> None:
    """Only 'not found' means None: an outage must not look like a missing credential."""
    store = KeyVaultSecretStore(vault.vault_url, client=client)
    store.set("cc-client-id", "abc")
    vault.fail_next(503, times=4)
    with pytest.raises(HttpResponseError):
        store.get("cc-client-id")
