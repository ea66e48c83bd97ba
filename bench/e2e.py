"""End-to-end: the real CLI in a subprocess exporting to the sandbox running as its own process.

Wired the way ``scripts/demo.py`` does it: the sandbox prints its URLs and a refresh token on its first
stdout line, the credentials go to a temporary secrets file, and ``python -m exporter run ... --json`` gets
CC_API_BASE_URL, CC_OAUTH_BASE_URL, EXPORTER_SECRETS_FILE and the poll interval in its environment.
Loopback only; every wait is bounded; the sandbox process is stopped whatever happens.
"""

from __future__ import annotations

import math
import os
import queue
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from bench.common import CC_MAX_IMPORT_BYTES, CC_MAX_IMPORT_CONTACTS, ROOT, cli_mapping_args
from exporter.config import ApiSettings
from exporter.constant_contact import ConstantContactClient
from exporter.secrets import FileSecretStore, SecretNames
from exporter.tokens import TokenProvider
from sandbox import DEFAULT_CLIENT_SECRET

Json = dict[str, Any]

SANDBOX_START_TIMEOUT = 30.0
SANDBOX_STOP_TIMEOUT = 10.0
RATE_WINDOW_PAUSE = 1.2  # seconds, not counted in any figure
LIST_NAME = "Bench segment export"
CUSTOM_FIELD = "loyalty_tier"
# Real limits: the sandbox defaults, spelled out so the figures say what they were measured against.
SANDBOX_ARGS = (
    "--port",
    "0",
    "--requests-per-second",
    "4",
    "--max-import-contacts",
    str(CC_MAX_IMPORT_CONTACTS),
    "--max-body-bytes",
    str(4 * 1024 * 1024),
)
POLL_ENV = {"CC_POLL_INTERVAL_SECONDS": "0.5", "CC_POLL_INTERVAL_MAX_SECONDS": "1"}
_PROGRESS = re.compile(r"^\[\s*([0-9.]+)s\] (.*)$")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------------------------- the sandbox


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    info: Json
    stderr_path: Path

    def status_mb(self, field: str) -> float | None:
        """VmRSS / VmHWM of the sandbox process, from /proc (None where there is no /proc)."""
        try:
            with open(f"/proc/{self.process.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the sandbox has used so far."""
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        except (OSError, IndexError, ValueError):
            return None


def _read_first_line(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    reader = threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"the sandbox printed nothing within {timeout:.0f} s") from None


@contextmanager
def sandbox_process(log_dir: Path) -> Iterator[SandboxProcess]:
    """``python -m sandbox`` on 127.0.0.1, stopped (SIGTERM, then SIGKILL) on the way out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / "sandbox-stderr.log"
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", *SANDBOX_ARGS],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = _read_first_line(process.stdout, SANDBOX_START_TIMEOUT)
        if not line:
            raise RuntimeError(f"the sandbox exited {process.wait(5)} at start; see {stderr_path}")
        info = orjson.loads(line)
        if not str(info.get("base_url", "")).startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the sandbox is not on loopback: {info.get('base_url')}")
        yield SandboxProcess(process, info, stderr_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=SANDBOX_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SANDBOX_STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


# ------------------------------------------------------------------------------------------- wiring


def _client(info: Json, secrets_file: Path) -> ConstantContactClient:
    api = ApiSettings(api_base_url=info["api_base_url"], oauth_base_url=info["oauth_base_url"])
    store = FileSecretStore(secrets_file)
    return ConstantContactClient(api, TokenProvider(store, token_url=api.oauth_base_url + "/token"))


def prepare_account(sandbox: SandboxProcess, secrets_file: Path) -> str:
    """Credentials into the secrets file, the target list and the custom field; returns the list ID."""
    names = SecretNames()
    store = FileSecretStore(secrets_file)
    store.set(names.client_id, sandbox.info["client_id"])
    store.set(names.client_secret, DEFAULT_CLIENT_SECRET)  # the sandbox's fixed, public test secret
    store.set(names.refresh_token, sandbox.info["refresh_token"])
    client = _client(sandbox.info, secrets_file)
    try:
        target = client.find_list(LIST_NAME) or client.create_list(LIST_NAME)
        if not any(f.get("name") == CUSTOM_FIELD for f in client.custom_fields()):
            client.post_json("/contact_custom_fields", {"label": "loyalty tier", "type": "string"})
    finally:
        client.close()
    return str(target["list_id"])


def _cli_env(sandbox: SandboxProcess, secrets_file: Path) -> dict[str, str]:
    return dict(
        os.environ,
        CC_API_BASE_URL=sandbox.info["api_base_url"],
        CC_OAUTH_BASE_URL=sandbox.info["oauth_base_url"],
        EXPORTER_SECRET_STORE="file",
        EXPORTER_SECRETS_FILE=str(secrets_file),
        PYTHONPATH=str(ROOT),
        **POLL_ENV,
    )


# -------------------------------------------------------------------------------------------- a run


def _phases(progress: list[tuple[float, str]], wall: float) -> Json:
    """Where the CLI's time went, from its progress lines (``[  12.3s] message`` on stderr)."""

    def last(prefix: str) -> float | None:
        times = [t for t, m in progress if m.startswith(prefix)]
        return max(times) if times else None

    prepared = last("prepared ")
    submitted = last("submitted import ")
    finished = max((t for t, m in progress if m.startswith("import ")), default=None)  # "import 7 completed"
    phases: Json = {"prepare_seconds": prepared}
    if prepared is not None and submitted is not None:
        phases["submit_seconds"] = submitted - prepared
    if submitted is not None and finished is not None:
        phases["wait_after_last_submit_seconds"] = finished - submitted
    end = finished if finished is not None else prepared
    if end is not None:
        # interpreter start, imports and settings before the CLI's clock starts, and the final report
        phases["startup_and_finish_seconds"] = wall - end
    return phases


def _parse_iso(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def sandbox_timeline(info: Json, secrets_file: Path, activity_ids: list[str], started: float) -> Json:
    """Created/started/completed times of each import, as the sandbox recorded them (one GET each)."""
    client = _client(info, secrets_file)
    created, began, completed = [], [], []
    try:
        for activity_id in activity_ids:
            body = client.get_activity(activity_id)
            c, s, d = (_parse_iso(body.get(k)) for k in ("created_at", "started_at", "completed_at"))
            if c is not None and s is not None and d is not None:
                created.append(c)
                began.append(s)
                completed.append(d)
    finally:
        client.close()
    if not created:
        return {}
    processing = [d - s for s, d in zip(began, completed, strict=True)]
    return {
        "activities": len(created),
        "first_post_at_seconds": min(created) - started,
        "last_post_at_seconds": max(created) - started,
        "last_completed_at_seconds": max(completed) - started,
        "worker_busy_seconds": sum(processing),
        "processing_seconds_mean": sum(processing) / len(processing),
        "processing_seconds_max": max(processing),
        "queue_wait_seconds_max": max(s - c for c, s in zip(created, began, strict=True)),
    }


def export(
    sandbox: SandboxProcess,
    secrets_file: Path,
    csv_path: Path,
    list_id: str,
    work: Path,
    *,
    timeout: float,
    timeline: bool = True,
) -> Json:
    """One ``python -m exporter run ... --json`` to the sandbox; the report's figures and the timings."""
    results = work.parent / "results"  # shared by the runs, as a user's --results folder would be
    stderr_path = work / "cli-stderr.log"
    command = [
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--segment",
        str(csv_path),
        "--list-id",
        list_id,
        *cli_mapping_args(),
        "--results",
        str(results),
        "--json",
    ]
    env = _cli_env(sandbox, secrets_file)
    # Our own requests (setup, timeline) share the app's 4/s window and the token endpoint's 1/s: let
    # them expire so the CLI starts with clean windows, as a scheduled run would.
    time.sleep(RATE_WINDOW_PAUSE)
    sandbox_cpu_before = sandbox.cpu_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_wall = time.time()
    started = time.perf_counter()
    with stderr_path.open("w", encoding="utf-8") as stderr:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout
        )
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sandbox_cpu_after = sandbox.cpu_seconds()
    progress = []
    for line in stderr_path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _PROGRESS.match(line)
        if match:
            progress.append((float(match[1]), match[2]))
    try:
        report: Json = orjson.loads(done.stdout)
    except orjson.JSONDecodeError:
        tail = stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the CLI exited {done.returncode} without a JSON report: {tail}") from None
    activities = report.get("activities") or []
    submitted = int(report.get("submitted") or 0)
    body_bytes = sum(int(a.get("bytes") or 0) for a in activities)
    imports = sum(1 for a in activities if a.get("activity_id"))
    result: Json = {
        "exit_code": done.returncode,
        "status": report.get("status"),
        "error": report.get("error"),
        "wall_seconds": wall,
        **{
            k: report.get(k)
            for k in ("received", "valid", "rejected", "duplicates", "submitted", "delivered")
        },
        "refused_by_constant_contact": report.get("refused_by_constant_contact"),
        "sync": {k: v for k, v in (report.get("sync") or {}).items() if k != "sample"},
        "import_requests": imports,
        "min_import_requests_by_count": math.ceil(submitted / CC_MAX_IMPORT_CONTACTS) if submitted else 0,
        "min_import_requests_by_bytes": math.ceil(body_bytes / CC_MAX_IMPORT_BYTES) if body_bytes else 0,
        "contacts_per_request_mean": submitted / imports if imports else 0,
        "body_bytes_total": body_bytes,
        "activity_states": dict(Counter(str(a.get("state")) for a in activities)),
        "api_calls": report.get("api_calls"),
        "retries": report.get("retries"),
        # the rest of the API calls: get_list + custom_fields, then activity polls (retries counted apart)
        "polls": max(0, int(report.get("api_calls") or 0) - imports - 2 - int(report.get("retries") or 0)),
        "phases": _phases(progress, wall),
        "exporter_cpu_seconds": (children_after.ru_utime - children_before.ru_utime)
        + (children_after.ru_stime - children_before.ru_stime),
        "sandbox_cpu_seconds": (
            sandbox_cpu_after - sandbox_cpu_before
            if sandbox_cpu_after is not None and sandbox_cpu_before is not None
            else None
        ),
        "sandbox_rss_mb": sandbox.status_mb("VmRSS"),
        "sandbox_peak_rss_mb": sandbox.status_mb("VmHWM"),
    }
    if timeline and imports:
        ids = [str(a["activity_id"]) for a in activities if a.get("activity_id")]
        time.sleep(RATE_WINDOW_PAUSE)  # the CLI's last requests share the window
        result["sandbox_timeline"] = sandbox_timeline(sandbox.info, secrets_file, ids, started_wall)
    return result


def run_e2e(csv_path: Path, changed_path: Path | None, log_dir: Path, *, timeout: float) -> Json:
    """The full export, then (when ``changed_path`` is given) the re-run after 1% of profiles changed."""
    out: Json = {"poll_env": POLL_ENV, "sandbox_args": list(SANDBOX_ARGS)}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        secrets_file = work / "secrets.json"
        with sandbox_process(log_dir) as sandbox:
            out["sandbox_start_rss_mb"] = sandbox.status_mb("VmRSS")
            list_id = prepare_account(sandbox, secrets_file)
            (work / "full").mkdir()
            out["full"] = export(sandbox, secrets_file, csv_path, list_id, work / "full", timeout=timeout)
            if changed_path is not None:
                (work / "incremental").mkdir()
                out["incremental"] = export(
                    sandbox, secrets_file, changed_path, list_id, work / "incremental", timeout=timeout
                )
            stderr_tail = sandbox.stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            if stderr_tail.strip():
                out["sandbox_stderr_tail"] = stderr_tail
    return out
