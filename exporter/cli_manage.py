"""``python -m exporter connections ...`` and ``exports ...``: the management API's operations at a terminal.

They work on the storage the Functions app uses (``EXPORTER_STORAGE``: a connection string, e.g.
``UseDevelopmentStorage=true`` for Azurite, or ``EXPORTER_STORAGE__accountName`` with ``az login``) and
on its secret store (``EXPORTER_SECRET_STORE``/``KEY_VAULT_URL``), so a connection set up here is the one
the app uses. There is no separate local-directory store: Azurite is the local store.

No roles apply here: whoever can reach the storage account and the vault already has full access. The
operator is recorded as ``cli:<login name>`` in the records' ``*_by`` fields.

Connecting an account: ``connections authorize NAME`` listens on a loopback port for Constant Contact's
redirect (RFC 8252; register ``http://127.0.0.1:<port>/callback`` with the Constant Contact app), and
``--device`` uses the device flow instead (any browser, on any machine, no redirect URI).
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import orjson
from azure.core.exceptions import AzureError

from .blobfiles import describe_azure_error
from .errors import ConfigError
from .management import Management, ManagementSettings
from .oauth_flow import DeviceStart, OAuthFlowError, authorize_url, pkce_pair
from .principals import Principal
from .report import RunReport
from .service import AppSettings, ExportService, ensure_containers

DEFAULT_PORT = 8976


def add_parsers(sub: Any) -> None:
    """The ``connections`` and ``exports`` command groups."""
    conn = sub.add_parser(
        "connections",
        help="create, share, authorize and delete Constant Contact connections",
        description="Manage connections in the app's storage and secret store.",
    )
    csub = conn.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="create a connection")
    create.add_argument("name")
    create.add_argument("--client-id", required=True, help="the Constant Contact application's API key")
    _connection_options(create)
    update = csub.add_parser("update", help="change a connection (only the options given)")
    update.add_argument("name")
    update.add_argument("--client-id", help="a new API key (the connection must be authorized again)")
    _connection_options(update)
    update.add_argument("--unshare-user", action="append", default=[], metavar="USER")
    update.add_argument("--unshare-role", action="append", default=[], metavar="ROLE")
    update.add_argument(
        "--withdraw-privacy", action="store_true", help="withdraw the data privacy acknowledgement"
    )
    csub.add_parser("list", help="list connections")
    show = csub.add_parser("show", help="show a connection")
    show.add_argument("name")
    delete = csub.add_parser(
        "delete", help="delete a connection: its exports are disabled, its secrets deleted from the vault"
    )
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="really delete (required)")
    auth = csub.add_parser("authorize", help="connect the Constant Contact account (OAuth2)")
    auth.add_argument("name")
    auth.add_argument(
        "--device", action="store_true", help="device flow: enter a code on any device, no redirect URI"
    )
    auth.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"loopback port for the redirect (default {DEFAULT_PORT}; 0 = any free port)",
    )
    auth.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the approval (default 600; the device flow waits no longer than its code lives)",
    )
    auth.add_argument("--open", action="store_true", help="open the authorize URL in a browser")

    exp = sub.add_parser(
        "exports",
        help="configure and run exports",
        description="Manage exports in the app's storage; saved exports are checked against Constant Contact.",
    )
    esub = exp.add_subparsers(dest="action", required=True)
    put = esub.add_parser("put", help="create or replace an export from a JSON file (the API's PUT body)")
    put.add_argument("name")
    put.add_argument("--file", required=True, metavar="PATH", help="JSON file, or - for stdin")
    esub.add_parser("list", help="list exports")
    eshow = esub.add_parser("show", help="show an export")
    eshow.add_argument("name")
    edelete = esub.add_parser("delete", help="delete an export")
    edelete.add_argument("name")
    erun = esub.add_parser("run", help="run an export now and print its report")
    erun.add_argument("name")
    erun.add_argument("--dry-run", action="store_true", help="read, validate and report; send nothing")
    erun.add_argument("--json", action="store_true", help="print the run report as JSON")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--display-name")
    parser.add_argument(
        "--client-secret-stdin",
        action="store_true",
        help="read the client secret from the first line of stdin (never pass it as an argument)",
    )
    parser.add_argument("--share-user", action="append", default=[], metavar="USER")
    parser.add_argument("--share-role", action="append", default=[], metavar="ROLE")
    parser.add_argument(
        "--acknowledge-privacy",
        action="store_true",
        help="acknowledge that exports send personal data to Constant Contact (needed before any run)",
    )


def build_management() -> Management:
    """The app's service on the app's storage (Azurite locally), as the Functions host would build it."""
    app = AppSettings.from_env()
    if not (app.storage_connection_string or app.storage_account or app.storage_blob_uri):
        raise ConfigError(
            "no storage configured: set EXPORTER_STORAGE (UseDevelopmentStorage=true for Azurite) or "
            "EXPORTER_STORAGE__accountName, as in the Functions app's settings"
        )
    service = ExportService(app)
    ensure_containers(service)
    return Management(service, ManagementSettings.from_env())


def operator() -> Principal:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal.system(f"cli:{user}")


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO | None = None) -> int:
    """Do one management command; returns the exit code (errors raise ConfigError for the caller)."""
    try:
        mgmt = build_management()
        who = operator()
        stdin = stdin or sys.stdin
        if args.command == "connections":
            return _connections(mgmt, who, args, out, err, stdin)
        return _exports(mgmt, who, args, out, err, stdin)
    except AzureError as exc:  # one line, not the SDK's traceback with the whole XML error body
        print(f"error: storage: {describe_azure_error(exc)}", file=err)
        return 1


def _print(out: TextIO, data: Any) -> None:
    out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _connections(
    mgmt: Management, who: Principal, args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO
) -> int:
    action = args.action
    if action == "list":
        _print(out, {"connections": [c.to_dict() for c in mgmt.list_connections(who)]})
    elif action == "show":
        _print(out, mgmt.get_connection(who, args.name).to_dict())
    elif action == "create":
        if mgmt.service.connections.get(args.name) is not None:
            raise ConfigError(f"connection {args.name!r} exists already; use connections update")
        body = _connection_body(args, stdin, current=None)
        connection, _ = mgmt.put_connection(who, args.name, body)
        _print(out, connection.to_dict())
    elif action == "update":
        current = mgmt.get_connection(who, args.name)
        body = _connection_body(args, stdin, current=current.to_dict())
        _print(out, mgmt.patch_connection(who, args.name, body).to_dict())
    elif action == "delete":
        if not args.yes:
            raise ConfigError("deleting a connection disables its exports and deletes its secrets: add --yes")
        _print(out, mgmt.delete_connection(who, args.name))
    elif action == "authorize":
        try:
            if args.device:
                connection = mgmt.authorize_device(
                    who, args.name, show=lambda s: _show_device(s, err), timeout=args.timeout
                )
            else:
                connection = _authorize_loopback(mgmt, who, args, err)
        except OAuthFlowError as exc:
            print(f"error: {exc}", file=err)
            return 1
        print(f"connection {connection.name} is connected", file=err)
        _print(out, connection.to_dict())
    return 0


def _connection_body(
    args: argparse.Namespace, stdin: TextIO, *, current: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.client_id:
        body["client_id"] = args.client_id
    if args.display_name:
        body["display_name"] = args.display_name
    if args.client_secret_stdin:
        secret = stdin.readline().strip()
        if not secret:
            raise ConfigError("--client-secret-stdin: stdin gave an empty line")
        body["client_secret"] = secret
    access = (current or {}).get("access") or {"users": [], "roles": []}
    users = [
        u
        for u in access["users"]
        if u.casefold() not in {x.casefold() for x in getattr(args, "unshare_user", [])}
    ]
    roles = [
        r
        for r in access["roles"]
        if r.casefold() not in {x.casefold() for x in getattr(args, "unshare_role", [])}
    ]
    users += args.share_user
    roles += args.share_role
    if current is None or users != access["users"] or roles != access["roles"]:
        body["access"] = {"users": users, "roles": roles}
    if args.acknowledge_privacy:
        body["privacy_acknowledged"] = True
    if getattr(args, "withdraw_privacy", False):
        if args.acknowledge_privacy:
            raise ConfigError("--acknowledge-privacy and --withdraw-privacy contradict each other")
        body["privacy_acknowledged"] = False
    return body


def _show_device(start: DeviceStart, err: TextIO) -> None:
    print(f"To connect, open {start.verification_uri} and enter the code {start.user_code}", file=err)
    if start.verification_uri_complete:
        print(f"(or open {start.verification_uri_complete})", file=err)
    print(f"Waiting up to {int(start.expires_in)} s for the approval...", file=err, flush=True)


def _authorize_loopback(mgmt: Management, who: Principal, args: argparse.Namespace, err: TextIO) -> Any:
    """Authorization code + PKCE with the redirect to a one-shot server on 127.0.0.1 (RFC 8252 §7.3)."""
    connection = mgmt.get_connection(who, args.name)
    mgmt.client_secret(connection)  # fail before anyone signs in
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    result: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query))
            if parts.path != "/callback" or params.get("state") != state:
                self._reply(400, "Unknown or stale request; this window can be closed.\n")
                return
            result.update(params)
            done.set()
            ok = "error" not in params
            self._reply(200, "Connected: you can close this window.\n" if ok else "Authorization refused.\n")

        def _reply(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the request line carries the authorization code."""

    server = HTTPServer(("127.0.0.1", args.port), Handler)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    url = authorize_url(
        mgmt.service.settings.api.oauth_base_url,
        client_id=connection.client_id,
        redirect_uri=redirect_uri,
        state=state,
        challenge=challenge,
    )
    print(f"The Constant Contact app must allow the redirect URI {redirect_uri}", file=err)
    print(f"Open this URL to sign in and allow access:\n{url}", file=err, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        if not done.wait(args.timeout):
            raise OAuthFlowError(f"no redirect arrived within {args.timeout:.0f} s", code="timeout")
    finally:
        server.shutdown()
        server.server_close()
    if result.get("error"):
        raise OAuthFlowError(
            f"Constant Contact did not authorize: {result['error']} {result.get('error_description', '')}".strip(),
            code=result["error"][:100],
        )
    return mgmt.connect_with_code(
        who, args.name, code=result.get("code", ""), redirect_uri=redirect_uri, verifier=verifier
    )


def _exports(
    mgmt: Management, who: Principal, args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO
) -> int:
    action = args.action
    if action == "list":
        _print(out, {"exports": [c.to_dict() for c in mgmt.list_exports(who)]})
    elif action == "show":
        _print(out, mgmt.get_export(who, args.name).to_dict())
    elif action == "put":
        text = stdin.read() if args.file == "-" else _read(args.file)
        try:
            body = json.loads(text)
        except ValueError:
            raise ConfigError(f"{args.file}: not valid JSON") from None
        config, created = mgmt.put_export(who, args.name, body)
        print(f"export {config.name} {'created' if created else 'replaced'}", file=err)
        _print(out, config.to_dict())
    elif action == "delete":
        mgmt.delete_export(who, args.name)
        print(f"export {args.name} deleted", file=err)
    elif action == "run":
        started = time.monotonic()
        handle = mgmt.start_run(who, args.name, dry_run=args.dry_run, trigger="cli", background=False)
        report = RunReport.from_dict(mgmt.get_run(who, args.name, handle.run_id))
        print(f"run {report.run_id} took {time.monotonic() - started:.1f} s", file=err)
        if args.json:
            out.write(report.to_json().decode() + "\n")
        else:
            out.write("\n".join(report.summary_lines()) + "\n")
        from .cli import exit_code

        return exit_code(report)
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


__all__ = ["add_parsers", "build_management", "run"]
