"""The HTTP server and the ``Sandbox`` facade that tests and the demo use.

Per request, in order: journal count -> injected fault -> (OAuth route) or (/v3: bearer token 401 ->
scope 403 -> daily quota 429 -> per-second throttle 429 -> endpoint) -> journal record.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.api import URLS, V3Api, dispatch, unauthorized_scope
from sandbox.clock import Clock
from sandbox.config import DEFAULT_CLIENT_ID, SandboxConfig
from sandbox.faults import QUOTA_BODY, THROTTLED_BODY, Fault, Faults
from sandbox.journal import Journal, RecordedExchange
from sandbox.limits import DailyQuota, SlidingWindow
from sandbox.oauth import OAuthServer
from sandbox.replies import api_error, json_reply, unauthorized
from sandbox.state import Account, ContactStatus
from sandbox.worker import ActivityWorker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("sandbox")

OAUTH_PREFIX = "/oauth2/default/v1"
API_PREFIX = "/v3"
MAX_READ_BYTES = 64 * 1024 * 1024  # hard cap on what the sandbox reads from one request body

OAUTH_URLS = Map(
    [
        Rule(f"{OAUTH_PREFIX}/authorize", methods=["GET"], endpoint="authorize"),
        Rule(f"{OAUTH_PREFIX}/token", methods=["POST"], endpoint="token"),
        Rule(f"{OAUTH_PREFIX}/device/authorize", methods=["POST"], endpoint="device_authorize"),
        Rule("/activate", methods=["GET"], endpoint="activate"),
    ]
)


class _ResetConnection(ConnectionResetError):
    """Raised inside the app to make the handler drop the connection without an answer."""


class _QuietHandler(WSGIRequestHandler):
    """No request logging (paths carry emails, headers carry tokens); resets close the socket hard."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Silence werkzeug's per-request and error lines."""

    def connection_dropped(self, error: BaseException, environ: WSGIEnvironment | None = None) -> None:
        """For an injected reset: no keep-alive, and an abortive close (SO_LINGER 0) after the handler."""
        if isinstance(error, _ResetConnection):
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Sandbox:
    """A Constant Contact v3 look-alike on 127.0.0.1. Use ``start()``/``stop()`` or ``with``."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = Clock()
        self.account = Account(self.config, self.clock)
        self.oauth = OAuthServer(self.config, self.clock)
        self.faults = Faults(self.oauth.expire_access_tokens)
        self._journal = Journal(self.config.journal)
        self._worker = ActivityWorker(self.account, self.config.activity_step_seconds)
        self._api = V3Api(self.account, self._worker, self.faults)
        self._rate = SlidingWindow(self.config.requests_per_second)
        self._quota = DailyQuota(self.config.daily_quota)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        """Bind 127.0.0.1:``port`` (0 = any free port), serve in a daemon thread, return the base URL."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = make_server("127.0.0.1", port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.port}"
        self.oauth.root_url = self.base_url
        self.oauth.issuer = self.base_url + "/oauth2/default"
        self._worker.start()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=True
        )  # a short poll interval keeps stop() fast (shutdown waits for one poll)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; delayed requests are woken up and the worker stops."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._worker.stop()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_base_url(self) -> str:
        """Where the v3 API lives, e.g. http://127.0.0.1:PORT/v3."""
        return self.base_url + API_PREFIX

    @property
    def oauth_base_url(self) -> str:
        """Where the OAuth endpoints live, e.g. http://127.0.0.1:PORT/oauth2/default/v1."""
        return self.base_url + OAUTH_PREFIX

    # -- OAuth helpers -----------------------------------------------------------------------------
    def issue_refresh_token(
        self, client_id: str = DEFAULT_CLIENT_ID, *, scope: str = "contact_data offline_access"
    ) -> str:
        """A refresh token, as if the user had authorized ``client_id`` once."""
        return self.oauth.issue_refresh_token(client_id, scope)

    def issue_access_token(
        self, client_id: str = DEFAULT_CLIENT_ID, *, scope: str = "contact_data offline_access"
    ) -> str:
        """A ready access token (skips the token endpoint and its 1 rps limit)."""
        return self.oauth.issue_access_token(client_id, scope)

    def approve_device(self, user_code: str, *, approve: bool = True) -> None:
        """The user approves (or denies) a pending device authorization."""
        self.oauth.approve_device(user_code, approve)

    # -- seeding and inspection --------------------------------------------------------------------
    def create_list(self, name: str, *, description: str | None = None, favorite: bool = False) -> str:
        """Create a contact list; returns its list_id."""
        return self.account.create_list(name, description, favorite).list_id

    def ensure_list(self, list_id: str, *, name: str) -> str:
        """Seed a list with a chosen id unless it exists (so a user's own list ID works in --sandbox runs)."""
        with self.account.lock:
            if list_id not in self.account.lists:
                self.account.create_list(name, None, False, list_id)
        return list_id

    def create_custom_field(self, label: str, type: str = "string") -> str:
        """Create a custom field (name = label with blanks -> underscores); returns its id."""
        return self.account.create_custom_field(label, type).custom_field_id

    def add_contact(
        self,
        email: str,
        *,
        status: ContactStatus = "active",
        list_ids: Iterable[str] = (),
        first_name: str | None = None,
        last_name: str | None = None,
        job_title: str | None = None,
        company_name: str | None = None,
        custom_fields: Mapping[str, str] | None = None,
    ) -> str:
        """Seed a contact; ``custom_fields`` is keyed by custom field name (``cf:`` prefix optional)."""
        fields = {"first_name": first_name, "last_name": last_name}
        fields |= {"job_title": job_title, "company_name": company_name}
        contact = self.account.add_contact(
            email, status=status, list_ids=list_ids, fields=fields, custom_fields=custom_fields
        )
        return contact.contact_id

    def list_members(self, list_id: str) -> list[dict[str, Any]]:
        """Contacts currently on the list, in the order they joined."""
        with self.account.lock:
            lst = self.account.lists[list_id]
            return [self.account.contact_view(self.account.contacts[cid]) for cid in lst.members]

    def contact(self, email: str) -> dict[str, Any] | None:
        """A contact by email (any status, deleted included), or None."""
        with self.account.lock:
            found = self.account.contact_by_email(email)
            return self.account.contact_view(found) if found else None

    def activity(self, activity_id: str) -> dict[str, Any] | None:
        """An activity status body, as GET /v3/activities/{id} would return it."""
        with self.account.lock:
            act = self.account.activities.get(activity_id)
            return act.body() if act else None

    def wait_for_activities(self, timeout: float = 10.0) -> bool:
        """Block until no activity is waiting for the worker (stuck ones do not count)."""
        return self._worker.wait_idle(timeout)

    # -- journal -----------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedExchange]:
        """Every HTTP exchange so far, oldest first (a copy)."""
        return self._journal.items()

    def count(self, method: str = "*", path_prefix: str = "") -> int:
        """How many requests were received (faulted and refused ones included)."""
        return self._journal.count(method, path_prefix)

    def clear_requests(self) -> None:
        """Forget the journal and the counters."""
        self._journal.clear()

    # -- clock -------------------------------------------------------------------------------------
    def now(self) -> datetime:
        """The sandbox's current UTC time."""
        return self.clock.now()

    def set_now(self, when: datetime) -> None:
        """Jump the sandbox clock (quota day, token and code expiry); it keeps running from there."""
        self.clock.set(when)

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward by ``seconds``."""
        self.clock.advance(seconds)

    def quota_used(self, client_id: str = DEFAULT_CLIENT_ID) -> int:
        """Requests counted against ``client_id``'s daily quota today (sandbox clock)."""
        return self._quota.used(client_id, self.clock.time())

    # -- persistence -------------------------------------------------------------------------------
    def save_state(self, path: str | Path) -> None:
        """Write lists, custom fields, contacts and OAuth grants to a JSON file."""
        data = {"account": self.account.dump(), "oauth": self.oauth.dump()}
        Path(path).write_bytes(orjson.dumps(data))

    def load_state(self, path: str | Path) -> None:
        """Load what ``save_state`` wrote (into an empty sandbox)."""
        data = orjson.loads(Path(path).read_bytes())
        self.account.load(data.get("account", {}))
        self.oauth.load(data.get("oauth", {}))

    # -- WSGI --------------------------------------------------------------------------------------
    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.time()
        request = Request(environ)
        request.max_content_length = MAX_READ_BYTES
        method, path = request.method, request.path
        self._journal.received(method, path)
        try:
            body = request.get_data(cache=True)  # cached: request.form parses the same bytes
        except HTTPException as exc:  # too large (413), client gone mid-body (400)...
            response = api_error(exc.code or 400, "bad_request", exc.name)
            self._record(request, b"", response, started, None)
            return response(environ, start_response)
        fault = self.faults.take(method, path)
        try:
            response = self._answer(request, body, fault)
        except _ResetConnection:
            self._record(request, body, None, started, "reset")
            raise
        self._record(request, body, response, started, fault.kind if fault else None)
        return response(environ, start_response)

    def _answer(self, request: Request, body: bytes, fault: Fault | None) -> Response:
        if fault is not None and fault.kind == "delay":
            self._stopping.wait(fault.seconds)
        if fault is not None and not fault.after and fault.kind in ("respond", "reset"):
            return self._apply_fault(fault)
        try:
            response = self._route(request, body)
        except Exception as exc:  # never leak a traceback (it may hold emails) to the client or the log
            log.error("sandbox internal error: %s", type(exc).__name__)
            log.debug("sandbox error", exc_info=True)
            response = api_error(500, "server_error", "There was a problem with our internal service.")
        if fault is not None and fault.after and fault.kind in ("respond", "reset"):
            return self._apply_fault(fault)
        return response

    @staticmethod
    def _apply_fault(fault: Fault) -> Response:
        if fault.kind == "reset":
            raise _ResetConnection
        return Response(fault.body, status=fault.status, headers=fault.headers)

    def _route(self, request: Request, body: bytes) -> Response:
        path = request.path
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return self._v3(request, body)
        adapter = OAUTH_URLS.bind_to_environ(request.environ)
        try:
            endpoint, _args = adapter.match()
        except NotFound:
            return api_error(404, "not_found", "The requested resource was not found.")
        except MethodNotAllowed:
            return api_error(405, "method_not_allowed", "Method not allowed.")
        handler = {
            "authorize": self.oauth.authorize,
            "token": self.oauth.token,
            "device_authorize": self.oauth.device_authorize,
            "activate": self.oauth.activate,
        }[str(endpoint)]
        return handler(request)

    def _v3(self, request: Request, body: bytes) -> Response:
        header = request.headers.get("Authorization", "")
        scheme, _, bearer = header.partition(" ")
        token = self.oauth.authenticate(bearer.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            return unauthorized()
        if "contact_data" not in token.scopes:
            return unauthorized_scope()
        now = self.clock.time()
        # Limits are per app key (client_id), shared by every token and account [CC-FORUM 399094].
        if self._quota.exceeded(token.client_id, now):
            return json_reply(429, QUOTA_BODY)
        if not self._rate.allow(token.client_id, now):
            return json_reply(429, THROTTLED_BODY)
        self._quota.spend(token.client_id, now)
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return api_error(404, "not_found", "The requested resource was not found.")
        except MethodNotAllowed:
            return api_error(405, "method_not_allowed", "Method not allowed.")
        return dispatch(self._api, request, body, str(endpoint), args)

    def _record(
        self, request: Request, body: bytes, response: Response | None, started: float, fault: str | None
    ) -> None:
        if not self.config.journal:
            return
        self._journal.add(
            RecordedExchange(
                method=request.method,
                path=request.path,
                query=request.query_string.decode("latin-1"),
                headers=dict(request.headers.items()),
                body=body,
                status=response.status_code if response is not None else None,
                response_headers=dict(response.headers.items()) if response is not None else {},
                response_body=response.get_data() if response is not None else b"",
                time=started,
                duration=time.time() - started,
                fault=fault,
            )
        )
