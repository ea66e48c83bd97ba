"""Typed settings, read once from the environment (app settings in Azure, env vars locally).

Every product limit has a hard ceiling here: a setting may lower a limit, never raise it past what
Constant Contact or the product we replace allows, so a typo cannot silently turn a refusal into a
truncated or rejected import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal, TypeVar

from .errors import ConfigError

# Hard ceilings (sources: constant-contact-notes.md §1.1 and §3; the Customer Insights connector's limit).
MAX_PROFILES_PER_EXPORT = 1_000_000
MAX_IMPORT_CONTACTS = 40_000
MAX_IMPORT_BYTES = 4_000_000  # "4 MB"; 4,000,000 is below both readings (10^6 and 2^20) of a megabyte
EMAIL_MAX_LENGTH_PRODUCT = 80  # knowledge base: "we do not support email addresses over 80 characters"
EMAIL_MAX_LENGTH_SCHEMA = 50  # import_data.email maxLength in the official OpenAPI spec

CC_API_BASE_URL = "https://api.cc.email/v3"
CC_OAUTH_BASE_URL = "https://authz.constantcontact.com/oauth2/default/v1"

TooLongPolicy = Literal["truncate", "reject"]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ValidationRules:
    """How contacts are checked before they are sent (pure data, used by exporter.validation)."""

    email_max_length: int = EMAIL_MAX_LENGTH_PRODUCT
    # What to do with a name or other text field longer than Constant Contact stores (50 for names):
    # truncate keeps the contact and counts the truncation; reject sends the row to the rejects file.
    too_long: TooLongPolicy = "truncate"
    # 01/02/1975 is 2 January where a file is written day first (most of Europe); 1 February otherwise.
    day_first: bool = False

    def __post_init__(self) -> None:
        if not 6 <= self.email_max_length <= 254:
            raise ConfigError(f"email_max_length must be between 6 and 254, got {self.email_max_length}")
        if self.too_long not in ("truncate", "reject"):
            raise ConfigError(f"too_long must be 'truncate' or 'reject', got {self.too_long!r}")


@dataclass(frozen=True, kw_only=True)
class ChunkLimits:
    """Size of one contacts_json_import request; never above Constant Contact's limits."""

    max_contacts: int = MAX_IMPORT_CONTACTS
    max_bytes: int = MAX_IMPORT_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_contacts <= MAX_IMPORT_CONTACTS:
            raise ConfigError(f"chunk max_contacts must be 1..{MAX_IMPORT_CONTACTS}, got {self.max_contacts}")
        if not 1024 <= self.max_bytes <= MAX_IMPORT_BYTES:
            raise ConfigError(f"chunk max_bytes must be 1024..{MAX_IMPORT_BYTES}, got {self.max_bytes}")


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Where Constant Contact is and how hard we may use it."""

    api_base_url: str = CC_API_BASE_URL
    oauth_base_url: str = CC_OAUTH_BASE_URL
    requests_per_second: float = 4.0  # per application key (documented limit)
    timeout_seconds: float = 60.0
    max_attempts: int = 6  # per request, for transient failures
    backoff_max_seconds: float = 60.0
    poll_interval_seconds: float = 1.0  # first poll of an activity; grows to poll_interval_max_seconds
    poll_interval_max_seconds: float = 10.0
    activity_timeout_seconds: float = (
        3600.0  # how long one run waits for activities before it reports pending
    )

    def __post_init__(self) -> None:
        if not 0 < self.requests_per_second <= 4.0:
            raise ConfigError(f"requests_per_second must be in (0, 4], got {self.requests_per_second}")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the exporter reads from its environment."""

    api: ApiSettings = field(default_factory=ApiSettings)
    rules: ValidationRules = field(default_factory=ValidationRules)
    chunks: ChunkLimits = field(default_factory=ChunkLimits)
    max_profiles: int = MAX_PROFILES_PER_EXPORT
    activity_resubmits: int = 2  # a failed, cancelled or timed-out import is sent again this many times
    # Secrets: "file" (local JSON file, the default for local runs), "env" or "keyvault".
    secret_store: str = "file"
    secrets_file: str = ".secrets/secrets.json"
    key_vault_url: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_profiles <= MAX_PROFILES_PER_EXPORT:
            raise ConfigError(
                f"max_profiles must be 1..{MAX_PROFILES_PER_EXPORT:,} (the product limit), got {self.max_profiles:,}"
            )
        if self.secret_store not in ("file", "env", "keyvault"):
            raise ConfigError(f"secret store must be file, env or keyvault, got {self.secret_store!r}")
        if self.secret_store == "keyvault" and not self.key_vault_url:
            raise ConfigError("KEY_VAULT_URL is required when EXPORTER_SECRET_STORE=keyvault")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from environment variables; unknown values raise ConfigError naming the variable."""
        env = os.environ if env is None else env
        api = _override(
            ApiSettings(),
            env,
            {
                "api_base_url": "CC_API_BASE_URL",
                "oauth_base_url": "CC_OAUTH_BASE_URL",
                "requests_per_second": "CC_REQUESTS_PER_SECOND",
                "timeout_seconds": "CC_TIMEOUT_SECONDS",
                "max_attempts": "CC_MAX_ATTEMPTS",
                "poll_interval_seconds": "CC_POLL_INTERVAL_SECONDS",
                "poll_interval_max_seconds": "CC_POLL_INTERVAL_MAX_SECONDS",
                "activity_timeout_seconds": "CC_ACTIVITY_TIMEOUT_SECONDS",
            },
        )
        rules = _override(
            ValidationRules(),
            env,
            {
                "email_max_length": "EXPORTER_EMAIL_MAX_LENGTH",
                "too_long": "EXPORTER_TOO_LONG",
            },
        )
        chunks = _override(
            ChunkLimits(),
            env,
            {
                "max_contacts": "EXPORTER_CHUNK_MAX_CONTACTS",
                "max_bytes": "EXPORTER_CHUNK_MAX_BYTES",
            },
        )
        return _override(
            cls(api=api, rules=rules, chunks=chunks),
            env,
            {
                "max_profiles": "EXPORTER_MAX_PROFILES",
                "activity_resubmits": "EXPORTER_ACTIVITY_RESUBMITS",
                "secret_store": "EXPORTER_SECRET_STORE",
                "secrets_file": "EXPORTER_SECRETS_FILE",
                "key_vault_url": "KEY_VAULT_URL",
            },
        )


def _override(obj: T, env: Mapping[str, str], names: Mapping[str, str]) -> T:
    """Return obj with the fields named in `names` replaced by their (typed) environment values."""
    types = {f.name: f.type for f in fields(obj)}  # type: ignore[arg-type]
    changes: dict[str, object] = {}
    for attr, var in names.items():
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        kind = str(types[attr])
        try:
            if kind.startswith("int"):
                changes[attr] = int(raw.replace("_", "").replace(",", ""))
            elif kind.startswith("float"):
                changes[attr] = float(raw)
            else:
                changes[attr] = raw.strip()
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a valid {kind.split(' ')[0]}") from None
    return replace(obj, **changes) if changes else obj  # type: ignore[type-var]
