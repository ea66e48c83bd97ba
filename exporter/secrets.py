"""Where Constant Contact credentials live: Azure Key Vault in production, a local file or the
environment on a laptop. One small interface so the token code never knows which.

Secret names follow Key Vault's rules (letters, digits, dashes). Values are never logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings

_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")


class SecretStore(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class SecretNames:
    """The names under which one connection's credentials are stored."""

    client_id: str = "cc-client-id"
    client_secret: str = "cc-client-secret"
    refresh_token: str = "cc-refresh-token"
    access_token: str = "cc-access-token"  # JSON {access_token, expires_at}: shared by every instance

    @classmethod
    def for_connection(cls, connection: str) -> SecretNames:
        prefix = f"cc-{connection}"
        return cls(
            f"{prefix}-client-id",
            f"{prefix}-client-secret",
            f"{prefix}-refresh-token",
            f"{prefix}-access-token",
        )


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"secret name {name!r}: use 1-127 letters, digits and dashes (Key Vault's rule)")
    return name


class MemorySecretStore:
    """Secrets in a dict: the sandbox and tests."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        self._lock = threading.Lock()

    def get(self, name: str) -> str | None:
        with self._lock:
            return self._values.get(check_name(name))

    def set(self, name: str, value: str) -> None:
        with self._lock:
            self._values[check_name(name)] = value

    def delete(self, name: str) -> None:
        with self._lock:
            self._values.pop(check_name(name), None)


class FileSecretStore:
    """A JSON file readable by its owner only: the default for local runs.

    Each write replaces the file atomically and re-reads it first, so two local processes that rotate
    the same refresh token never leave a half-written file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"secret file {self.path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"secret file {self.path} must hold a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def get(self, name: str) -> str | None:
        return self._load().get(check_name(name))

    def set(self, name: str, value: str) -> None:
        with self._lock:
            data = self._load()
            data[check_name(name)] = value
            self._save(data)

    def delete(self, name: str) -> None:
        with self._lock:
            data = self._load()
            if data.pop(check_name(name), None) is not None:
                self._save(data)

    def _save(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


class EnvSecretStore:
    """Read-only secrets from environment variables: cc-client-id -> CC_CLIENT_ID.

    Rotated refresh tokens are kept in memory for the life of the process only: the next process starts
    from the environment's value, which a rotating refresh token has made invalid. ``keeps_writes`` says
    so, and the token provider warns when that happens.
    """

    keeps_writes = False

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._overrides: dict[str, str | None] = {}

    @staticmethod
    def variable(name: str) -> str:
        return check_name(name).upper().replace("-", "_")

    def get(self, name: str) -> str | None:
        if name in self._overrides:
            return self._overrides[name]
        return self._env.get(self.variable(name)) or None

    def set(self, name: str, value: str) -> None:
        self._overrides[check_name(name)] = value

    def delete(self, name: str) -> None:
        self._overrides[check_name(name)] = None


class KeyVaultSecretStore:
    """Azure Key Vault through azure-keyvault-secrets and DefaultAzureCredential (managed identity).

    ``connection_verify`` and ``verify_challenge_resource`` only matter when the store builds its own
    client; the defaults are the production ones. A local test vault (tests/keyvault_server.py) needs
    ``connection_verify=<its CA bundle>`` and ``verify_challenge_resource=False``, because its host is not
    under the challenge's resource domain (vault.azure.net).
    """

    def __init__(
        self,
        vault_url: str,
        *,
        credential: Any = None,
        client: Any = None,
        connection_verify: bool | str = True,
        verify_challenge_resource: bool = True,
    ) -> None:
        if client is None:
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            client = SecretClient(
                vault_url=vault_url,
                credential=credential or DefaultAzureCredential(),
                connection_verify=connection_verify,
                verify_challenge_resource=verify_challenge_resource,
            )
        self._client = client

    def get(self, name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value = self._client.get_secret(check_name(name)).value
        except ResourceNotFoundError:
            return None
        return str(value) if value is not None else None

    def set(self, name: str, value: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client.set_secret(check_name(name), value, content_type="text/plain")
        except ResourceExistsError:
            # The name belongs to a soft-deleted secret (a connection deleted and created again): with
            # purge protection it cannot be purged, so recover it and write the new value over it.
            self._client.begin_recover_deleted_secret(name).wait()
            self._client.set_secret(name, value, content_type="text/plain")

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._client.begin_delete_secret(check_name(name)).wait()


def secret_store_from_settings(settings: Settings) -> SecretStore:
    """The store the settings name: file (default locally), env, or keyvault."""
    if settings.secret_store == "env":
        return EnvSecretStore()
    if settings.secret_store == "keyvault":
        assert settings.key_vault_url is not None
        return KeyVaultSecretStore(settings.key_vault_url)
    return FileSecretStore(settings.secrets_file)
