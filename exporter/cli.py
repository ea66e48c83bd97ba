"""Command line: ``python -m exporter run ...`` exports segment files to a Constant Contact list;
``python -m exporter connections|exports ...`` manage the Functions app's connections and exports
(exporter.cli_manage).

Exit codes: 0 the run completed (rejected rows allowed), 1 the run failed, 2 usage or configuration
error (a message, no traceback), 3 the run is pending (waiting on Constant Contact or its daily quota).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from . import cli_manage
from .config import Settings
from .constant_contact import ConstantContactClient
from .errors import ConfigError, ExporterError
from .files import LocalFiles
from .mapping import DataMapping
from .pipeline import Exporter, ExportRequest
from .privacy import mask_text
from .report import RunReport, is_run_id
from .secrets import MemorySecretStore, SecretNames, SecretStore, secret_store_from_settings
from .storage import LocalResultStore
from .tokens import TokenProvider

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"  # a fixed, public value of the local sandbox only


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter",
        description="Export customer segments (CSV files or Customer Insights CDM folders) to a Constant "
        "Contact list.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="export segments to a list now",
        description="Export segments to a Constant Contact list and print a run report.",
    )
    run.add_argument(
        "--segment",
        action="append",
        required=True,
        metavar="PATH",
        help="a CSV file, or a CDM export folder (the one with model.json, or one run folder); "
        "repeat for several segments",
    )
    run.add_argument("--list-id", required=True, metavar="UUID", help="the Constant Contact list ID")
    run.add_argument("--email-field", required=True, metavar="NAME", help="column holding the email address")
    run.add_argument("--first-name-field", metavar="NAME", help="column holding the first name")
    run.add_argument("--last-name-field", metavar="NAME", help="column holding the last name")
    run.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="CC_FIELD=COLUMN",
        help="map another column, e.g. job_title=Occupation, birthday=DateOfBirth, cf:tier=Loyalty "
        "Tier (repeatable)",
    )
    run.add_argument("--dry-run", action="store_true", help="read, validate and report; send nothing")
    run.add_argument(
        "--mode",
        choices=("add_only", "mirror"),
        default="add_only",
        help="add_only (default) never removes; mirror removes from the list the contacts this export "
        "added that left the segment",
    )
    run.add_argument(
        "--full-sync", action="store_true", help="send every contact, not only new and changed ones"
    )
    run.add_argument(
        "--allow-shrink", action="store_true", help="mirror: remove even if the segment shrank past the guard"
    )
    run.add_argument(
        "--shrink-guard",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="mirror: no removals when the segment shrank by more than this share (default 0.5)",
    )
    run.add_argument(
        "--encoding", metavar="NAME", help="CSV encoding, e.g. cp1252 (default: UTF-8, BOM detected)"
    )
    run.add_argument("--delimiter", metavar="CHAR", help="CSV delimiter (default: detected among , ; tab |)")
    run.add_argument(
        "--day-first",
        action="store_true",
        help="dates such as 01/02/1975 are day/month/year (default: month/day/year; 31.12.1980 is always "
        "day first)",
    )
    run.add_argument(
        "--consent-field",
        metavar="NAME",
        help="column whose value must be an explicit yes for a profile to go",
    )
    run.add_argument(
        "--sandbox",
        action="store_true",
        help="export to an in-process Constant Contact sandbox (no account needed)",
    )
    run.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="folder for the run report and rejects file (default: ./results)",
    )
    run.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    resume = sub.add_parser(
        "resume",
        help="finish a pending run (exit code 3 earlier)",
        description="Finish a run that was left pending (waiting on Constant Contact or its daily quota): "
        "nothing already submitted is sent again.",
    )
    resume.add_argument("--run-id", required=True, help="the run_id of the pending run")
    resume.add_argument("--results", default="results", metavar="DIR", help="the results folder of that run")
    resume.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    cli_manage.add_parsers(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            # Said by the subcommand's parser, with its usage and the option meant if one is close; and
            # before argparse would only say that a required option (the one misspelled) is missing.
            sub = _subcommand(parser, argv)
            if wrong := _unknown_options(sub, argv):
                sub.error(_unrecognized(wrong, sub))
            args, extras = parser.parse_known_args(argv)
            if extras:
                sub.error(_unrecognized(extras, sub))
    except SystemExit as exc:  # argparse has printed the usage message
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    logging.basicConfig(level=logging.WARNING, stream=err, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("connections", "exports"):
            return cli_manage.run(args, out, err, stdin)
        if args.command == "resume":
            return _resume(args, out, err)
        return _run(args, out, err)
    except ConfigError as exc:
        print(f"error: {mask_text(str(exc))}", file=err)
        return EXIT_USAGE


def _subcommand(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the subcommand ``argv`` names (``connections authorize``)."""
    for token in argv:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if token in choices:
            parser = choices[token]
    return parser


