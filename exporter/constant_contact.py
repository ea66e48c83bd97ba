"""A small Constant Contact v3 client for the bulk path.

It does what the exporter needs and does it carefully: a client-side rate limit under the documented
4 requests/second, transient failures (5xx, resets, timeouts, 429 throttled) retried with capped
exponential backoff and jitter (tenacity), one token refresh on 401, and Constant Contact's two error
shapes (an array of {error_key, error_message}, or one object for 401 and 429) turned into the
exception hierarchy in exporter.errors. Bulk activities are long-running operations: ``begin_*``
methods return an ``ActivityPoller``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .config import ApiSettings
from .errors import (
    ApiError,
    QuotaExceededError,
    TerminalApiError,
    TransientApiError,
)
from .tokens import TokenProvider

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "timed_out"})
MAX_RETRY_AFTER_SECONDS = 300.0

_HINTS = {
    400: "Constant Contact rejected the request as invalid",
    403: (
        "Constant Contact refused access (403): the token lacks the contact_data scope, the user lacks the "
        "contacts:write privilege, or the application is deactivated. Authorize again with an account "
        "user who may manage contacts"
    ),
    404: "Constant Contact did not find the resource",
    409: "Constant Contact reports a conflict with an existing resource",
    415: "Constant Contact refused the content type",
}


class RateLimiter:
    """At most ``rate`` requests in any one-second window (sliding), shared by all threads of a client.

    The server counts a request when it arrives, which is after we send it: so a slot is stamped again
    when the answer is back (``release``), and the window runs from then. A fractional rate rounds down
    per second (3.5 allows 3 in any second), never up.
    """

    MARGIN = 0.05  # seconds, for clock and network jitter on top of the window

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._capacity = max(1, int(rate))
        self._window = max(1.0, self._capacity / rate)
        self._slots: list[list[float]] = []
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> list[float]:
        """Wait for a free slot and take it; returns the slot, for ``release``."""
        with self._lock:
            now = self._clock()
            while True:
                self._slots = [s for s in self._slots if s[0] + self._window + self.MARGIN > now]
                if len(self._slots) < self._capacity:
                    slot = [now]
                    self._slots.append(slot)
                    return slot
                self._sleep(min(s[0] for s in self._slots) + self._window + self.MARGIN - now)
                now = self._clock()

    def release(self, slot: list[float]) -> None:
        """The answer arrived: the request was at the server no later than now."""
        with self._lock:
            slot[0] = self._clock()


def _wait(settings: ApiSettings) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=0.5, max=settings.backoff_max_seconds)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientApiError) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)  # the server's word, within reason
        if isinstance(exc, TransientApiError) and exc.error_key == "throttled":
            return 1.0 + backoff(state) / 4  # the window is one second: wait past it
        return backoff(state)

    return wait


class ConstantContactClient:
    """Requests to ``/v3`` with auth, limits, retries and error mapping. Thread-safe."""

    def __init__(
        self,
        settings: ApiSettings,
        tokens: TokenProvider,
        *,
        http: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self._http = http or httpx.Client(timeout=settings.timeout_seconds)
        self._base = settings.api_base_url.rstrip("/")
        self._limiter = limiter or RateLimiter(settings.requests_per_second)
        self.api_calls = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, body: bytes | None = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """One API call with retries; returns the 2xx response or raises an ApiError subclass."""

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            reason = str(exc).split(": ", 1)[-1]  # the message starts with the method and path
            log.warning("retrying %s %s (attempt %d): %s", method, path, state.attempt_number + 1, reason)

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=_wait(self.settings),
            retry=retry_if_exception_type(TransientApiError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._send_authorized, method, path, body, params)

    def _send_authorized(
        self, method: str, path: str, body: bytes | None, params: Mapping[str, Any] | None
    ) -> httpx.Response:
        token = self.tokens.access_token()
        response = self._send(method, path, body, params, token)
        if response.status_code == 401:
            # An access token can expire or be revoked mid-run: refresh once and retry this request.
            self.tokens.invalidate(token)
            response = self._send(method, path, body, params, self.tokens.access_token())
        if response.is_success:
            return response
        raise self._error(response, method, path)

    def _send(
        self, method: str, path: str, body: bytes | None, params: Mapping[str, Any] | None, token: str
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        slot = self._limiter.acquire()
        self.api_calls += 1
        try:
            return self._http.request(method, self._base + path, content=body, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientApiError(f"{method} {path}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientApiError(f"{method} {path}: connection failed ({type(exc).__name__})") from None
        finally:
            self._limiter.release(slot)

    @staticmethod
    def _error(response: httpx.Response, method: str, path: str) -> ApiError:
        status = response.status_code
        key, message = _error_detail(response)
        where = f"{method} {path}"
        if status == 429:
            if key == "quota_exceeded":
                return QuotaExceededError(
                    "Constant Contact's daily request quota is used up; the run resumes after 00:00 UTC",
                    status=status,
                    error_key=key,
                )
            retry_after = _retry_after(response.headers.get("Retry-After"))
            return TransientApiError(
                f"{where}: rate limited ({message})",
                status=status,
                error_key=key or "throttled",
                retry_after=retry_after,
            )
        if status >= 500:
            return TransientApiError(
                f"{where}: Constant Contact answered {status} ({message})", status=status, error_key=key
            )
        if status == 401:
            return TerminalApiError(
                f"{where}: Constant Contact refused the access token even after a refresh",
                status=status,
                error_key=key,
            )
        hint = _HINTS.get(status, f"Constant Contact answered {status}")
        return TerminalApiError(f"{where}: {hint}: {message}", status=status, error_key=key)

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return orjson.loads(self.request("GET", path, params=params).content)

    def post_json(self, path: str, payload: object) -> Any:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return orjson.loads(self.request("POST", path, body=body).content)

    # -- lists ---------------------------------------------------------------------------------

    def get_list(self, list_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json(f"/contact_lists/{list_id}")
        return result

    def find_list(self, name: str) -> dict[str, Any] | None:
        body = self.get_json("/contact_lists", params={"name": name, "limit": 500})
        for item in body.get("lists", []):
            if item.get("name") == name:
                return dict(item)
        return None

    def create_list(self, name: str, *, description: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.post_json("/contact_lists", {"name": name, "description": description})
        return result

    def custom_fields(self) -> list[dict[str, Any]]:
        body = self.get_json("/contact_custom_fields", params={"limit": 100})
        return list(body.get("custom_fields", []))

    # -- bulk activities -----------------------------------------------------------------------

    def get_activity(self, activity_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json(f"/activities/{activity_id}")
        return result

    def begin_import_contacts(self, body: bytes) -> ActivityPoller:
        """POST one contacts_json_import body (built by exporter.chunking); returns its poller."""
        return ActivityPoller(self, self.post_json("/activities/contacts_json_import", body))

    def begin_contact_export(
        self, list_ids: Sequence[str], *, fields: Sequence[str] = ("email_address", "first_name", "last_name")
    ) -> ActivityPoller:
        return ActivityPoller(
            self,
            self.post_json(
                "/activities/contact_exports", {"list_ids": list(list_ids), "fields": list(fields)}
            ),
        )

    def iter_list_members(self, list_id: str) -> Iterator[tuple[str, str]]:
        """(contact_id, email) of every contact on a list, any status, 500 a request (cursor paging)."""
        params: dict[str, Any] | None = {"lists": list_id, "status": "all", "limit": 500}
        path = "/contacts"
        while True:
            body = self.get_json(path, params=params)
            for contact in body.get("contacts", []):
                address = contact.get("email_address")
                email = address.get("address") if isinstance(address, dict) else address
                if contact.get("contact_id") and email:
                    yield str(contact["contact_id"]), str(email).strip().lower()
            href = str(body.get("_links", {}).get("next", {}).get("href", ""))
            if not href:
                return
            path, params = _relative(href), None

    def begin_remove_list_memberships(self, contact_ids: Sequence[str], list_id: str) -> ActivityPoller:
        """Remove up to 500 contacts from one list (membership only: never unsubscribes or deletes)."""
        if not 1 <= len(contact_ids) <= 500:
            raise ValueError("remove_list_memberships takes 1 to 500 contact ids")
        payload = {"source": {"contact_ids": list(contact_ids)}, "list_ids": [list_id]}
        return ActivityPoller(self, self.post_json("/activities/remove_list_memberships", payload))

    def download_export(self, activity: Mapping[str, Any]) -> bytes:
        """The CSV of a completed contact_exports activity."""
        href = str(activity.get("_links", {}).get("results", {}).get("href", ""))
        if not href:
            raise ApiError("the contact export finished without a results link")
        return self.request("GET", _relative(href)).content


class ActivityPoller:
    """A bulk activity in flight: poll until completed, failed, cancelled or timed_out."""

    def __init__(self, client: ConstantContactClient, status: Mapping[str, Any]) -> None:
        self._client = client
        self._status = dict(status)
        self.activity_id = str(status.get("activity_id", ""))
        if not self.activity_id:
            raise ApiError("Constant Contact accepted the activity but returned no activity_id")

    @classmethod
    def resume(cls, client: ConstantContactClient, activity_id: str) -> ActivityPoller:
        return cls(client, {"activity_id": activity_id, "state": "unknown"})

    def status(self) -> dict[str, Any]:
        return self._status

    def done(self) -> bool:
        return self._status.get("state") in TERMINAL_STATES

    def update(self, status: Mapping[str, Any]) -> None:
        """A status obtained some other way (the activities list)."""
        self._status = dict(status)

    def poll(self) -> dict[str, Any]:
        self._status = self._client.get_activity(self.activity_id)
        return self._status

    def result(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Poll with growing intervals until a terminal state or ``timeout`` seconds (then the last status)."""
        settings = self._client.settings
        deadline = time.monotonic() + (settings.activity_timeout_seconds if timeout is None else timeout)
        interval = settings.poll_interval_seconds
        while not self.done():
            self.poll()
            if self.done() or time.monotonic() + interval > deadline:
                break
            time.sleep(interval)
            interval = min(interval * 1.5, settings.poll_interval_max_seconds)
        return self._status


