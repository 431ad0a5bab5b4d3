"""Can a test tell a good map from a bad one on this data? The discrimination index of a metric.

index = the oracle map's score minus the chance map's (the reference lines `baseline_oracle` and
`baseline_random` every map family scores), oriented by the metric's direction (catalog), so that
index > 0 means the test ranks the oracle above chance. Computed on per-image rows, paired by
image: per seed, the mean over images of the oriented difference; over seeds, the mean of the
seed means. The 95% CI is a percentile bootstrap over images, resampled within each seed (the
seeds are the models the test is calibrated on, kept fixed), seeded, so the same rows give the
same interval. A test whose CI does not lie above 0 cannot separate the oracle from chance here.

`trivial_check` asks the other half of a test's validity (DESIGN §6b): does a map that knows
nothing about the image (uniform, a centred Gaussian) score as well as the best explainer?
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SIGN = {"higher": 1.0, "lower": -1.0}
GROUP = ["split", "metric", "setting", "level"]
TRIVIAL = ("baseline_uniform", "baseline_gaussian")  # maps that know nothing of the image (localization.baseline_maps)


def _sign(direction: str) -> float:
    if direction not in SIGN:
        raise ValueError(f"discrimination needs a metric direction 'higher' or 'lower', got {direction!r}")
    return SIGN[direction]


def _per_seed(rows: pd.DataFrame, method: str) -> pd.Series:
    """One metric's per-image values of `method`, indexed by (seed, image)."""
    part = rows[rows["method"] == method]
    seeds = part["seed"] if "seed" in part else 0
    return part.assign(seed=seeds).set_index(["seed", "image"])["value"]


def discrimination(rows: pd.DataFrame, direction: str, good: str = "baseline_oracle",
                   chance: str = "baseline_random", n_boot: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> dict:
    """Oriented good − chance of one metric's per-image rows (columns method, image, value, and
    seed if several models), with a bootstrap CI; NaN where the two lines share no image. Also
    the two lines' own mean scores (keys `good` and `chance`: the method names)."""
    sign = _sign(direction)
    a, b = _per_seed(rows, good), _per_seed(rows, chance)
    d = (sign * (a - b)).dropna()
    seed_mean = lambda v: float(v.groupby(level="seed").mean().mean())  # noqa: E731
    out = {"index": np.nan, "low": np.nan, "high": np.nan, "per_seed": [], "images": len(d),
           good: seed_mean(a), chance: seed_mean(b)}
    if d.empty:
        return out
    rng = np.random.default_rng(seed)
    groups = [g.to_numpy() for _, g in d.groupby(level="seed")]
    boot = np.mean([g[rng.integers(0, len(g), (n_boot, len(g)))].mean(1) for g in groups], axis=0)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    out.update(index=float(np.mean([g.mean() for g in groups])), low=float(low), high=float(high),
               per_seed=[round(float(g.mean()), 6) for g in groups])
    return out


def discrimination_table(rows: pd.DataFrame, directions: dict[str, str], n_boot: int = 2000, seed: int = 0,
                         trivial: tuple[str, ...] = TRIVIAL) -> pd.DataFrame:
    """`discrimination` per split × metric × setting × level of a family's per-image rows, for the
    metrics that have a direction (`directions`: catalog.FAMILIES[family]["metrics"]); where the
    rows hold trivial maps and explainers, also `trivial_check` of the best-scoring trivial map
    (columns trivial, trivial_score, best_explainer, margin, margin_low, margin_high, reaches)."""
    rows = rows.assign(setting=rows["setting"].fillna(""))
    out = []
    for key, part in rows[rows["metric"].map(directions).isin(list(SIGN))].groupby(GROUP, dropna=False, sort=True):
        direction = directions[key[1]]
        res = {**dict(zip(GROUP, key)), "direction": direction, **discrimination(part, direction, n_boot=n_boot, seed=seed)}
        present = [t for t in trivial if t in set(part["method"])]
        if present and not part["method"].str.startswith("baseline_").all():
            check = trivial_check(part, direction, tuple(present), n_boot=n_boot, seed=seed)
            worst = check.loc[(check["score"] * SIGN[direction]).idxmax()]
            res.update(trivial=worst["trivial"], trivial_score=worst["score"], best_explainer=worst["best_explainer"],
                       margin=worst["margin"], margin_low=worst["low"], margin_high=worst["high"], reaches=worst["reaches"])
        out.append(res)
    return pd.DataFrame(out)


def trivial_check(rows: pd.DataFrame, direction: str, trivial: tuple[str, ...] = ("baseline_uniform",),
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per trivial map of one metric's rows: its mean score over seeds, the best explainer's (the
    best mean of the methods not named baseline_*), and the best explainer's margin over it
    (oriented, CI as `discrimination`); `reaches` = the margin's CI does not lie above 0, i.e. the
    trivial map is not shown to score below the best explainer."""
    _sign(direction)
    per_seed = rows.groupby(["method", "seed"] if "seed" in rows else ["method"])["value"].mean()
    means = per_seed.groupby(level="method").mean()
    explainers = means[~means.index.str.startswith("baseline_")]
    best = (explainers * SIGN[direction]).idxmax() if len(explainers) else None
    out = []
    for t in trivial:
        margin = discrimination(rows, direction, good=best, chance=t, n_boot=n_boot, seed=seed) if best else {}
        out.append({"trivial": t, "score": float(means.get(t, np.nan)),
                    "best_explainer": float(means[best]) if best else np.nan,
                    "margin": margin.get("index", np.nan), "low": margin.get("low", np.nan),
                    "high": margin.get("high", np.nan), "reaches": not margin.get("low", np.nan) > 0})
    return pd.DataFrame(out)