def _unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The option-like words of ``argv`` that are not options of ``parser`` (nor prefixes of one)."""
    known = list(parser._option_string_actions)
    wrong = []
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        # argparse's own rules: a number or a word with a space in it is a value, not an option
        if not token.startswith("-") or token == "-" or " " in name or name in known or _is_number(token):
            continue
        if not (name.startswith("--") and any(option.startswith(name) for option in known)):
            wrong.append(token)
    return wrong


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unrecognized(extras: Sequence[str], parser: argparse.ArgumentParser) -> str:
    known = list(parser._option_string_actions)
    said = []
    for extra in extras:
        close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1) if extra.startswith("-") else []
        said.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    return "unrecognized arguments: " + " ".join(said)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = Settings.from_env()
    mapping = DataMapping.from_args(
        email=args.email_field,
        first_name=args.first_name_field,
        last_name=args.last_name_field,
        fields=args.field,
    )
    request = ExportRequest(
        segments=tuple(args.segment),
        list_id=args.list_id,
        mapping=mapping,
        dry_run=args.dry_run,
        mode=args.mode,
        allow_shrink=args.allow_shrink,
        shrink_guard=args.shrink_guard,
        consent_field=args.consent_field,
        encoding=args.encoding,
        delimiter=args.delimiter,
        day_first=args.day_first,
        # the in-process sandbox starts empty every time, so what an earlier run delivered is not there
        full_sync=args.full_sync or args.sandbox,
    )
    files = LocalFiles()
    for path in request.segments:
        if not path.strip():
            raise ConfigError("--segment is empty: give a CSV file or a CDM folder")
        if not files.exists(path):
            raise ConfigError(f"segment {path!r} not found")
    results = _results_store(args.results)
    started = time.monotonic()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {message}", file=err, flush=True)

    with (
        _constant_contact(settings, args, request) as (settings, client),
        tempfile.TemporaryDirectory() as tmp,
    ):
        # A sandbox run keeps its snapshot and checkpoints in a throwaway folder: what it "delivered" to
        # an in-process sandbox must never make a later real run skip those contacts.
        state = LocalResultStore(tmp) if args.sandbox else results
        exporter = Exporter(
            settings, files=files, results=results, state=state, client=client, progress=progress
        )
        report = exporter.run(request)
    return _print(report, args, out, err)


def _resume(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Finish a pending run of an earlier `run` (same --results folder, same credentials)."""
    if not is_run_id(args.run_id):
        raise ConfigError(f"--run-id {args.run_id!r} is not a run id (such as 20261203T160501042Z-3f9a1c)")
    settings = Settings.from_env()
    results = _results_store(args.results)
    args.sandbox, args.dry_run = False, False
    with _constant_contact(settings, args, None) as (settings, client):
        exporter = Exporter(settings, files=LocalFiles(), results=results, client=client)
        report = exporter.resume(f"runs/{args.run_id}")
    if report is None:
        raise ConfigError(f"no run {args.run_id!r} under {args.results}/runs")
    return _print(report, args, out, err)


def _results_store(folder: str) -> LocalResultStore:
    """The results folder, created and checked before any work (a bad path is a usage error)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--results {folder!r} is not a folder this user can write to ({exc.strerror})"
        ) from None
    return LocalResultStore(folder)


def _print(report: RunReport, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.json:
        out.write(report.to_json().decode("utf-8") + "\n")
        if report.warning:  # the summary's warning, where a person reads it
            print(report.warning, file=err)
    else:
        out.write("\n".join(report.summary_lines()) + "\n")
    return exit_code(report)


def exit_code(report: RunReport) -> int:
    if report.status == "completed":
        return EXIT_OK
    if report.status == "pending":
        return EXIT_PENDING
    if report.error and report.error.get("type") == "ConfigError":
        return EXIT_USAGE
    return EXIT_FAILED


@contextlib.contextmanager
def _constant_contact(
    settings: Settings, args: argparse.Namespace, request: ExportRequest | None
) -> Iterator[tuple[Settings, ConstantContactClient | None]]:
    """The API client for this run: none for a dry run, an in-process sandbox with --sandbox, else the real
    API with credentials from the configured secret store."""
    if args.dry_run:
        yield settings, None
        return
    if not args.sandbox or request is None:
        secrets = secret_store_from_settings(settings)
        yield settings, _client(settings, secrets)
        return
    from sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(clients={SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET}, journal=False)) as sb:
        names = SecretNames()
        secrets = MemorySecretStore(
            {
                names.client_id: SANDBOX_CLIENT_ID,
                names.client_secret: SANDBOX_CLIENT_SECRET,
                names.refresh_token: sb.issue_refresh_token(client_id=SANDBOX_CLIENT_ID),
            }
        )
        sb.ensure_list(request.list_id, name=f"Segment export {request.list_id[:8]}")
        for target, _column in request.mapping.fields:
            if target.startswith("cf:"):
                sb.create_custom_field(target[3:])
        api = replace(
            settings.api,
            api_base_url=sb.api_base_url,
            oauth_base_url=sb.oauth_base_url,
            poll_interval_seconds=0.2,
            poll_interval_max_seconds=1.0,
        )
        sandboxed = replace(settings, api=api)
        client = _client(sandboxed, secrets)
        try:
            yield sandboxed, client
        finally:
            client.close()


def _client(settings: Settings, secrets: SecretStore) -> ConstantContactClient:
    tokens = TokenProvider(secrets, token_url=settings.api.oauth_base_url.rstrip("/") + "/token")
    return ConstantContactClient(settings.api, tokens)


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(main())
    except ExporterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
