"""The tidy long format every metric lands in (docs/architecture.md, "Tidy results"); pandas only, so combining tables is cheap.

Per-image rows carry ROW_COLUMNS plus dataset/variant/seed; `aggregate` averages them into one row
per dataset × variant × seed × method × split × metric × setting × level.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["dataset", "variant", "seed", "method", "split", "metric", "setting", "level", "value"]
ROW_COLUMNS = ["method", "split", "metric", "setting", "level", "image", "value"]


def rows(method: str, split: str, metric: str, values, setting: str = "", level: float = np.nan) -> pd.DataFrame:
    """Per-image rows for one metric: `values` is [N] (image i -> value)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    return pd.DataFrame({"method": method, "split": split, "metric": metric, "setting": setting,
                         "level": float(level), "image": np.arange(len(values)), "value": values})


def aggregate(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean over images -> the tidy table."""
    data = pd.concat(frames, ignore_index=True)
    keys = [c for c in COLUMNS if c != "value"]
    data["setting"] = data["setting"].fillna("")
    out = data.groupby(keys, dropna=False, sort=True)["value"].mean().reset_index()
    return out[COLUMNS]


def select(table: pd.DataFrame, setting: str = "*", levels: str = "all") -> pd.DataFrame:
    """Rows of a tidy table by setting ("" = none, "*" = any non-empty, else that setting) and level
    ("all", or "positive": level > 0, leaving out level 0, the unaltered image where curves start)."""
    s = table["setting"].astype(object).fillna("")
    keep = (s == "") if setting == "" else (s != "") if setting == "*" else (s == setting)
    if levels == "positive":
        keep &= table["level"] > 0
    return table[keep]


def over_units(table: pd.DataFrame, keys: list[str], unit: str = "seed") -> pd.DataFrame:
    """One value per unit (mean over the rows kept), then mean, sd and n over units, per `keys`."""
    per_unit = table.groupby(keys + [unit])["value"].mean().reset_index()
    stats = per_unit.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"std": "sd", "count": "n"})
