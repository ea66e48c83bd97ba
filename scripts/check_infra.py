"""Check the Bicep templates in infra/: every file parses (pycep-parser) and checkov finds no failed check.

Runs with the infra virtualenv, which holds checkov and pycep-parser (they pin versions that clash with
requirements-dev.txt, hence the separate venv; see requirements-infra.txt):

    .venv-infra/bin/python scripts/check_infra.py          # human summary, exit 1 on any problem
    .venv-infra/bin/python scripts/check_infra.py --json   # the parsed templates and checkov's verdicts

A checkov finding may be suppressed only inside the resource, with a reason:
``// checkov:skip=CKV_AZURE_35: why this does not apply``. A suppression without a reason fails the check.
tests/test_infra.py runs this script and asserts on its --json output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIN_REASON_CHARS = 20  # "not needed" is not a reason


def parse_templates(infra: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Every .bicep file under infra parsed to pycep's JSON form; parse errors by file."""
    from pycep import BicepParser

    parser = BicepParser()
    parsed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for path in sorted(infra.rglob("*.bicep")):
        name = path.relative_to(infra).as_posix()
        try:
            parsed[name] = parser.parse(file_path=path)
        except Exception as exc:  # report every broken file, not just the first
            errors[name] = f"{type(exc).__name__}: {exc}"
    return parsed, errors


def _checkov_command() -> list[str]:
    beside = Path(sys.executable).with_name("checkov")
    found = str(beside) if beside.exists() else shutil.which("checkov")
    if not found:
        raise SystemExit("checkov is not installed in this environment (make infra-setup)")
    return [found]


def run_checkov(infra: Path) -> dict[str, Any]:
    """checkov's bicep framework over infra/, reduced to what the checks need."""
    env = dict(os.environ, LOG_LEVEL="ERROR")
    command = [
        *_checkov_command(),
        "--directory",
        str(infra),
        "--framework",
        "bicep",
        "--output",
        "json",
        "--compact",
        "--skip-download",  # no network: no Prisma Cloud guidelines, no policy downloads
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    try:
        data = json.loads(done.stdout)
    except ValueError:
        raise SystemExit(
            f"checkov produced no JSON (exit {done.returncode}):\n{done.stderr[-4000:]}"
        ) from None
    if isinstance(data, list):  # one report per framework; we asked for one
        data = next((d for d in data if d.get("check_type") == "bicep"), data[0])
    results = data.get("results") or {}
    summary = data.get("summary") or {}

    # results lists the files; summary only counts them
    parsing_errors = [str(p) for p in results.get("parsing_errors") or []]
    if not parsing_errors and summary.get("parsing_errors"):
        parsing_errors = [f"{summary['parsing_errors']} file(s)"]

    def brief(check: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": check.get("check_id"),
            "name": check.get("check_name"),
            "resource": check.get("resource"),
            "file": check.get("file_path"),
            "reason": ((check.get("check_result") or {}).get("suppress_comment") or "").strip(),
        }

    return {
        "version": summary.get("checkov_version"),
        "passed": [brief(c) for c in results.get("passed_checks", [])],
        "failed": [brief(c) for c in results.get("failed_checks", [])],
        "skipped": [brief(c) for c in results.get("skipped_checks", [])],
        "parsing_errors": parsing_errors,
        "resource_count": summary.get("resource_count"),
    }


def problems(parse_errors: dict[str, str], checkov: dict[str, Any]) -> list[str]:
    found = [f"{name} does not parse: {error}" for name, error in parse_errors.items()]
    found += [f"checkov could not parse {path}" for path in checkov["parsing_errors"]]
    found += [
        f"checkov {c['id']} failed for {c['resource']} in {c['file']}: {c['name']}" for c in checkov["failed"]
    ]
    found += [
        f"checkov {c['id']} is suppressed for {c['resource']} in {c['file']} without a reason"
        for c in checkov["skipped"]
        if len(c["reason"]) < MIN_REASON_CHARS
    ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--infra", type=Path, default=ROOT / "infra", help="folder with the Bicep files")
    parser.add_argument("--json", action="store_true", help="print parsed templates and checkov results")
    args = parser.parse_args(argv)
    infra = args.infra.resolve()

    parsed, parse_errors = parse_templates(infra)
    if not parsed and not parse_errors:
        print(f"no .bicep files under {infra}", file=sys.stderr)
        return 1
    checkov = run_checkov(infra)
    found = problems(parse_errors, checkov)

    if args.json:
        json.dump(
            {"templates": parsed, "parse_errors": parse_errors, "checkov": checkov, "problems": found},
            sys.stdout,
            default=str,
        )
        sys.stdout.write("\n")
    else:
        print(f"pycep: {len(parsed)} Bicep file(s) parsed, {len(parse_errors)} failed")
        print(
            f"checkov {checkov['version']}: {len(checkov['passed'])} passed, {len(checkov['failed'])} failed, "
            f"{len(checkov['skipped'])} suppressed"
        )
        for check in checkov["skipped"]:
            print(f"  suppressed {check['id']} ({check['resource']}): {check['reason']}")
        for problem in found:
            print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
