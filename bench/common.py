"""What every part of the benchmark shares: paths, the data matching and the targets."""

from __future__ import annotations

from pathlib import Path

from exporter.mapping import DataMapping

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
LIST_ID = "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"  # any UUID: dry runs never ask Constant Contact

# The data matching used by every measurement, the one `make demo` uses minus the columns the
# generated segment does not have.
EMAIL_FIELD = "EMail"
FIRST_NAME_FIELD = "FirstName"
LAST_NAME_FIELD = "LastName"
FIELDS = (
    ("phone", "Telephone"),
    ("city", "City"),
    ("state", "State"),
    ("country", "Country"),
    ("birthday", "DateOfBirth"),
    ("cf:loyalty_tier", "Loyalty Tier"),
)
MAPPING = DataMapping(
    email=EMAIL_FIELD, first_name=FIRST_NAME_FIELD, last_name=LAST_NAME_FIELD, fields=FIELDS
)


def cli_mapping_args() -> list[str]:
    """The same matching as ``python -m exporter run`` arguments."""
    args = [
        "--email-field",
        EMAIL_FIELD,
        "--first-name-field",
        FIRST_NAME_FIELD,
        "--last-name-field",
        LAST_NAME_FIELD,
    ]
    for target, column in FIELDS:
        args += ["--field", f"{target}={column}"]
    return args


# Targets (see bench/README.md).
TARGET_PIPELINE_RATIO = 2.5  # pipeline time / bare csv.reader time
TARGET_PEAK_RSS_MB = 250.0
TARGET_E2E_SECONDS = 60.0
CC_MAX_IMPORT_CONTACTS = 40_000
CC_MAX_IMPORT_BYTES = 4_000_000  # exporter.config.MAX_IMPORT_BYTES: what one request body may hold
