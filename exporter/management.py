"""The management operations behind the HTTP API and the CLI: connections, exports and runs, each checked
against the caller's role before anything is read or written.

Who may do what (see exporter.principals for the roles):

- viewers (and everyone above) read connections, exports and runs;
- contributors create, change, delete and run exports whose connection is shared with them (their user
  id or one of their roles is in the connection's ``access``); moving an export to another connection
  needs both shared;
- admins do everything: create, change, share, authorize and delete connections, on any connection.

Saving an export checks it against Constant Contact through its connection: the list must exist and
every ``cf:`` custom field must exist in the account. So the connection must be connected first; if it
is not, the export is refused with a field error on ``connection`` (nothing unverified is stored).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from azure.core.exceptions import HttpResponseError

from .connections import (
    Access,
    ConflictError,
    Connection,
    ConnectionInput,
    check_connection_name,
)
from .errors import ApiError, AuthorizationError, ConfigError
from .exports import ExportConfig, FieldErrors
from .oauth_flow import (
    DeviceStart,
    OAuthFlowError,
    PendingStore,
    Tokens,
    authorize_url,
    exchange_code,
    forget_tokens,
    poll_device,
    start_device,
    store_tokens,
)
from .principals import ADMIN, CONTRIBUTOR, VIEWER, ForbiddenError, Principal, RoleNames
from .report import utc_now
from .service import ExportService, NotFoundError, RunHandle

log = logging.getLogger(__name__)

CALLBACK_ROUTE = "oauth/callback"


class VerificationUnavailableError(ConfigError):
    """Constant Contact could not be asked whether the list and fields exist (HTTP 502); try again."""

    code = "verification_unavailable"
    status = 502


@dataclass(frozen=True)
class ManagementSettings:
    """App settings of the management API."""

    roles: RoleNames = field(default_factory=RoleNames)
    # The OAuth redirect URI registered with the Constant Contact app. Empty: computed from the request,
    # https://<host>/api/oauth/callback (set it behind a proxy or custom domain that changes the host).
    redirect_uri: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ManagementSettings:
        env = os.environ if env is None else env
        return cls(roles=RoleNames.from_env(env), redirect_uri=env.get("EXPORTER_OAUTH_REDIRECT_URI") or None)


class Management:
    """One object per process, next to the ExportService it drives."""

    def __init__(self, service: ExportService, settings: ManagementSettings | None = None) -> None:
        self.service = service
        self.settings = settings or ManagementSettings()
        self.pending = PendingStore(service.state, clock=service._clock)

    # -- access --------------------------------------------------------------------------------

    def may_use(self, who: Principal, connection: Connection) -> bool:
        """Admins use every connection; contributors the ones shared with them; viewers none."""
        if who.at_least(ADMIN):
            return True
        return who.level == CONTRIBUTOR and who.matches(connection.access.users, connection.access.roles)

    def _require_use(self, who: Principal, name: str, what: str) -> Connection | None:
        """The connection ``name`` if ``who`` may use it; None when it does not exist (admins only then)."""
        connection = self.service.connections.get(name)
        if connection is None:
            if not who.at_least(ADMIN):
                raise ForbiddenError(f"{what}: connection {name!r} does not exist or is not shared with you")
            return None
        if not self.may_use(who, connection):
            raise ForbiddenError(f"{what}: connection {name!r} is not shared with you")
        return connection

    # -- connections ---------------------------------------------------------------------------

    def list_connections(self, who: Principal) -> list[Connection]:
        who.require(VIEWER, "reading connections")
        return self.service.connections.list()

    def get_connection(self, who: Principal, name: str) -> Connection:
        who.require(VIEWER, "reading connections")
        return self._connection(name)

    def _connection(self, name: str) -> Connection:
        connection = self.service.connections.get(name)
        if connection is None:
            raise NotFoundError(f"connection {name!r} not found")
        return connection

    def put_connection(self, who: Principal, name: str, body: Any) -> tuple[Connection, bool]:
        """Create, or replace the writable fields of, a connection; (record, created)."""
        who.require(ADMIN, "changing connections")
        check_connection_name(name)
        parsed = ConnectionInput.parse(body, partial=False)
        if self.service.connections.get(name) is not None:
            return self._change(who, name, parsed, defaults={"display_name": name}, full=True), False
        now = utc_now()
        values = parsed.values
        ack = bool(values.get("privacy_acknowledged"))
        connection = Connection(
            name=name,
            display_name=values.get("display_name") or name,
            client_id=values["client_id"],
            access=values.get("access") or Access(),
            privacy_acknowledged=ack,
            privacy_acknowledged_at=now if ack else None,
            privacy_acknowledged_by=who.user if ack else None,
            created_at=now,
            created_by=who.user,
            updated_at=now,
            updated_by=who.user,
        )
        # Secrets first: a name still reserved by Key Vault's soft delete must fail the create cleanly.
        names = connection.secret_names
        self._set_secret(names.client_id, connection.client_id)  # TokenProvider reads it there
        if parsed.client_secret is not None:
            self._set_secret(names.client_secret, parsed.client_secret)
        if not self.service.connections.create(connection):
            raise ConflictError(f"connection {name!r} was created by someone else meanwhile; try again")
        log.info("connection %s created", name)
        return connection, True

    def patch_connection(self, who: Principal, name: str, body: Any) -> Connection:
        """Change only the fields given (e.g. acknowledge privacy, share, rotate the client secret)."""
        who.require(ADMIN, "changing connections")
        self._connection(name)
        return self._change(who, name, ConnectionInput.parse(body, partial=True), defaults={}, full=False)

    def _change(
        self, who: Principal, name: str, parsed: ConnectionInput, *, defaults: dict[str, Any], full: bool
    ) -> Connection:
        """Apply validated input. A full replace (PUT) also rewrites the client id secret, so repeating a
        PUT repairs a connection whose secret write failed the first time."""
        values = {**defaults, **parsed.values}
        before = self._connection(name)
        client_changed = "client_id" in values and values["client_id"] != before.client_id

        def change(current: Connection) -> Connection:
            now = utc_now()
            updated = replace(current, **values, updated_at=now, updated_by=who.user)
            if (
                "privacy_acknowledged" in values
                and values["privacy_acknowledged"] != current.privacy_acknowledged
            ):
                ack = bool(values["privacy_acknowledged"])
                updated = replace(
                    updated,
                    privacy_acknowledged_at=now if ack else None,
                    privacy_acknowledged_by=who.user if ack else None,
                )
            if client_changed:
                # The refresh token belongs to the old Constant Contact app: connect again.
                updated = replace(
                    updated,
                    status="not_connected",
                    status_reason="the client id changed; authorize the connection again",
                    connected_at=None,
                    connected_by=None,
                )
            return updated

        connection = self.service.connections.update(name, change)
        if connection is None:
            raise NotFoundError(f"connection {name!r} not found")
        names = connection.secret_names
        if client_changed:
            forget_tokens(self.service.secrets, names)
        if client_changed or full:
            self._set_secret(names.client_id, connection.client_id)
        if parsed.client_secret is not None:
            self._set_secret(names.client_secret, parsed.client_secret)
        if client_changed or parsed.client_secret is not None:
            self.service.forget_client(name)
        return connection

    def delete_connection(self, who: Principal, name: str) -> dict[str, Any]:
        """Disable the exports that use it, delete its secrets, then the record (a failure on the way
        leaves the record, so the delete can simply be repeated)."""
        who.require(ADMIN, "deleting connections")
        connection = self._connection(name)
        disabled = []
        for config in self.service.exports.list():
            if config.connection == name and config.enabled:
                self.service.exports.put(replace(config, enabled=False))
                disabled.append(config.name)
        names = connection.secret_names
        deleted = [names.refresh_token, names.access_token, names.client_secret, names.client_id]
        for secret in deleted:
            self.service.secrets.delete(secret)
        self.service.connections.delete(name)
        self.service.forget_client(name)
        log.info("connection %s deleted; %d export(s) disabled", name, len(disabled))
        return {"name": name, "disabled_exports": disabled, "deleted_secrets": deleted}

    # -- connecting an account -----------------------------------------------------------------

    def redirect_uri(self, base_url: str) -> str:
        return self.settings.redirect_uri or f"{base_url.rstrip('/')}/api/{CALLBACK_ROUTE}"

    def begin_authorization(self, who: Principal, name: str, *, redirect_uri: str) -> str:
        """Remember a new authorization (state, PKCE verifier, who asked); the URL to send them to."""
        who.require(ADMIN, "connecting a Constant Contact account")
        if not who.user:
            raise ForbiddenError(
                "connecting an account needs a signed-in user (no user name in the principal)"
            )
        connection = self._connection(name)
        self.client_secret(connection)  # fail here, not after the person has signed in
        state, challenge = self.pending.begin(
            connection=name, client_id=connection.client_id, redirect_uri=redirect_uri, user=who.user
        )
        return authorize_url(
            self.service.settings.api.oauth_base_url,
            client_id=connection.client_id,
            redirect_uri=redirect_uri,
            state=state,
            challenge=challenge,
        )

    def complete_authorization(self, who: Principal, params: Mapping[str, str]) -> Connection:
        """The OAuth callback: check state (and that the same admin started it), redeem the code."""
        who.require(ADMIN, "connecting a Constant Contact account")
        state = params.get("state") or ""
        pending = self.pending.peek(state)
        if pending is None:
            raise OAuthFlowError(
                "unknown, used or expired authorization state: start again at "
                "/api/connections/{name}/authorize",
                code="invalid_state",
            )
        if who.user.casefold() != pending.user.casefold():
            raise ForbiddenError("this authorization was started by someone else")
        pending = self.pending.consume(state)
        if pending is None:
            raise OAuthFlowError(
                "this authorization state was used already; start again", code="invalid_state"
            )
        if params.get("error"):
            error = params["error"][:100]
            description = (params.get("error_description") or "")[:300]
            raise OAuthFlowError(
                f"Constant Contact did not authorize the connection: {error} {description}".strip(),
                code=error,
            )
        code = params.get("code") or ""
        if not code:
            raise OAuthFlowError("the callback carries no authorization code", code="invalid_request")
        connection = self._connection(pending.connection)
        if connection.client_id != pending.client_id:
            raise ConflictError("the connection's client id changed during the authorization; start again")
        return self._redeem(
            connection, who.user, code=code, redirect_uri=pending.redirect_uri, verifier=pending.verifier
        )

    def authorize_device(
        self,
        who: Principal,
        name: str,
        *,
        show: Callable[[DeviceStart], None],
        sleep: Callable[[float], None] | None = None,
        timeout: float | None = None,
    ) -> Connection:
        """The device flow (headless machines): ``show`` tells the person where to enter which code.
        ``timeout`` waits less than the device code lives."""
        who.require(ADMIN, "connecting a Constant Contact account")
        connection = self._connection(name)
        oauth = self.service.settings.api.oauth_base_url
        with httpx.Client(timeout=30.0) as http:
            start = start_device(http, oauth, client_id=connection.client_id)
            if timeout is not None and timeout < start.expires_in:
                start = replace(start, expires_in=timeout)
            show(start)
            tokens = poll_device(
                http, self._token_url(), start, client_id=connection.client_id, sleep=sleep or time.sleep
            )
        return self._connected(connection, who.user, tokens)

    def connect_with_code(
        self, who: Principal, name: str, *, code: str, redirect_uri: str, verifier: str
    ) -> Connection:
        """Redeem a code obtained outside the API (the CLI's loopback redirect)."""
        who.require(ADMIN, "connecting a Constant Contact account")
        connection = self._connection(name)
        return self._redeem(connection, who.user, code=code, redirect_uri=redirect_uri, verifier=verifier)

    def _redeem(
        self, connection: Connection, user: str, *, code: str, redirect_uri: str, verifier: str
    ) -> Connection:
        """Exchange an authorization code (PKCE) and store the tokens: the end of both code flows."""
        with httpx.Client(timeout=30.0) as http:
            tokens = exchange_code(
                http,
                self._token_url(),
                client_id=connection.client_id,
                client_secret=self.client_secret(connection),
                code=code,
                redirect_uri=redirect_uri,
                verifier=verifier,
            )
        return self._connected(connection, user, tokens)

    def _connected(self, connection: Connection, user: str, tokens: Tokens) -> Connection:
        try:
            store_tokens(self.service.secrets, connection.secret_names, tokens)
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            raise ConflictError(_reserved(connection.secret_names.refresh_token)) from None
        now = utc_now()
        updated = self.service.connections.update(
            connection.name,
            lambda c: replace(
                c, status="connected", status_reason=None, connected_at=now, connected_by=user, updated_at=now
            ),
        )
        self.service.forget_client(connection.name)
        if updated is None:
            raise NotFoundError(f"connection {connection.name!r} was deleted meanwhile")
        log.info("connection %s connected", connection.name)
        return updated

    def client_secret(self, connection: Connection) -> str:
        secret = self.service.secrets.get(connection.secret_names.client_secret)
        if not secret:
            raise ConflictError(
                f"no client secret stored for connection {connection.name!r} (secret "
                f"{connection.secret_names.client_secret!r}): send client_secret with PATCH "
                f"/api/connections/{connection.name}, or store it in the vault"
            )
        return secret

    def _set_secret(self, name: str, value: str) -> None:
        try:
            self.service.secrets.set(name, value)
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            raise ConflictError(_reserved(name)) from None

    def _token_url(self) -> str:
        return self.service.settings.api.oauth_base_url.rstrip("/") + "/token"

    # -- exports -------------------------------------------------------------------------------

    def list_exports(self, who: Principal) -> list[ExportConfig]:
        who.require(VIEWER, "reading exports")
        return self.service.exports.list()

    def get_export(self, who: Principal, name: str) -> ExportConfig:
        who.require(VIEWER, "reading exports")
        return self.service.export(name)

    def put_export(self, who: Principal, name: str, body: Any) -> tuple[ExportConfig, bool]:
        """Create or replace an export, verified against Constant Contact; (config, created)."""
        who.require(CONTRIBUTOR, "configuring exports")
        if isinstance(body, dict):
            body = {**body, "name": name}
        config = ExportConfig.from_dict(body)
        connection = self.service.connections.get(config.connection)
        if connection is None:
            raise FieldErrors({"connection": f"no connection named {config.connection!r}"})
        if not self.may_use(who, connection):
            raise ForbiddenError(
                f"configuring exports: connection {config.connection!r} is not shared with you"
            )
        existing = self.service.exports.get(name)
        if existing is not None and existing.connection != config.connection:
            self._require_use(who, existing.connection, f"moving export {name!r}")
        self.verify(config, connection)
        self.service.exports.put(config)
        return config, existing is None

    def verify(self, config: ExportConfig, connection: Connection) -> None:
        """The list and the custom fields must exist in the connection's Constant Contact account."""
        if connection.status != "connected":
            raise FieldErrors(
                {
                    "connection": f"connection {connection.name!r} is {connection.status.replace('_', ' ')}: "
                    "an admin must authorize it before exports can be saved, so that the list and custom "
                    "fields can be checked in the Constant Contact account"
                }
            )
        client = self.service.client(connection.name)
        errors: dict[str, str] = {}
        try:
            try:
                client.get_list(config.list_id)
            except ApiError as exc:
                if exc.status != 404 or isinstance(exc, AuthorizationError):
                    raise
                errors["list_id"] = (
                    f"no list {config.list_id} in the Constant Contact account of connection {connection.name!r}"
                )
            wanted = [target[3:] for target, _ in config.mapping.fields if target.startswith("cf:")]
            if wanted:
                have = {str(f.get("name", "")).casefold() for f in client.custom_fields()}
                missing = [f"cf:{w}" for w in wanted if w.casefold() not in have]
                if missing:
                    errors["mapping.fields"] = (
                        f"custom field(s) {', '.join(missing)} do not exist in the Constant Contact account of "
                        f"connection {connection.name!r}; create them there first"
                    )
        except AuthorizationError as exc:
            self.service.mark_connection(connection.name, "needs_reauthorization", reason=str(exc))
            raise FieldErrors(
                {"connection": f"connection {connection.name!r} needs re-authorization: {exc}"}
            ) from None
        except ApiError as exc:
            raise VerificationUnavailableError(
                f"could not check the export against Constant Contact ({exc}); try again"
            ) from None
        except ConfigError as exc:  # e.g. the client secret is missing from the vault
            raise FieldErrors({"connection": str(exc)}) from None
        if errors:
            raise FieldErrors(errors)

    def delete_export(self, who: Principal, name: str) -> None:
        who.require(CONTRIBUTOR, "deleting exports")
        config = self.service.export(name)
        self._require_use(who, config.connection, f"deleting export {name!r}")
        self.service.exports.delete(name)

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        who: Principal,
        name: str,
        *,
        dry_run: bool = False,
        full_sync: bool = False,
        allow_shrink: bool = False,
        trigger: str = "http",
        background: bool = True,
    ) -> RunHandle:
        who.require(CONTRIBUTOR, "running exports")
        config = self.service.export(name)
        self._require_use(who, config.connection, f"running export {name!r}")
        return self.service.start_run(
            name,
            dry_run=dry_run,
            full_sync=full_sync,
            allow_shrink=allow_shrink,
            trigger=trigger,
            background=background,
        )

    def list_runs(self, who: Principal, name: str, *, limit: int = 20) -> list[dict[str, Any]]:
        who.require(VIEWER, "reading runs")
        return self.service.list_runs(name, limit=limit)

    def get_run(self, who: Principal, name: str, run_id: str) -> dict[str, Any]:
        who.require(VIEWER, "reading runs")
        return self.service.run_status(name, run_id)


def _reserved(secret: str) -> str:
    return (
        f"Key Vault still holds the deleted secret {secret!r} (soft delete): purge or recover it, or use "
        "another connection name"
    )
