"""Run the sandbox as a process: ``python -m sandbox --port 0 --state-file sandbox-state.json``.

The first stdout line is JSON: base URLs, the client_id and one freshly seeded refresh token (the client
secret is not printed; it is the one given with --client-secret or the default). The process serves until
SIGINT/SIGTERM and then saves its state to --state-file, if given (loaded at start when it exists).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import orjson

from sandbox.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SandboxConfig
from sandbox.server import Sandbox


def _limit(value: str) -> int | None:
    """An integer limit; 0 means "no limit"."""
    number = int(value)
    return None if number == 0 else number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags mirror SandboxConfig."""
    d = SandboxConfig()
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--state-file", type=Path, help="load state from here at start, save it here at exit")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    p.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    p.add_argument("--requests-per-second", type=_limit, default=d.requests_per_second, help="0 = unlimited")
    p.add_argument("--daily-quota", type=_limit, default=d.daily_quota, help="0 = unlimited")
    p.add_argument("--token-requests-per-second", type=_limit, default=d.token_requests_per_second)
    p.add_argument("--access-token-ttl", type=float, default=d.access_token_ttl, help="seconds")
    p.add_argument("--max-import-contacts", type=int, default=d.max_import_contacts)
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--email-max-length", type=int, default=d.email_max_length)
    p.add_argument("--activity-step-seconds", type=float, default=d.activity_step_seconds)
    p.add_argument("--max-queued-activities", type=int, default=d.max_queued_activities)
    p.add_argument("--long-lived-refresh-tokens", action="store_true", help="do not rotate refresh tokens")
    p.add_argument("--auto-approve-devices", action="store_true", help="device flow needs no approval")
    p.add_argument("--journal", action="store_true", help="keep request bodies in memory (off by default)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Start, print the connection line, serve until a signal, save state."""
    args = parse_args(argv)
    config = SandboxConfig(
        requests_per_second=args.requests_per_second,
        daily_quota=args.daily_quota,
        token_requests_per_second=args.token_requests_per_second,
        access_token_ttl=args.access_token_ttl,
        max_import_contacts=args.max_import_contacts,
        max_body_bytes=args.max_body_bytes,
        email_max_length=args.email_max_length,
        activity_step_seconds=args.activity_step_seconds,
        max_queued_activities=args.max_queued_activities,
        rotate_refresh_tokens=not args.long_lived_refresh_tokens,
        auto_approve_devices=args.auto_approve_devices,
        journal=args.journal,
        clients={args.client_id: args.client_secret},
    )
    sb = Sandbox(config)
    if args.state_file is not None and args.state_file.exists():
        sb.load_state(args.state_file)
    sb.start(args.port)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    line = {
        "base_url": sb.base_url,
        "api_base_url": sb.api_base_url,
        "oauth_base_url": sb.oauth_base_url,
        "client_id": args.client_id,
        "refresh_token": sb.issue_refresh_token(args.client_id),
    }
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()
    try:
        while not done.wait(0.5):
            pass
    finally:
        sb.stop()
        if args.state_file is not None:
            sb.save_state(args.state_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
