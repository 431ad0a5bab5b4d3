"""speed.csv logic (no timings asserted): interleaving order, ratios, targets, the writer, and the
benchmark-file reader behind the timing figure."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from xaibench import speed
from xaibench.figures.timing import lanes


def test_interleaved_runs_rep_by_rep_after_warmup():
    calls = []
    times = speed.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b"] * 4                     # rep 1 of A, B, rep 2 of A, B, ...
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}  # warm-up not recorded
    with pytest.raises(ValueError, match="reps >= 1"):
        speed.interleaved({"a": lambda: None}, reps=0)


def test_compare_ratio_target_and_csv(tmp_path):
    times = {"ours": [2.0, 1.0, 3.0], "peer": [4.0, 8.0, 5.0]}
    row = speed.compare("x vs peer", "ours", times, "peer", limit=0.5, target="2x faster")
    assert (row["ours_s_best"], row["ours_s_median"], row["reference_s_best"]) == (1.0, 2.0, 4.0)
    # per-repetition ratios 2/4, 1/8, 3/5: their median is the paired ratio
    assert row["ratio"] == 0.5 and row["ratio_best"] == 0.25 and row["ratio_median"] == 2.0 / 5.0
    assert row["met"] is True                                   # 0.5 <= limit 0.5
    assert speed.compare("x", "ours", times, "peer", limit=0.2)["met"] is False
    alone = speed.compare("x alone", "ours", times, None)
    assert alone["ratio"] == "" and alone["met"] == ""  # measured, no reference
    explicit = speed.compare("x vs jobs", "ours", times, "jobs", limit=0.1, reference_s=[20.0, 30.0])
    assert explicit["ratio"] == 2.0 / 25.0 and explicit["met"] is True  # unpaired: median / median
    path = speed.write_csv([row, alone], tmp_path / "speed.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == speed.COLUMNS
    assert frame.ratio.iloc[0] == 0.5 and bool(frame.met.iloc[0]) and pd.isna(frame.ratio.iloc[1])


def test_job_times_reads_snakemake_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, s, end in (("train/shapes/lap/seed0.tsv", 30.0, 1000.0), ("measure/shapes/stability/lap/seeds.tsv", 5.0, 1040.0),
                        ("summary.tsv", 2.0, 1050.0)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{s}\t0:00:{int(s):02d}\t100.5\t1\t1\t1\t0\t0\t50\t{s / 2}\n")
        os.utime(path, (end, end))
    jobs = speed.job_times(tmp_path).set_index("path")
    assert jobs.loc["train/shapes/lap/seed0.tsv", ["phase", "rule"]].tolist() == ["train", "train lap"]
    assert jobs.loc["measure/shapes/stability/lap/seeds.tsv", "rule"] == "measure stability"
    assert jobs.loc["summary.tsv", "rule"] == "summary"
    assert jobs.loc["train/shapes/lap/seed0.tsv", "start"] == 970.0  # mtime minus wall seconds


def test_lanes_count_jobs_running_at_once():
    # two overlapping jobs need two slots; a third starting after the first ends reuses slot 0
    assert lanes([0.0, 1.0, 5.0], [4.0, 9.0, 8.0]).tolist() == [0, 1, 0]
