"""The prepare phase without sending: timing against a bare csv.reader pass, stage costs, a profile.

"The pipeline" is ``Exporter.run`` with ``dry_run=True``: read, validate, de-duplicate, serialise with
orjson, cut into import bodies, spool the bodies and the rejects/duplicates files to disk and write the
run report to a LocalResultStore in a temporary folder. Only the delivery to Constant Contact is left out.
"""

from __future__ import annotations

import cProfile
import csv
import gc
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import LIST_ID, MAPPING, ROOT
from exporter.chunking import Chunker
from exporter.config import Settings
from exporter.files import LocalFiles
from exporter.mapping import resolve
from exporter.pipeline import Exporter, ExportRequest
from exporter.readers import open_segment
from exporter.storage import LocalResultStore
from exporter.validation import check_row

Json = dict[str, Any]


# ------------------------------------------------------------------------------------------ one pass


def run_pipeline(csv_path: Path) -> tuple[float, Json]:
    """One dry-run export of ``csv_path``; (seconds, the report's counts). Raises if the run failed."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        exporter = Exporter(
            Settings(),  # defaults, not the environment: the figures must not depend on the shell
            files=LocalFiles(),
            results=LocalResultStore(Path(tmp) / "results"),
            client=None,
            workdir=tmp,
        )
        request = ExportRequest(segments=(str(csv_path),), list_id=LIST_ID, mapping=MAPPING, dry_run=True)
        started = time.perf_counter()
        report = exporter.run(request)
        seconds = time.perf_counter() - started
    if report.status != "completed":
        raise RuntimeError(f"the dry run ended {report.status}: {report.error}")
    counts = {
        "received": report.received,
        "valid": report.valid,
        "rejected": report.rejected,
        "duplicates": report.duplicates,
        "contacts": sum(a.contacts for a in report.activities),
        "chunks": report.chunks,
        "body_bytes": sum(a.bytes for a in report.activities),
        "field_warnings": dict(report.field_warnings),
    }
    return seconds, counts


def bare_csv(csv_path: Path) -> tuple[float, int]:
    """A bare ``csv.reader`` pass over the file: the floor any CSV pipeline in Python stands on."""
    started = time.perf_counter()
    rows = 0
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for _row in csv.reader(fh):
            rows += 1
    return time.perf_counter() - started, rows


def time_pipeline(csv_path: Path, repeats: int) -> Json:
    """Best of ``repeats`` for the pipeline and the bare reader, interleaved, in this process."""
    bare_csv(csv_path)  # warm the page cache once, untimed
    bare_times: list[float] = []
    pipe_times: list[float] = []
    counts: Json = {}
    rows = 0
    for _ in range(repeats):
        seconds, rows = bare_csv(csv_path)
        bare_times.append(seconds)
        seconds, counts = run_pipeline(csv_path)
        pipe_times.append(seconds)
    bare, pipe = min(bare_times), min(pipe_times)
    return {
        "bare_csv_seconds": bare,
        "bare_csv_runs": bare_times,
        "bare_csv_rows": rows,
        "pipeline_seconds": pipe,
        "pipeline_runs": pipe_times,
        "ratio": pipe / bare,
        "rows_per_second": counts["received"] / pipe,
        "counts": counts,
    }


# ------------------------------------------------------------------------------------ stage breakdown
# Each pass below adds one step of Exporter._prepare's loop to the previous one; the difference between
# two passes is what that step costs. They mirror exporter/pipeline.py at the time of writing: if that
# loop changes, the full dry run above stays exact, the breakdown becomes an approximation.


def _segment_tables(csv_path: Path) -> Any:
    return open_segment(LocalFiles(), str(csv_path)).tables


def _pass_read(csv_path: Path) -> int:
    n = 0
    for table in _segment_tables(csv_path):
        for _row, _values in table.rows():
            n += 1
    return n


def _pass_check(csv_path: Path) -> int:
    rules = Settings().rules
    n = 0
    for table in _segment_tables(csv_path):
        plan = resolve(MAPPING, table.columns, source=table.source)
        for _row, values in table.rows():
            if check_row(values, plan, rules).key is not None:
                n += 1
    return n


def _pass_dedupe(csv_path: Path) -> int:
    rules = Settings().rules
    seen: dict[str, tuple[str, int]] = {}
    for table in _segment_tables(csv_path):
        plan = resolve(MAPPING, table.columns, source=table.source)
        source = table.source
        for row, values in table.rows():
            checked = check_row(values, plan, rules)
            if checked.contact is None or checked.key is None or checked.key in seen:
                continue
            seen[checked.key] = (source, row)
    return len(seen)


def _pass_serialise(csv_path: Path) -> int:
    rules = Settings().rules
    seen: dict[str, tuple[str, int]] = {}
    dumps = orjson.dumps
    size = 0
    for table in _segment_tables(csv_path):
        plan = resolve(MAPPING, table.columns, source=table.source)
        source = table.source
        for row, values in table.rows():
            checked = check_row(values, plan, rules)
            if checked.contact is None or checked.key is None or checked.key in seen:
                continue
            seen[checked.key] = (source, row)
            size += len(dumps(checked.contact))
    return len(seen)


def _pass_chunk(csv_path: Path) -> int:
    settings = Settings()
    rules = settings.rules
    chunker = Chunker([LIST_ID], settings.chunks)
    seen: dict[str, tuple[str, int]] = {}
    dumps = orjson.dumps
    chunks = 0
    for table in _segment_tables(csv_path):
        plan = resolve(MAPPING, table.columns, source=table.source)
        source = table.source
        for row, values in table.rows():
            checked = check_row(values, plan, rules)
            if checked.contact is None or checked.key is None or checked.key in seen:
                continue
            seen[checked.key] = (source, row)
            if chunker.add(dumps(checked.contact), checked.key, source, row):
                chunks += 1
    return len(seen)


def _pass_sync(csv_path: Path) -> int:
    """The chunk pass plus what incremental sync adds per contact (exporter.snapshot), when it exists."""
    from exporter.snapshot import NEW, SnapshotBuilder, email_key, fields_hash

    settings = Settings()
    rules = settings.rules
    chunker = Chunker([LIST_ID], settings.chunks)
    builder = SnapshotBuilder()
    seen: dict[str, tuple[str, int]] = {}
    dumps = orjson.dumps
    for table in _segment_tables(csv_path):
        plan = resolve(MAPPING, table.columns, source=table.source)
        source = table.source
        for row, values in table.rows():
            checked = check_row(values, plan, rules)
            if checked.contact is None or checked.key is None or checked.key in seen:
                continue
            seen[checked.key] = (source, row)
            item = dumps(checked.contact)
            builder.add(email_key(checked.key), fields_hash(item) | NEW)
            chunker.add(item, checked.key, source, row)
    builder.build()
    return len(seen)


def _has_snapshot() -> bool:
    try:
        import exporter.snapshot  # noqa: F401
    except ImportError:
        return False
    return True


STAGES: tuple[tuple[str, str, Callable[[Path], int]], ...] = (
    ("read", "exporter.readers (open_segment + Table.rows)", _pass_read),
    ("check", "+ exporter.validation.check_row", _pass_check),
    ("dedupe", "+ de-duplication dict", _pass_dedupe),
    ("serialise", "+ orjson.dumps per contact", _pass_serialise),
    ("chunk", "+ Chunker.add (bodies built in memory)", _pass_chunk),
)
if _has_snapshot():
    STAGES += (("sync", "+ snapshot: email_key, fields_hash, SnapshotBuilder", _pass_sync),)


def stage_breakdown(csv_path: Path, bare_seconds: float, pipeline_seconds: float, repeats: int = 2) -> Json:
    """Cumulative passes (best of ``repeats`` each), the marginal cost of every step, a GC-off what-if."""
    stages: list[Json] = []
    previous = bare_seconds
    for key, label, func in STAGES:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            func(csv_path)
            runs.append(time.perf_counter() - started)
        seconds = min(runs)
        stages.append(
            {
                "stage": key,
                "label": label,
                "cumulative_seconds": seconds,
                "marginal_seconds": seconds - previous,
            }
        )
        previous = seconds
    stages.append(
        {
            "stage": "rest",
            "label": "+ spool bodies, rejects/duplicates CSV, counters, report (= dry run)",
            "cumulative_seconds": pipeline_seconds,
            "marginal_seconds": pipeline_seconds - previous,
        }
    )
    gc.collect()
    gc.disable()
    try:
        gc_off, _counts = run_pipeline(csv_path)
    finally:
        gc.enable()
    return {"bare_csv_seconds": bare_seconds, "stages": stages, "pipeline_gc_disabled_seconds": gc_off}


# -------------------------------------------------------------------------------------------- profile


def _label(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":  # built-ins: cProfile writes "<built-in method ...>"
        return func
    path = Path(filename)
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = path.name
    return f"{shown}:{line}({func})"


def profile_pipeline(csv_path: Path, out_file: Path, top: int = 25) -> Json:
    """cProfile over one dry run; the top functions by cumulative and by total time go to ``out_file``."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        run_pipeline(csv_path)
    finally:
        profiler.disable()
    seconds = time.perf_counter() - started
    text = io.StringIO()
    text.write(f"cProfile of one dry-run export of {csv_path.name} ({seconds:.1f} s under the profiler)\n")
    text.write("Note: csv parsing and UTF-8 decoding run inside the reader generator's next() calls and\n")
    text.write("are counted in the tottime of exporter/readers.py (_CsvFile.rows), not as separate rows.\n\n")
    for sort in ("cumulative", "tottime"):
        text.write(f"==== top {top} by {sort} time ====\n")
        pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(top)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text.getvalue(), encoding="utf-8")

    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for _cc, _nc, tt, _ct, _callers in raw.values())
    rows = [
        {
            "function": _label(key),
            "ncalls": nc,
            "tottime": tt,
            "cumtime": ct,
            "share": tt / total if total else 0,
        }
        for key, (_cc, nc, tt, ct, _callers) in raw.items()
    ]
    by_total = sorted(rows, key=lambda r: r["tottime"], reverse=True)[:top]
    by_cumulative = sorted(rows, key=lambda r: r["cumtime"], reverse=True)[:top]
    return {
        "seconds_under_profiler": seconds,
        "file": str(out_file),
        "top_tottime": by_total,
        "top_cumtime": by_cumulative,
    }


# ---------------------------------------------------------------------------------- peak memory (child)


def measure_peak_rss(csv_path: Path, timeout: float) -> Json:
    """Run one dry run in a fresh interpreter (``python -m bench.child``) and read its peak RSS."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", str(csv_path)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.child exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result: Json = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result
