"""Where every artifact lives. The Snakefile and the CLI both import these, so a path is defined once.

Layout is phase first (results/{phase}/{dataset}/...), so each DVC stage owns one directory.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared")
RUNS = Path("runs")
RESULTS = Path("results")
SUMMARY = RESULTS / "summary.json"
METRICS_SUMMARY = RESULTS / "metrics_summary.json"  # every family's numbers (the headline is SUMMARY)
CLAIMS = RESULTS / "claims.csv"  # verdicts on the papers' claims (xaibench claims)
VALIDITY = RESULTS / "validity.csv"  # every test's oracle-vs-chance index
# `make bench` (speed.csv, growth.csv, speed.png): outside every DVC stage's outputs, so a benchmark
# leaves `dvc status` clean.
BENCH = RESULTS / "bench"
TIMING = RESULTS / "figures" / "timing.png"  # where the run's time went (every job's benchmark file)


def run_dir(run: str) -> Path:
    """Where a run's data/ and results/ live: the default run at the top (the paths DVC tracks), a
    named run (a preset's `run:`) in runs/<run>/, so runs never overwrite each other. Every path
    below is relative to it (Snakemake's `workdir`, the CLI's working directory)."""
    return Path(".") if run == "default" else RUNS / run


def prepared(dataset: str) -> Path:
    return DATA / dataset


def model_dir(dataset: str, variant: str, seed: int | str) -> Path:
    return RESULTS / "models" / dataset / variant / f"seed{seed}"


def explanation(dataset: str, variant: str, seed: int | str, method: str, split: str) -> Path:
    return RESULTS / "explanations" / dataset / variant / f"seed{seed}" / method / f"{split}.npz"


def prototypes(dataset: str, variant: str, seed: int | str, ext: str = "npz") -> Path:
    """Generated images of one model (paper B): every featviz method's image per class (.npz) and their grid (.png)."""
    return RESULTS / "prototypes" / dataset / variant / f"seed{seed}.{ext}"


def measure_unit(dataset: str, family: str, variant: str, unit: str) -> Path:
    """Per-image metric rows of one model (`unit` = 'seed0', ...) or of all seeds of a variant ('seeds')."""
    return RESULTS / "metrics" / dataset / family / variant / f"{unit}.parquet"


def metric_table(dataset: str, family: str, ext: str = "csv") -> Path:
    """The tidy table of a family (csv: means per model; parquet: every per-image row)."""
    return RESULTS / "metrics" / dataset / f"{family}.{ext}"


def figures(dataset: str) -> Path:
    return RESULTS / "figures" / dataset


def tables(dataset: str) -> Path:
    return RESULTS / "tables" / dataset


def leaderboard(dataset: str, ext: str = "csv") -> Path:
    """The leaderboard of a dataset: long-form .csv (with the config hash and commit) and .md."""
    return RESULTS / "leaderboard" / f"{dataset}.{ext}"


def log(step: str, *parts: str) -> Path:
    """A job's log: results/logs/{step}/{parts...}.log (wildcard patterns welcome)."""
    return RESULTS / "logs" / step / Path(*parts).with_suffix(".log") if parts else RESULTS / "logs" / f"{step}.log"


def benchmark(step: str, *parts: str) -> Path:
    """A job's time and memory (Snakemake `benchmark:`): results/benchmarks/{step}/{parts...}.tsv."""
    return RESULTS / "benchmarks" / step / Path(*parts).with_suffix(".tsv") if parts else RESULTS / "benchmarks" / f"{step}.tsv"

