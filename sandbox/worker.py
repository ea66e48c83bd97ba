"""The background worker that moves activities initialized -> processing -> completed.

One worker, first in first out, like a queue: a second import waits ``initialized`` while the first
one runs, which is what makes the queued-activities limit meaningful.
"""

from __future__ import annotations

import logging
import queue
import threading

from sandbox.state import Account, Activity

log = logging.getLogger("sandbox")


class ActivityWorker:
    """Runs in a daemon thread; ``stop()`` wakes it from any step wait."""

    def __init__(self, account: Account, step_seconds: float) -> None:
        self.account = account
        self.step = step_seconds
        self._queue: queue.Queue[Activity | None] = queue.Queue()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sandbox-activities", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after the current step; activities still queued stay as they are."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def submit(self, act: Activity) -> None:
        """Queue an activity for processing."""
        with self._idle:
            self._busy += 1
        self._queue.put(act)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted activity reached an end state (or is stuck); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            act = self._queue.get()
            if act is None:  # the stop sentinel; a stale one left by an earlier stop() is skipped
                if self._stopping.is_set():
                    break
                continue
            try:
                if self._stopping.wait(self.step):
                    break
                self.account.start(act)
                if self._stopping.wait(self.step):
                    break
                self.account.finish(act)
            except Exception:  # keep the worker alive; report without data (it may contain emails)
                log.error("activity %s crashed", act.activity_id, exc_info=log.isEnabledFor(logging.DEBUG))
                with self.account.lock:
                    act.state = "failed"
                    act.errors.append("Internal sandbox error.")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
