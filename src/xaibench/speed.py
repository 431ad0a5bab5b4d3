"""Timing against a floor and peers in one process (`make bench`, benchmarks/speed.py).

Why interleaved: on a shared machine the load drifts over seconds, so timing A seven times and then
B seven times measures the drift as much as A vs B. `interleaved` runs rep 1 of every case, then
rep 2 of every case, ..., so each case sees the same load history; the best of the repetitions is
the least disturbed run (the work), the median shows the spread.

A comparison row says how our time relates to a reference's: `ratio` = median over repetitions of
ours_i / reference_i, the paired ratio: rep i of both ran back to back, under the same load, so
this is the least noisy comparison (a best-vs-best ratio pairs two different moments);
`ratio_best` and `ratio_median` compare the best and the median times. `met` = ratio <= limit. A
speed-up target "100x faster" is limit 0.01, a throughput target ">= 0.9x the bare loop" is
limit 1/0.9.
"""
from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import Callable

COLUMNS = ["item", "ours", "ours_s_best", "ours_s_median", "reference", "reference_s_best",
           "reference_s_median", "ratio", "ratio_best", "ratio_median", "target", "limit", "met", "note"]


def interleaved(cases: dict[str, Callable[[], object]], reps: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every case, `reps` rounds of one call each, after `warmup` untimed rounds."""
    if reps < 1 or not cases:
        raise ValueError(f"interleaved needs reps >= 1 and at least one case, got {reps} and {len(cases)} cases")
    times = {name: [] for name in cases}
    for r in range(warmup + reps):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def compare(item: str, ours: str, times: dict[str, list[float]], reference: str | None,
            limit: float | None = None, target: str = "", note: str = "",
            reference_s: list[float] | None = None) -> dict:
    """One speed.csv row: our case `ours` against `reference` (a case of `times`, or the explicit
    seconds `reference_s`); without a reference or limit, `ratio`/`met` stay empty (measure only)."""
    mine = times[ours]
    ref = reference_s if reference_s is not None else (times[reference] if reference else None)
    row = {"item": item, "ours": ours, "ours_s_best": min(mine), "ours_s_median": statistics.median(mine),
           "reference": reference or "", "reference_s_best": "", "reference_s_median": "", "ratio": "",
           "ratio_best": "", "ratio_median": "", "target": target, "limit": "" if limit is None else limit, "met": "", "note": note}
    if ref:
        paired = (statistics.median(a / b for a, b in zip(mine, ref)) if len(ref) == len(mine)
                  else statistics.median(mine) / statistics.median(ref))  # unpaired reference: medians
        row.update(reference_s_best=min(ref), reference_s_median=statistics.median(ref), ratio=paired,
                   ratio_best=min(mine) / min(ref), ratio_median=statistics.median(mine) / statistics.median(ref))
        if limit is not None:
            row["met"] = bool(row["ratio"] <= limit)
    return row


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """speed.csv: COLUMNS, floats to 4 significant digits (times) / 3 decimals (ratios)."""
    from .io import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            out = {}
            for key in COLUMNS:
                value = row.get(key, "")
                if isinstance(value, float):
                    value = f"{value:.4g}" if key.endswith(("_best", "_median")) and "ratio" not in key else f"{value:.4f}"
                out[key] = value
            writer.writerow(out)
    return path


def job_times(benchmarks: str | Path) -> "pd.DataFrame":
    """Every job's Snakemake benchmark file under `benchmarks` (results/benchmarks/{phase}/...tsv) as
    one row: path, phase, rule (phase + the variant or family the job is for), s, max_rss (MB),
    cpu_time, end (file mtime, seconds) and start = end − s. Snakemake writes the file when the job
    ends and records no start time, so `start` is an approximation (it also shifts by the time
    between the job's end and the write)."""
    import pandas as pd

    from .io import read_table

    root = Path(benchmarks)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        frame = read_table(path, sep="\t")
        if frame.empty or "s" not in frame:
            continue
        parts = path.relative_to(root).with_suffix("").parts
        phase = parts[0]
        rule = f"{phase} {parts[2]}" if len(parts) >= 4 else phase
        end = path.stat().st_mtime
        s = float(frame["s"].iloc[-1])
        rows.append({"path": str(path.relative_to(root)), "phase": phase, "rule": rule, "s": s,
                     "max_rss": float(frame.get("max_rss", pd.Series([float("nan")])).iloc[-1]),
                     "cpu_time": float(frame.get("cpu_time", pd.Series([float("nan")])).iloc[-1]),
                     "end": end, "start": end - s})
    columns = ["path", "phase", "rule", "s", "max_rss", "cpu_time", "end", "start"]
    return pd.DataFrame(rows, columns=columns)