def wait_all(pollers: Sequence[ActivityPoller], *, timeout: float) -> Iterator[ActivityPoller]:
    """Poll several activities until all end or time runs out, yielding each as it ends.

    With more than one pending, a round is one ``GET /activities?limit=500`` (the list carries each
    activity's state and counts), so waiting for 50 imports costs one request a round instead of 50;
    an activity missing from that page is polled on its own."""
    pending = [p for p in pollers if not p.done()]
    deadline = time.monotonic() + timeout
    settings = pollers[0]._client.settings if pollers else None
    interval = settings.poll_interval_seconds if settings else 1.0
    for poller in pollers:
        if poller.done():
            yield poller
    while pending and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        listed: dict[str, dict[str, Any]] = {}
        if len(pending) > 1:
            body = pending[0]._client.get_json("/activities", params={"limit": 500})
            listed = {str(a.get("activity_id")): a for a in body.get("activities", []) if isinstance(a, dict)}
        still = []
        for poller in pending:
            if poller.activity_id in listed:
                poller.update(listed[poller.activity_id])
            else:
                poller.poll()
            if poller.done():
                yield poller
            else:
                still.append(poller)
        pending = still
        if settings:
            interval = min(interval * 1.5, settings.poll_interval_max_seconds)


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    """(error_key, message) from either of Constant Contact's error shapes, or the raw status text."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason_phrase or f"HTTP {response.status_code}"
    items = body if isinstance(body, list) else [body]
    keys, messages = [], []
    for item in items:
        if isinstance(item, dict):
            key = item.get("error_key") or item.get("error")
            msg = item.get("error_message") or item.get("error_description") or ""
            if key:
                keys.append(str(key))
            messages.append(f"{key}: {msg}" if key and msg else str(msg or key or ""))
    text = "; ".join(m for m in messages if m) or response.reason_phrase or f"HTTP {response.status_code}"
    return (keys[0] if keys else None), text


def _relative(href: str) -> str:
    """An API link (absolute, or starting /v3) as a path below the configured base URL."""
    return href.split("/v3", 1)[1] if "/v3" in href else href


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
