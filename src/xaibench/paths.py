"""Where every artifact lives. The Snakefile and the CLI both import these, so a path is defined once.

Layout is phase first (results/{phase}/{dataset}/...), so each DVC stage owns one directory.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared")
RESULTS = Path("results")
# `make bench` (speed.csv, growth.csv, speed.png): outside every DVC stage's outputs, so a benchmark
# leaves `dvc status` clean.
BENCH = RESULTS / "bench"


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
