"""Fault injection: make the next matching request(s) fail the way a real network or CC might.

Faults live in a FIFO; the first pending fault whose method and path prefix match a request is used and
its ``times`` counter goes down by one (``times=None`` means until ``clear()``). A faulted request that
is refused *before* processing does not count against the rate limit or the daily quota.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

FaultKind = Literal["respond", "reset", "delay"]
ActivityOutcome = Literal["failed", "timed_out", "cancelled", "stuck"]
ACTIVITY_OUTCOMES: tuple[str, ...] = ("failed", "timed_out", "cancelled", "stuck")

THROTTLED_BODY: dict[str, str] = {"error_key": "throttled", "error_message": "Too Many Requests"}
QUOTA_BODY: dict[str, str] = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}


@dataclass
class Fault:
    """One pending fault. ``after=True`` lets the request be processed first (state changes!) and only
    then spoils the answer: the "server did it but the client never heard" case."""

    kind: FaultKind
    method: str = "*"
    path: str = ""
    times: int | None = 1
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Same method (or ``*``) and the request path starts with ``path``."""
        return (self.method == "*" or self.method.upper() == method.upper()) and path.startswith(self.path)


@dataclass
class _ActivityFault:
    outcome: ActivityOutcome
    path: str
    times: int | None


class Faults:
    """The ``sb.faults`` switchboard. Every method returns immediately; faults apply to later requests."""

    def __init__(self, expire_tokens: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._activity_faults: list[_ActivityFault] = []
        self._expire_tokens = expire_tokens

    # -- HTTP-level faults -------------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        """Queue a fault built by hand."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def respond(
        self,
        status: int,
        body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
        *,
        method: str = "*",
        path: str = "",
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        after: bool = False,
    ) -> Fault:
        """Answer with ``status`` and ``body`` (dicts/lists are sent as JSON) instead of the real answer."""
        hdrs = dict(headers or {})
        if isinstance(body, Mapping | list):
            raw = orjson.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body or b""
        return self.add(
            Fault("respond", method, path, times, status=status, body=raw, headers=hdrs, after=after)
        )

    def throttle(
        self,
        *,
        retry_after: float | None = None,
        method: str = "*",
        path: str = "",
        times: int | None = 1,
    ) -> Fault:
        """429 with the documented throttled body; a ``Retry-After`` header only if asked (CC sends none)."""
        headers = {} if retry_after is None else {"Retry-After": _fmt_seconds(retry_after)}
        return self.respond(429, THROTTLED_BODY, method=method, path=path, times=times, headers=headers)

    def quota_exceeded(self, *, method: str = "*", path: str = "", times: int | None = 1) -> Fault:
        """429 with the documented daily-quota body."""
        return self.respond(429, QUOTA_BODY, method=method, path=path, times=times)

    def reset(
        self, *, method: str = "*", path: str = "", times: int | None = 1, after: bool = False
    ) -> Fault:
        """Close the connection without answering (clients see "server disconnected")."""
        return self.add(Fault("reset", method, path, times, after=after))

    def delay(self, seconds: float, *, method: str = "*", path: str = "", times: int | None = 1) -> Fault:
        """Sleep ``seconds`` before handling the request (a client read timeout shorter than this fires,
        but the request is still processed afterwards, as a real server would)."""
        return self.add(Fault("delay", method, path, times, seconds=seconds))

    def take(self, method: str, path: str) -> Fault | None:
        """Use up one matching fault (called by the server for every request)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- state faults ------------------------------------------------------------------------------
    def expire_access_tokens(self) -> int:
        """Expire every access token issued so far, right now; returns how many were live."""
        return self._expire_tokens()

    def activities(self, outcome: ActivityOutcome, *, times: int | None = 1, path: str = "") -> None:
        """Make the next ``times`` activities created by a request under ``path`` end ``failed``,
        ``timed_out`` or ``cancelled`` (nothing applied), or stay ``processing`` forever (``stuck``)."""
        if outcome not in ACTIVITY_OUTCOMES:
            raise ValueError(f"outcome must be one of {ACTIVITY_OUTCOMES}")
        with self._lock:
            self._activity_faults.append(_ActivityFault(outcome, path, times))

    def take_activity_outcome(self, path: str) -> ActivityOutcome | None:
        """Used by the server when it queues an activity."""
        with self._lock:
            for fault in self._activity_faults:
                if path.startswith(fault.path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._activity_faults.remove(fault)
                    return fault.outcome
        return None

    # -- housekeeping ------------------------------------------------------------------------------
    def pending(self) -> list[Fault]:
        """HTTP faults not used up yet."""
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()
            self._activity_faults.clear()


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
