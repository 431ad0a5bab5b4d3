"""Metric families: each a function `(ctx) -> per-image rows`, registered under its catalog name.

Scope, inputs and score directions of each family are declared in `xaibench.catalog`. Rows carry
the tidy columns below; `aggregate` averages the per-image rows into one row per
dataset × variant × seed × method × split × metric × setting × level (docs/architecture.md, "Tidy results").

A family that scores saved maps only writes the per-batch computation and hands it to `over_maps`,
the one loop over splits × methods × batches (it also turns scores of images a measure cannot
score — an empty mask — into NaN, so they drop out of every mean).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .. import catalog, paths
from ..io import load_explanation, load_json, read_table
from ..data import read_meta, read_split
from ..registry import Registry

from ..tidy import COLUMNS, ROW_COLUMNS, aggregate, rows  # noqa: F401  (the families' row helpers)


FAMILIES = Registry("metric family", catalog.FAMILIES)
register = FAMILIES.register


@dataclass
class Context:
    """What a metric family may read: settings, the prepared data, models and explanations."""

    cfg: dict
    dataset: str
    variant: str
    seeds: list[int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    family: str | None = None  # set by `run`: the family computing, for `metrics.methods.{family}`

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def methods(self) -> list[str]:
        """The configured explainers that apply to this variant (e.g. `lap` only to LAP models), restricted
        to `metrics.methods.{family}` where that lists the explainers a (costly) family scores."""
        methods = catalog.methods_for(self.cfg["explain"], self.variant)
        only = self.cfg["metrics"].get("methods", {}).get(self.family) if self.family else None
        return methods if only is None else [m for m in methods if m in only]

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


@dataclass
class Batch:
    """One batch of one split's saved maps of one method, with what a measure may need of the data."""

    ctx: Context
    split: str
    method: str
    index: slice
    explanation: dict | None

    @cached_property
    def data(self):
        return self.ctx.split(self.split)

    resolution: str = "input"  # "native": the explainer's own grid (the file's `native` maps)

    @cached_property
    def maps(self) -> torch.Tensor:
        key = "native" if self.resolution == "native" else "maps"
        if key not in self.explanation:
            raise ValueError(f"explanation file has no '{key}' maps (made before native maps were stored); "
                             "rerun the explain step")
        return torch.from_numpy(self.explanation[key][self.index]).float()

    @property
    def relevance(self) -> torch.Tensor:
        """The maps as the family scores them: its declared preprocessing (`family_maps`)."""
        return family_maps(self.maps, self.ctx.family)

    @cached_property
    def masks(self) -> torch.Tensor | None:
        """Boolean ground-truth masks (the prepared format stores 0-255; > 127 is inside)."""
        return None if self.data.masks is None else torch.from_numpy(self.data.masks[self.index]) > 127

    @cached_property
    def images(self) -> torch.Tensor:
        return self.data.tensors(self.index).to(self.ctx.device)

    @cached_property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self.data.labels[self.index])

    @cached_property
    def targets(self) -> torch.Tensor:
        """The explained classes (a reference map's batch: the labels)."""
        if self.explanation is None:
            return self.labels
        return torch.from_numpy(self.explanation["targets"][self.index])

    def extra(self, name: str) -> torch.Tensor | None:
        """An optional per-image array of the split (`cue`, `labels2`, `masks2`, ...) for this batch."""
        extras = self.data.extras or {}
        return torch.from_numpy(extras[name][self.index]) if name in extras else None


def family_maps(maps, family: str | None):
    """Maps (torch or numpy) after the preprocessing `family` declares in the catalog (`maps`):
    the positive part, or the signed maps unchanged. The one place this is decided."""
    if catalog.FAMILIES.get(family, {}).get("maps") != "positive":
        return maps
    return maps.clamp_min(0) if isinstance(maps, torch.Tensor) else np.maximum(maps, 0)


Score = tuple  # (metric, values [B], setting, level); setting and level may be omitted


def over_maps(ctx: Context, score: Callable[[Batch], Iterable[Score]], *, family: str, needs_masks: bool = False,
              max_images: int | None = None, batch_size: int | None = None, resolution: str = "input",
              references: dict[str, Callable[[Batch], torch.Tensor]] | None = None) -> pd.DataFrame:
    """The loop every map-scoring family shares: split × method × batch -> per-image tidy rows.

    `score(batch)` yields (metric, values[B] [, setting [, level]]). With `needs_masks`, splits
    without masks are skipped (logged) and images with an empty mask score NaN. `references` adds
    reference lines scored like methods: name -> maps [B,H,W] of a batch (e.g. a random map for
    chance, the mask for an oracle), or None where a split has no such line (the oracle of a split
    without masks); their batches have `explanation` None and targets = labels. `resolution`:
    `input` (maps upsampled to the image) or `native` (the explainer's own grid). Each map reaches
    `score` raw (`batch.maps`) and preprocessed as the family declares (`batch.relevance`).
    """
    references = references or {}
    ctx.family = family  # what `ctx.methods` and `batch.relevance` follow, also when a family is called directly
    out = []
    for split in ctx.cfg["explain"]["splits"]:
        data = ctx.split(split)
        if needs_masks and data.masks is None:
            print(f"{family}: {ctx.dataset}/{split} has no masks; skipped", flush=True)
            continue
        n = len(data) if max_images is None else min(len(data), max_images)
        step = batch_size or n
        for method in [*ctx.methods, *references]:
            explanation = None if method in references else ctx.explanation(ctx.seed, method, split)
            parts = defaultdict(list)
            for i in range(0, n, step):
                batch = Batch(ctx, split, method, slice(i, min(i + step, n)), explanation, resolution)
                if method in references:
                    ref = references[method](batch)
                    if ref is None:
                        break
                    batch.maps = ref.float()
                empty = (~batch.masks.flatten(1).any(1)) if needs_masks else None
                for metric, values, *rest in score(batch):
                    values = torch.as_tensor(values).detach().cpu()
                    values = values if values.dtype == torch.float64 else values.float()  # float64 stays exact
                    if empty is not None and empty.any():
                        values = values.masked_fill(empty, float("nan"))
                    setting, level = (list(rest) + ["", float("nan")][len(rest):])[:2]
                    parts[(metric, setting, level)].append(values)
            for (metric, setting, level), values in parts.items():
                out.append(rows(method, split, metric, torch.cat(values).numpy(), setting, level))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)


def run(name: str, ctx: Context) -> pd.DataFrame:
    """Rows of family `name` for the model(s) of `ctx`; none where the family does not score the
    variant (`catalog.scores`)."""
    if not catalog.scores(ctx.cfg, name, ctx.variant):
        frame = pd.DataFrame(columns=ROW_COLUMNS)
    else:
        ctx.family = name
        frame = FAMILIES.get(name)(ctx)
    if frame.empty:
        frame = pd.DataFrame(columns=ROW_COLUMNS)
    frame.insert(0, "dataset", ctx.dataset)
    frame.insert(1, "variant", ctx.variant)
    frame.insert(2, "seed", ctx.seed if catalog.FAMILIES[name]["scope"] == "model" else -1)
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
            table = read_table(paths.metric_table(dataset, family))
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
        for seed in catalog.seeds_for(cfg, "lap_plugin") if "lap_plugin" in cfg["train"]["variants"] else []:
            path = paths.model_dir(dataset, "lap_plugin", seed) / "summary.json"
            if path.is_file():
                plug = load_json(path)["plugin"]
                out[dataset].setdefault("lap_plugin", {})[f"seed{seed}"] = {
                    stage: round(plug[stage]["test_accuracy"], 4) for stage in ("original", "at_init", "after")}
    return out

