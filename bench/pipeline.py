"""The prepare phase without sending: timing against a bare csv.reader pass, stage costs, a profile.

"The pipeline" is ``Exporter.run`` with ``dry_run=True``: read, validate, de-duplicate, serialise with
orjson, cut into import bodies, spool the bodies and the rejects/duplicates files to disk and write the
run report to a LocalResultStore in a temporary folder. Only the delivery to Constant Contact is left out.
"""

from __future__ import annotations

import cProfile
import csv
import gc
import inspect
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
from exporter import chunking, pipeline, readers, snapshot
from exporter import rejects as rejects_module
from exporter.config import Settings
from exporter.files import LocalFiles
from exporter.pipeline import Exporter, ExportRequest
from exporter.storage import LocalResultStore

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
# One dry run with a timer around each step of Exporter._prepare: the pipeline's own code, not a copy
# of it, so the breakdown cannot drift from what runs. Every step is called once per batch of rows
# (or once per run), so the timers cost nothing measurable.

# (key, label, owner, attribute): the function whose time is that step's
_STEPS: tuple[tuple[str, str, Any, str], ...] = (
    ("read", "read: csv.reader batches (exporter.readers)", readers._CsvFile, "batches"),
    ("check", "validate: check_batch (exporter.validation)", pipeline, "check_batch"),
    ("serialise", "serialise: one orjson call a batch (chunking.serialise)", pipeline, "serialise"),
    ("chunk", "cut bodies: Chunker.add_batch", chunking.Chunker, "add_batch"),
    ("spool", "spool bodies and row maps to disk (Exporter._spool)", pipeline.Exporter, "_spool"),
    ("rejects", "rejects and duplicates files (CsvSpool.add)", rejects_module.CsvSpool, "add"),
    ("snapshot", "sort the sync snapshot (SnapshotBuilder.build)", snapshot.SnapshotBuilder, "build"),
)


def _timed(func: Callable[..., Any], totals: dict[str, float], key: str) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(func):  # time spent inside each next(), not while the caller works

        def timed_generator(*args: Any, **kwargs: Any) -> Any:
            iterator = func(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    totals[key] += time.perf_counter() - started
                    return
                totals[key] += time.perf_counter() - started
                yield item

        return timed_generator

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started

    return timed


def stage_breakdown(csv_path: Path, bare_seconds: float, repeats: int = 2) -> Json:
    """Seconds spent in each step during a dry run (the run with the smallest total of ``repeats``);
    what no step claims (de-duplication, hashing, counters, the report) is the last line."""
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(repeats):
        totals = dict.fromkeys([key for key, *_ in _STEPS], 0.0)
        saved = [(owner, name, getattr(owner, name)) for _key, _label, owner, name in _STEPS]
        try:
            for key, _label, owner, name in _STEPS:
                setattr(owner, name, _timed(getattr(owner, name), totals, key))
            seconds, _counts = run_pipeline(csv_path)
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)
        if best is None or seconds < best[0]:
            best = (seconds, totals)
    assert best is not None
    seconds, totals = best
    stages = [
        {"stage": key, "label": label, "seconds": totals[key], "share": totals[key] / seconds}
        for key, label, _owner, _name in _STEPS
    ]
    rest = seconds - sum(totals.values())
    stages.append(
        {
            "stage": "rest",
            "label": "the loop itself: de-duplication, hashing, counters; then the report",
            "seconds": rest,
            "share": rest / seconds,
        }
    )
    gc.collect()
    gc.disable()
    try:
        gc_off, _counts = run_pipeline(csv_path)
    finally:
        gc.enable()
    return {
        "bare_csv_seconds": bare_seconds,
        "pipeline_seconds": seconds,
        "stages": stages,
        "ratio_parts": ratio_parts(stages, bare_seconds),
        "pipeline_gc_disabled_seconds": gc_off,
    }


# The ratio split three ways, in multiples of the bare pass: what parsing costs, what the per-field
# rules and JSON cost, and what the bookkeeping costs (de-duplication, hashes, snapshot, bodies on
# disk, rejects). The first and last would be there even if no field were looked at.
RATIO_PARTS = {"reading": ("read",), "field work": ("check", "serialise")}


def ratio_parts(stages: list[Json], bare_seconds: float) -> dict[str, float]:
    seconds = {stage["stage"]: stage["seconds"] for stage in stages}
    parts = {name: sum(seconds[key] for key in keys) / bare_seconds for name, keys in RATIO_PARTS.items()}
    claimed = {key for keys in RATIO_PARTS.values() for key in keys}
    parts["bookkeeping"] = sum(v for k, v in seconds.items() if k not in claimed) / bare_seconds
    return parts


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
    text.write(
        "Note: csv parsing and UTF-8 decoding run inside list.extend (the reader's batches), and most\n"
    )
    text.write("per-row work runs inside C functions called from a few lines, so read shares, not calls.\n\n")
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
