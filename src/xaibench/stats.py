"""Effects with confidence intervals for the claims step: a seeded, vectorised hierarchical bootstrap.

Data come in clusters (training seeds; seed pairs for measures across runs), each holding per-image
values. The estimate is the mean over clusters of each cluster's image mean (every seed weighs the
same, as the tables' mean ± sd over seeds). A bootstrap replicate draws the clusters with replacement
and then, independently for every drawn cluster, its images with replacement (the two-level
"hierarchical" or cluster bootstrap: Davison & Hinkley 1997, §3.8; Saravanan et al. 2020), and
the interval is the percentile interval of the replicates (Efron & Tibshirani 1993, ch. 13).
Designs (`effect`): paired (two explainers scored on the same images of the same models: the
per-image differences are resampled), unpaired (two variants: each group's clusters are resampled
independently) and one group (a quantity against 0). numpy only; docs/claims.md.
"""
from __future__ import annotations

import numpy as np


def _cluster_boot(clusters: list[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """[reps] bootstrap replicates of the mean over clusters of the per-cluster image means.

    The loop runs over clusters (a handful of seeds), never over replicates: cluster c's image
    resamples are drawn for all the slots in which the cluster-level draw picked it, at once.
    """
    k = len(clusters)
    pick = rng.integers(k, size=(reps, k))
    slot_means = np.empty((reps, k))
    for c, values in enumerate(clusters):
        where = pick == c
        count = int(where.sum())
        if count:
            index = rng.integers(len(values), size=(count, len(values)))
            slot_means[where] = values[index].mean(axis=1)
    return slot_means.mean(axis=1)


def mean_of_means(clusters: list[np.ndarray]) -> float:
    return float(np.mean([c.mean() for c in clusters]))


def effect(a: list[np.ndarray], b: list[np.ndarray] | None = None, *, paired: bool = False,
           reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Effect of group a over group b (or of a alone when b is None) with its bootstrap interval.

    a, b: per-cluster arrays of per-image values (NaN-free, non-empty). paired: a[i] and b[i] are
    the same images of the same cluster in the same order, and the differences are resampled;
    unpaired: the groups' clusters are resampled independently (and may differ in number).
    Returns effect, low, high and the replicates. Same inputs and seed -> the same numbers.
    """
    if not a or any(len(c) == 0 for c in a) or (b is not None and (not b or any(len(c) == 0 for c in b))):
        raise ValueError("bootstrap effect: every group needs at least one cluster with at least one value")
    rng = np.random.default_rng(seed)
    if b is None or paired:
        if paired and (b is None or len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b))):
            raise ValueError("bootstrap effect: a paired design needs the same clusters and images in both groups")
        diffs = a if b is None else [x - y for x, y in zip(a, b)]
        point, boot = mean_of_means(diffs), _cluster_boot(diffs, reps, rng)
    else:
        point = mean_of_means(a) - mean_of_means(b)
        boot = _cluster_boot(a, reps, rng) - _cluster_boot(b, reps, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return {"effect": point, "low": float(low), "high": float(high), "replicates": boot}


def verdict(low: float, high: float, predicts: str, margin: float = 0.0) -> str:
    """supported / contradicted / inconclusive from an interval and the predicted direction.

    predicts: 'higher' (effect > 0), 'lower' (effect < 0), 'above_zero' (a one-group quantity > 0),
    'not_lower' (non-inferiority: effect > -margin). The interval must lie wholly on one side of the
    reference point (0, or -margin) for supported / contradicted.
    """
    if predicts in ("higher", "above_zero", "not_lower"):
        ref = -margin if predicts == "not_lower" else 0.0
        return "supported" if low > ref else "contradicted" if high < ref else "inconclusive"
    if predicts == "lower":
        return "supported" if high < 0 else "contradicted" if low > 0 else "inconclusive"
    raise ValueError(f"unknown prediction {predicts!r}; use higher, lower, above_zero or not_lower")


def agrees(values: np.ndarray, predicts: str, margin: float = 0.0) -> np.ndarray:
    """Which per-seed effects point the predicted way (for not_lower: above -margin)."""
    values = np.asarray(values, dtype=float)
    if predicts == "lower":
        return values < 0
    return values > (-margin if predicts == "not_lower" else 0.0)
