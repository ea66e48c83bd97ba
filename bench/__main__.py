"""``python -m bench`` (``make bench``): figures for a million-profile export, printed and saved as JSON.

See bench/README.md for what each figure means and the targets. Results go to
bench/out/results-<timestamp>.json and bench/out/latest.json (bench/out/ is git-ignored).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    OUT_DIR,
    ROOT,
    TARGET_E2E_SECONDS,
    TARGET_PEAK_RSS_MB,
    TARGET_PIPELINE_RATIO,
)
from bench.datagen import ensure_dataset
from exporter.config import MAX_PROFILES_PER_EXPORT

Json = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="profiles in the segment (default 1,000,000)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    p.add_argument(
        "--repeats", type=int, default=3, help="pipeline / bare-reader runs, best kept (default 3)"
    )
    p.add_argument("--skip-e2e", action="store_true", help="no sandbox export and no incremental re-run")
    p.add_argument("--skip-profile", action="store_true", help="no stage breakdown and no cProfile")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds allowed for each subprocess (default 900)"
    )
    args = p.parse_args(argv)
    if not 1 <= args.rows <= MAX_PROFILES_PER_EXPORT:
        p.error(f"--rows must be 1..{MAX_PROFILES_PER_EXPORT:,} (the exporter's limit per export)")
    if not 1 <= args.repeats <= 10:
        p.error("--repeats must be 1..10")
    return args


def _git() -> Json:
    """The commit measured and the files that differed from it: figures are only comparable with these."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        changed = [
            line[3:] for line in git("status", "--porcelain").splitlines() if line[3:].startswith("exporter/")
        ]
        return {"head": git("rev-parse", "--short", "HEAD"), "exporter_files_changed": changed}
    except (OSError, subprocess.SubprocessError):
        return {}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: Json = {
            "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "rows": args.rows,
            "seed": args.seed,
            "repeats": args.repeats,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": _loadavg(),
            "git": _git(),
            "targets": {
                "pipeline_ratio_max": TARGET_PIPELINE_RATIO,
                "peak_rss_mb_max": TARGET_PEAK_RSS_MB,
                "e2e_seconds_max": TARGET_E2E_SECONDS,
            },
            "errors": {},
        }

    def section(self, name: str, func: Callable[[], None]) -> None:
        """Run one part; a failure is recorded and printed, and the other parts still run."""
        try:
            func()
        except Exception as exc:
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"\n!! {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)

    # -- 1. data ---------------------------------------------------------------------------------
    def dataset(self) -> None:
        data = ensure_dataset(OUT_DIR, self.args.rows, self.args.seed)
        self.path = data.path
        how = "reused" if data.reused else f"generated in {data.seconds:.1f} s"
        print(
            f"segment       {data.path.name}: {data.rows:,} profiles, {data.size_bytes / 1e6:.0f} MB ({how})"
        )
        self.results["dataset"] = {
            "path": str(data.path),
            "size_bytes": data.size_bytes,
            "reused": data.reused,
            "generate_seconds": data.seconds,
        }

    # -- 2. pipeline vs bare csv.reader ------------------------------------------------------------
    def pipeline(self) -> None:
        from bench.pipeline import time_pipeline

        t = time_pipeline(self.path, self.args.repeats)
        self.results["pipeline"] = t
        self.bare, self.pipe = t["bare_csv_seconds"], t["pipeline_seconds"]
        c = t["counts"]
        print(
            f"\n== pipeline (dry run: read, validate, dedupe, chunk, serialise), best of {self.args.repeats}"
        )
        print(f"bare csv.reader   {t['bare_csv_seconds']:7.2f} s   {t['bare_csv_rows'] - 1:,} rows")
        print(f"pipeline          {t['pipeline_seconds']:7.2f} s   {t['rows_per_second']:,.0f} rows/s")
        print(
            f"ratio             {t['ratio']:7.2f} x   target <= {TARGET_PIPELINE_RATIO} x: "
            f"{_mark(t['ratio'] <= TARGET_PIPELINE_RATIO)}"
        )
        print(
            f"counts            received {c['received']:,}  rejected {c['rejected']:,}  duplicates "
            f"{c['duplicates']:,}  contacts {c['contacts']:,} in {c['chunks']} bodies "
            f"({c['body_bytes'] / 1e6:.0f} MB)"
        )

    # -- 3. peak memory ----------------------------------------------------------------------------
    def memory(self) -> None:
        from bench.pipeline import measure_peak_rss

        m = measure_peak_rss(self.path, self.args.timeout)
        self.results["memory"] = m
        peak = float(m["vmhwm_mb"] if m.get("vmhwm_mb") is not None else m["ru_maxrss_mb"])
        m["peak_rss_mb"] = peak
        print("\n== peak memory of the pipeline (fresh subprocess)")
        print(
            f"peak RSS          {peak:7.0f} MB   target < {TARGET_PEAK_RSS_MB:.0f} MB: "
            f"{_mark(peak < TARGET_PEAK_RSS_MB)}   (interpreter + imports before the run: "
            f"{m['baseline_rss_mb']:.0f} MB; ru_maxrss {m['ru_maxrss_mb']:.0f} MB)"
        )

    # -- 4 + 5. end to end, incremental --------------------------------------------------------------
    def e2e(self) -> None:
        from bench.e2e import run_e2e

        changed = ensure_dataset(OUT_DIR, self.args.rows, self.args.seed, changed=True)
        self.results["dataset"]["changed_path"] = str(changed.path)
        self.results["dataset"]["changed_rows"] = changed.changed_rows
        how = "reused" if changed.reused else f"generated in {changed.seconds:.1f} s"
        print(f"\nsegment (1% changed) {changed.path.name}: {changed.changed_rows:,} profiles edited ({how})")
        e = run_e2e(self.path, changed.path, OUT_DIR, timeout=self.args.timeout)
        self.results["e2e"] = e
        full = e["full"]
        print("\n== end to end: python -m exporter run -> sandbox process (4 req/s, 40,000 contacts / 4 MB)")
        self._print_export(full)
        ok = full["status"] == "completed" and full["wall_seconds"] < TARGET_E2E_SECONDS
        print(f"target            under {TARGET_E2E_SECONDS:.0f} s, completed: {_mark(ok)}")
        if e.get("sandbox_stderr_tail"):
            print(f"sandbox stderr    {e['sandbox_stderr_tail'][-500:]}")

        inc = e.get("incremental")
        if inc is None:
            return
        print("\n== incremental re-run after 1% of profiles changed")
        self._print_export(inc, short=True)
        contacts = int(inc["received"] or 0) - int(inc["rejected"] or 0) - int(inc["duplicates"] or 0)
        submitted = int(inc["submitted"] or 0)
        inc["contacts_in_segment"] = contacts
        inc["changed_rows"] = changed.changed_rows
        inc["incremental_sync"] = submitted < contacts
        if submitted >= contacts:
            print(f"incremental sync not implemented: resent {submitted:,} of {contacts:,}")
        else:
            print(
                f"incremental sync: sent {submitted:,} of {contacts:,} contacts "
                f"({changed.changed_rows:,} profiles changed)"
            )

    @staticmethod
    def _print_export(r: Json, *, short: bool = False) -> None:
        print(f"wall time         {r['wall_seconds']:7.1f} s   status {r['status']} (exit {r['exit_code']})")
        print(
            f"import requests   {r['import_requests']}   minimum ceil(contacts / 40,000) = "
            f"{r['min_import_requests_by_count']}; with 4 MB bodies >= {r['min_import_requests_by_bytes']} "
            f"({r['contacts_per_request_mean']:,.0f} contacts, {r['body_bytes_total'] / max(1, r['import_requests']) / 1e6:.2f} MB per request)"
        )
        print(
            f"report            received {r['received']:,}  rejected {r['rejected']:,}  duplicates "
            f"{r['duplicates']:,}  submitted {r['submitted']:,}  delivered "
            f"{r['delivered'] if r['delivered'] is None else format(r['delivered'], ',')}"
            f"  refused {r['refused_by_constant_contact']}"
        )
        sync = r.get("sync") or {}
        if sync:
            shown = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in sync.items())
            print(f"sync              {shown}")
        if r.get("error"):
            print(f"error             {r['error']}")
        if short:
            return
        p = r["phases"]

        def s(key: str) -> str:
            value = p.get(key)
            return "?" if value is None else f"{value:.1f} s"

        print(
            f"time split        prepare {s('prepare_seconds')} | submit {s('submit_seconds')} | wait after "
            f"last submit {s('wait_after_last_submit_seconds')} | start-up + report {s('startup_and_finish_seconds')}"
        )
        print(
            f"requests          {r['api_calls']} API calls ({r['import_requests']} imports, {r['polls']} polls), "
            f"{r['retries']} retries"
        )
        cpu_sb = r["sandbox_cpu_seconds"]
        print(
            f"cpu               exporter {r['exporter_cpu_seconds']:.1f} s, sandbox "
            f"{'?' if cpu_sb is None else f'{cpu_sb:.1f} s'}; sandbox RSS {r['sandbox_rss_mb'] or 0:.0f} MB "
            f"(peak {r['sandbox_peak_rss_mb'] or 0:.0f} MB)"
        )
        tl = r.get("sandbox_timeline") or {}
        if tl:
            print(
                f"sandbox side      posts from {tl['first_post_at_seconds']:.1f} s to {tl['last_post_at_seconds']:.1f} s; "
                f"last import completed at {tl['last_completed_at_seconds']:.1f} s; worker busy "
                f"{tl['worker_busy_seconds']:.1f} s ({tl['processing_seconds_mean']:.2f} s per import, "
                f"max {tl['processing_seconds_max']:.2f} s; longest queue wait {tl['queue_wait_seconds_max']:.1f} s)"
            )

    # -- 6. profile ----------------------------------------------------------------------------------
    def profile(self) -> None:
        from bench.pipeline import profile_pipeline, stage_breakdown

        bare = getattr(self, "bare", None)
        pipe = getattr(self, "pipe", None)
        if bare is not None and pipe is not None:
            runs = min(2, self.args.repeats)
            b = stage_breakdown(self.path, bare, runs)
            self.results["stages"] = b
            print(f"\n== where the pipeline's time goes (timers around its steps, best of {runs} dry runs)")
            print(f"  {'bare csv.reader pass, for scale':<72} {bare:6.2f} s")
            for st in b["stages"]:
                print(f"  {st['label']:<72} {st['seconds']:6.2f} s  {st['share']:6.1%}")
            print(f"  {'= dry run':<72} {b['pipeline_seconds']:6.2f} s")
            parts = b["ratio_parts"]
            print(
                "  the ratio, split: "
                + " + ".join(f"{name} {value:.1f} x" for name, value in parts.items())
                + f"; reading + bookkeeping alone: {parts['reading'] + parts['bookkeeping']:.1f} x"
            )
            print(
                f"  {'full dry run with the cyclic GC disabled (what-if)':<72} "
                f"{b['pipeline_gc_disabled_seconds']:6.2f} s"
            )
        prof = profile_pipeline(self.path, OUT_DIR / "profile.txt")
        self.results["profile"] = prof
        print(f"\n== cProfile, top 10 by total (own) time -> {prof['file']}")
        print(f"  {'tottime':>8} {'share':>6} {'cumtime':>8} {'ncalls':>10}  function")
        for row in prof["top_tottime"][:10]:
            print(
                f"  {row['tottime']:8.2f} {row['share']:6.1%} {row['cumtime']:8.2f} {row['ncalls']:>10,}  "
                f"{row['function']}"
            )

    # -- output ----------------------------------------------------------------------------------------
    def save(self) -> Path:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(self.results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        path = OUT_DIR / f"results-{self.results['timestamp']}.json"
        path.write_bytes(data)
        (OUT_DIR / "latest.json").write_bytes(data)
        return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    started = time.perf_counter()
    load = bench.results["loadavg_start"]
    if load and load[0] > 0.5:
        print(f"note: load average {load[0]:.2f} at start; other processes may skew the timings")
    try:
        bench.section("dataset", bench.dataset)
        if "dataset" not in bench.results["errors"]:
            bench.section("pipeline", bench.pipeline)
            bench.section("memory", bench.memory)
            if not args.skip_e2e:
                bench.section("e2e", bench.e2e)
            if not args.skip_profile:
                bench.section("profile", bench.profile)
    finally:
        bench.results["bench_seconds"] = time.perf_counter() - started
        bench.results["loadavg_end"] = _loadavg()
        path = bench.save()
        print(f"\nresults: {path.relative_to(OUT_DIR.parents[1])} (and bench/out/latest.json)")
    return 1 if bench.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
