"""Metric families: each a function `(ctx) -> per-image rows`, registered under its catalog name.

Scope and inputs of each family are declared in `xaibench.catalog`. Rows carry the tidy columns
below; `aggregate` averages the per-image rows into one row per
dataset × variant × seed × method × split × metric × setting × level (DESIGN §2.4).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .. import catalog, paths
from ..io import load_explanation
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
        from ..training.fit import load_model
        model, _ = load_model(paths.model_dir(self.dataset, self.variant, seed) / "model.pt",
                              expect={"dataset": self.dataset, "data_sha256": self.meta()["content_sha256"]},
                              device=self.device)
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
    """Headline numbers for `dvc metrics show`: per variant × split × measure, mean and sd over seeds.

    Families with rows in `catalog.SALIENCE_SUMMARY` (paper E) report exactly those measures, with
    the same setting/level filters and units as the salience summary table (stability: sd over seed
    pairs). Every other metric is averaged over its settings and, where it has levels, over levels
    > 0 (level 0 is the unaltered image where curves start), within each seed first.
    """
    from ..tidy import over_units, select
    out: dict = {}

    def put(dataset, stats, family, name):
        for _, row in stats.iterrows():
            key = f"{family}/{name}" if row["method"] == "model" else f"{family}/{row['method']}/{name}"
            node = out.setdefault(dataset, {}).setdefault(row["variant"], {}).setdefault(row["split"], {})
            node[key] = {"mean": round(float(row["mean"]), 4), "sd": None if pd.isna(row["sd"]) else round(float(row["sd"]), 4)}

    for dataset in cfg["datasets"]:
        for family in cfg["metrics"]["families"]:
            table = pd.read_csv(paths.metric_table(dataset, family), keep_default_na=False, na_values=[""])
            specs = [s for s in catalog.SALIENCE_SUMMARY if s["family"] == family]
            unit = "setting" if family == "stability" else "seed"
            if specs:
                for spec in specs:
                    d = table[(table.metric == spec["metric"]) & (table.split == spec["split"])]
                    d = select(d, spec["setting"], spec["levels"])
                    if not d.empty:
                        put(dataset, over_units(d, ["variant", "method", "split"], unit), family, spec["name"])
                continue
            curve = table.groupby("metric")["level"].transform(lambda lv: lv.notna().any())
            d = table[~curve | (table["level"] > 0)]
            for metric, part in d.groupby("metric"):
                put(dataset, over_units(part, ["variant", "method", "split"], unit), family, metric)
        for seed in cfg["train"]["lap"]["plugin"]["seeds"]:
            path = paths.model_dir(dataset, "lap_plugin", seed) / "summary.json"
            if {"standard", "lap"} <= set(cfg["train"]["variants"]) and path.is_file():
                plug = json.loads(path.read_text())["plugin"]
                out[dataset].setdefault("lap_plugin", {})[f"seed{seed}"] = {
                    stage: round(plug[stage]["test_accuracy"], 4) for stage in ("original", "at_init", "after")}
    return out


# Register the families (import for side effects).
from . import accuracy, deletion, localization, salience  # noqa: E402,F401
