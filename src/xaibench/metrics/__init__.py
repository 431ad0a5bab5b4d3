"""Metric families: each a function `(ctx) -> per-image rows`, registered under its catalog name.

Scope and inputs of each family are declared in `xaibench.catalog`. Rows carry the tidy columns
below; `aggregate` averages the per-image rows into one row per
dataset × variant × seed × method × split × metric × setting × level (DESIGN §2.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .. import catalog, paths
from ..io import load_explanation, load_json, read_table
from ..data import read_meta, read_split

from ..tidy import COLUMNS, ROW_COLUMNS, aggregate, rows  # noqa: F401  (the families' row helpers)


@dataclass
class Family:
    fn: Callable
    scope: str  # "model" or "variant", from xaibench.catalog


FAMILIES: dict[str, Family] = {}


def register(name: str):
    """Register the implementation of a family listed in `xaibench.catalog.FAMILIES`."""
    def deco(fn):
        if name not in catalog.FAMILIES:
            raise KeyError(f"metric family '{name}' is not listed in xaibench.catalog.FAMILIES")
        FAMILIES[name] = Family(fn, catalog.FAMILIES[name]["scope"])
        return fn
    return deco


@dataclass
class Context:
    """What a metric family may read: settings, the prepared data, models and explanations."""

    cfg: dict
    dataset: str
    variant: str
    seeds: list[int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def methods(self) -> list[str]:
        """The configured explainers that apply to this variant (e.g. `lap` only to LAP models)."""
        return catalog.methods_for(self.cfg["explain"]["methods"], self.variant)

    @cache
    def meta(self) -> dict:
        return read_meta(paths.prepared(self.dataset))

    @cache
    def split(self, name: str):
        return read_split(paths.prepared(self.dataset), name)

    def model(self, seed: int):
        from ..training.fit import load_trained
        model, _ = load_trained(self.cfg, self.dataset, self.variant, seed, self.device)
        return model

    def explanation(self, seed: int, method: str, split: str) -> dict:
        return load_explanation(paths.explanation(self.dataset, self.variant, seed, method, split))

    def __hash__(self):
        return id(self)


def run(name: str, ctx: Context) -> pd.DataFrame:
    frame = FAMILIES[name].fn(ctx)
    if frame.empty:
        frame = pd.DataFrame(columns=ROW_COLUMNS)
    frame.insert(0, "dataset", ctx.dataset)
    frame.insert(1, "variant", ctx.variant)
    frame.insert(2, "seed", ctx.seed if FAMILIES[name].scope == "model" else -1)
    return frame


def summarize(cfg: dict) -> dict:
    """Headline numbers for `dvc metrics show`: per variant × split × metric, mean and sd over seeds.

    Metrics swept over settings or levels (transforms, noise amounts, ...) are first averaged over
    them within each seed, so each key is one number per model.
    """
    out: dict = {}
    for dataset in cfg["datasets"]:
        for family in cfg["metrics"]["families"]:
            table = read_table(paths.metric_table(dataset, family))
            keys = ["variant", "method", "split", "metric"]
            per_seed = table.groupby(keys + ["seed"])["value"].mean().reset_index()
            stats = per_seed.groupby(keys)["value"].agg(["mean", "std"])
            for (variant, method, split, metric), row in stats.iterrows():
                key = f"{family}/{metric}" if method == "model" else f"{family}/{method}/{metric}"
                node = out.setdefault(dataset, {}).setdefault(variant, {}).setdefault(split, {})
                node[key] = {"mean": round(float(row["mean"]), 4),
                             "sd": None if pd.isna(row["std"]) else round(float(row["std"]), 4)}
        for seed in cfg["train"]["lap"]["plugin"]["seeds"]:
            path = paths.model_dir(dataset, "lap_plugin", seed) / "summary.json"
            if {"standard", "lap"} <= set(cfg["train"]["variants"]) and path.is_file():
                plug = load_json(path)["plugin"]
                out[dataset].setdefault("lap_plugin", {})[f"seed{seed}"] = {
                    stage: round(plug[stage]["test_accuracy"], 4) for stage in ("original", "at_init", "after")}
    return out


# Register the families (import for side effects).
from . import accuracy, deletion, localization, salience  # noqa: E402,F401
