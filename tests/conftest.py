"""Shared fixtures.

Storage tests run against a real Azurite (see tests/azurite.py), started once per session and only when a
test asks for it, so tests that need no storage never pay for Node.js.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from exporter.config import ApiSettings
from exporter.constant_contact import ConstantContactClient
from exporter.secrets import MemorySecretStore, SecretNames
from exporter.tokens import TokenProvider
from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Sandbox, SandboxConfig
from tests.azurite import AzuriteNotInstalledError, AzuriteProcess, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteProcess]:
    """One Azurite blob service for the whole session, with a throwaway workspace; stopped at the end."""
    try:
        process = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def blob_service(azurite: AzuriteProcess) -> Iterator[BlobServiceClient]:
    """A fresh client per test (clients hold connection pools; closing them keeps the session tidy)."""
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
def container_name() -> str:
    """A container name no other test uses, so tests never see each other's blobs (3-63 chars, lowercase)."""
    return f"t-{uuid.uuid4().hex}"


# -- Constant Contact sandbox and an exporter wired to it ----------------------------------------------

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CONTACT_CSV = SHARED / "data" / "customer-insights-samples" / "Contact.csv"
requires_sample = pytest.mark.skipif(not CONTACT_CSV.exists(), reason=f"sample data not at {CONTACT_CSV}")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh Constant Contact sandbox per test (starting one costs a few milliseconds)."""
    with Sandbox(SandboxConfig(activity_step_seconds=0.01)) as sb:
        yield sb


@pytest.fixture
def api_settings(sandbox: Sandbox) -> ApiSettings:
    """The real client settings, pointed at the sandbox, with short polls and backoffs for speed."""
    return ApiSettings(
        api_base_url=sandbox.api_base_url,
        oauth_base_url=sandbox.oauth_base_url,
        poll_interval_seconds=0.02,
        poll_interval_max_seconds=0.1,
        backoff_max_seconds=0.2,
        activity_timeout_seconds=20,
    )


@pytest.fixture
def secret_store(sandbox: Sandbox) -> MemorySecretStore:
    """Credentials as a user would have them after authorizing the app once."""
    names = SecretNames()
    return MemorySecretStore(
        {
            names.client_id: DEFAULT_CLIENT_ID,
            names.client_secret: DEFAULT_CLIENT_SECRET,
            names.refresh_token: sandbox.issue_refresh_token(DEFAULT_CLIENT_ID),
        }
    )


@pytest.fixture
def cc_client(api_settings: ApiSettings, secret_store: MemorySecretStore) -> Iterator[ConstantContactClient]:
    tokens = TokenProvider(secret_store, token_url=api_settings.oauth_base_url + "/token")
    client = ConstantContactClient(api_settings, tokens)
    yield client
    client.close()


# -- the Functions app ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def indexed():
    """The functions exactly as the Functions host indexes them. Session-wide and shared by every test
    module, because FunctionApp.get_functions() may run only once per app."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}
