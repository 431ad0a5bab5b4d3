"""Where every artifact lives. The Snakefile and the CLI both import these, so a path is defined once."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared")
RESULTS = Path("results")


def prepared(dataset: str) -> Path:
    return DATA / dataset


def model_dir(dataset: str, variant: str, seed: int | str) -> Path:
    return RESULTS / dataset / "models" / variant / f"seed{seed}"


def explanation(dataset: str, variant: str, seed: int | str, method: str, split: str) -> Path:
    return RESULTS / dataset / "explanations" / variant / f"seed{seed}" / method / f"{split}.npz"


def measure_unit(dataset: str, family: str, variant: str, unit: str) -> Path:
    """Per-image metric rows of one model (`unit` = 'seed0', ...) or of all seeds of a variant ('seeds')."""
    return RESULTS / dataset / "metrics" / family / variant / f"{unit}.parquet"


def metric_table(dataset: str, family: str, ext: str = "csv") -> Path:
    return RESULTS / dataset / "metrics" / f"{family}.{ext}"


def figures(dataset: str) -> Path:
    return RESULTS / dataset / "figures"
