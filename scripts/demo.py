"""``make demo``: a real export of Microsoft's Contoso Customer Insights sample (5,000 contacts) to a list
in the Constant Contact sandbox, then the list is read back (contact_exports) and counted.

The sandbox runs as its own process, exactly as a remote API would; the export runs through the real
command line, with credentials in a local secret file, as a user would run it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from exporter.config import ApiSettings
from exporter.constant_contact import ConstantContactClient
from exporter.report import HEADLINE_COUNTS
from exporter.secrets import FileSecretStore, SecretNames
from exporter.tokens import TokenProvider
from sandbox import DEFAULT_CLIENT_SECRET

ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "customer-insights-samples" / "Contact.csv"
PUBLIC_URL = (
    "https://raw.githubusercontent.com/MicrosoftDocs/customer-insights/"
    "87b32fe5d31de3a9adfb987d73ef679cddfaf30d/ci-docs/data/ciad-files/Contact.txt"
)
CACHE = ROOT / ".cache" / "Contact.csv"
LIST_NAME = "Contoso eCommerce contacts (demo)"
MAPPING = [
    "--email-field",
    "EMail",
    "--first-name-field",
    "FirstName",
    "--last-name-field",
    "LastName",
    "--field",
    "job_title=Occupation",
    "--field",
    "phone=Telephone",
    "--field",
    "street=StreetAddress",
    "--field",
    "city=City",
    "--field",
    "state=State",
    "--field",
    "zip=PostCode",
    "--field",
    "country=Country",
    "--field",
    "birthday=DateOfBirth",
    "--field",
    "cf:loyalty_tier=Loyalty Tier",
]


def sample_file() -> Path:
    """The sample from ../shared when it is there, else downloaded once from its public URL."""
    if SHARED_SAMPLE.is_file():
        return SHARED_SAMPLE
    if not CACHE.is_file():
        print(f"downloading the Contoso sample from {PUBLIC_URL}")
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(PUBLIC_URL, timeout=60) as response:
                CACHE.write_bytes(response.read())
        except OSError as exc:
            raise SystemExit(
                f"could not download the sample ({exc}); put Contact.csv at {SHARED_SAMPLE} or {CACHE}"
            ) from None
    return CACHE


def main() -> int:
    sample = sample_file()
    print(f"segment: {sample} (Contoso sample data, Microsoft, CC BY 4.0)")
    with tempfile.TemporaryDirectory(prefix="cc-demo-") as tmp:
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())
            print(f"Constant Contact sandbox listening on {info['base_url']}")
            secrets_file = Path(tmp) / "secrets.json"
            names = SecretNames()
            store = FileSecretStore(secrets_file)
            store.set(names.client_id, info["client_id"])
            store.set(names.client_secret, DEFAULT_CLIENT_SECRET)  # the sandbox's fixed, public test secret
            store.set(names.refresh_token, info["refresh_token"])
            api = ApiSettings(
                api_base_url=info["api_base_url"],
                oauth_base_url=info["oauth_base_url"],
                poll_interval_seconds=0.2,
                poll_interval_max_seconds=1.0,
            )
            client = ConstantContactClient(api, TokenProvider(store, token_url=api.oauth_base_url + "/token"))
            target = client.find_list(LIST_NAME) or client.create_list(LIST_NAME)
            list_id = str(target["list_id"])
            if not any(f.get("name") == "loyalty_tier" for f in client.custom_fields()):
                client.post_json("/contact_custom_fields", {"label": "loyalty tier", "type": "string"})
            print(f"list {LIST_NAME!r}: {list_id}\n")
            # The sandbox, like Constant Contact, allows 4 requests a second per application across all
            # processes: let this script's own calls leave the window before the export starts.
            time.sleep(1.1)

            results = ROOT / "results" / "demo"
            env = dict(
                os.environ,
                CC_API_BASE_URL=api.api_base_url,
                CC_OAUTH_BASE_URL=api.oauth_base_url,
                EXPORTER_SECRET_STORE="file",
                EXPORTER_SECRETS_FILE=str(secrets_file),
                CC_POLL_INTERVAL_SECONDS="0.2",
                CC_POLL_INTERVAL_MAX_SECONDS="1",
            )
            command = [
                sys.executable,
                "-m",
                "exporter",
                "run",
                "--segment",
                str(sample),
                "--list-id",
                list_id,
                *MAPPING,
                "--results",
                str(results),
                "--json",
            ]
            print(
                "$ python -m exporter run --segment Contact.csv --list-id",
                list_id,
                " ".join(shlex.quote(a) for a in MAPPING),
                "\n",
            )
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
            if done.returncode not in (0,):
                print(done.stdout)
                print(f"export exited {done.returncode}")
                return 1
            report = orjson.loads(done.stdout)
            print_report(report)

            print("\nreading the list back from the sandbox (contact_exports) ...")
            time.sleep(1.1)
            export = client.begin_contact_export([list_id]).result(timeout=120)
            csv_text = client.download_export(export).decode("utf-8")
            on_list = max(0, len([line for line in csv_text.splitlines() if line.strip()]) - 1)
            client.close()
            ok = on_list == report["delivered"]
            print(
                f"list holds {on_list:,} contacts; the report says {report['delivered']:,} delivered: "
                f"{'match' if ok else 'MISMATCH'}"
            )
            return 0 if ok else 1
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=10)


def print_report(report: dict[str, object]) -> None:
    for key in ("run_id", "status", *HEADLINE_COUNTS):
        value = report[key]
        print(f"  {key:<28} {value:,}" if isinstance(value, int) else f"  {key:<28} {value}")
    for warning, count in sorted(dict(report["field_warnings"]).items()):  # type: ignore[call-overload]
        print(f"  note: {count:,} x {warning}")
    for act in report["activities"]:  # type: ignore[attr-defined]
        print(
            f"  activity {act['chunk']}: {act['state']}, {act['contacts']:,} contacts, "
            f"{act['bytes']:,} bytes, counts {act['status']}"
        )
    print(f"  report:  {report['report_file']}")
    print(f"  rejects: {report['rejects_file']}")


if __name__ == "__main__":
    sys.exit(main())
