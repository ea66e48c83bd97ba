"""Sandbox settings: the documented Constant Contact limits, made small enough for tests when needed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"


def _default_clients() -> dict[str, str]:
    return {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}


@dataclass(frozen=True)
class SandboxConfig:
    """Every number here is a documented CC limit (see constant-contact-notes.md) unless noted.

    ``None`` for a rate or quota switches that limit off, so a test can look at one thing at a time.
    """

    requests_per_second: int | None = 4
    """Per client_id (app key), sliding 1 s window -> 429 throttled [DOC-RATE]."""
    daily_quota: int | None = 10_000
    """Per client_id per UTC day (00:00 UTC reset) -> 429 quota_exceeded [DOC-RATE]."""
    token_requests_per_second: int | None = 1
    """Token endpoint, per client_id [CC staff post]."""
    access_token_ttl: float = 86_400
    """Access tokens live a static 24 h [CC-FORUM 402882]."""
    refresh_token_idle_ttl: float = 180 * 86_400
    """Refresh tokens unused for 180 days expire [CC-FORUM 402882]."""
    auth_code_ttl: float = 300
    """Authorization codes are single use and live 5 minutes."""
    device_code_ttl: float = 600
    """Not documented by CC; 10 minutes is the usual Okta default."""
    device_poll_interval: int = 5
    """The ``interval`` the device flow tells clients to poll at (not enforced beyond the token rps)."""
    auto_approve_devices: bool = False
    """When True the device grant succeeds without ``Sandbox.approve_device``."""
    rotate_refresh_tokens: bool = True
    """True = "Rotating" refresh tokens (single use); False = "Long Lived" (same value every time)."""
    max_import_contacts: int = 40_000
    """Items per contacts_json_import payload [DOC-IMPORT]."""
    max_body_bytes: int = 4 * 1024 * 1024
    """contacts_json_import reads only this many bytes and drops the rest [SPEC-CS]."""
    email_max_length: int = 80
    """What the product accepts (the spec's import schema says 50; the product 80) [KB 37423]."""
    activity_step_seconds: float = 0.05
    """Sandbox pacing: time between initialized -> processing -> completed."""
    max_queued_activities: int = 1_000
    """Queued (initialized or processing) activities per account -> 429 [SPEC-CS Activities429]."""
    max_lists: int = 1_000
    """Lists per account [DOC-LISTS]."""
    max_custom_fields: int = 100
    """Custom fields per account [SPEC-CS]."""
    activity_retention_seconds: float = 10 * 86_400
    """Activity status is kept 10 days [DOC-ACT]."""
    journal: bool = True
    """Record every exchange (bodies included) in ``Sandbox.requests``; the CLI turns it off."""
    clients: Mapping[str, str] = field(default_factory=_default_clients)
    """Registered apps: client_id (API key) -> client secret."""
