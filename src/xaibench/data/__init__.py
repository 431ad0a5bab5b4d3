"""Datasets, all written in the prepared-split format (see `store`).

A dataset is a generator function `prepare(settings, image_size, seed)` that yields
(split name, arrays) and returns its meta; it registers with `@DATASETS.register(name)` in its own
module, listed in `xaibench.catalog.DATASETS`, with its settings block under `data.{name}`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .. import catalog
from ..progress import Progress
from ..registry import Registry
from .store import Split, read_meta, read_split, write_meta, write_split

DATASETS = Registry("dataset", catalog.DATASETS)
BASE_SPLITS = ("train", "val", "test")


def split_names(name: str, data_cfg: dict) -> list[str]:
    """The splits `prepare` writes for dataset `name`, known without generating anything (the
    Snakefile declares one output file per split). A dataset whose settings have `n_<split>` counts
    (shapes) writes exactly the splits with a count above 0; the others write train, val and test.
    tests/unit/test_faults.py checks this against what `prepare` really writes.
    """
    counts = {k[2:]: v for k, v in data_cfg[name].items() if k.startswith("n_")}
    names = [s for s, n in counts.items() if n > 0] if counts else list(BASE_SPLITS)
    derived = catalog.DATASETS[name].get("derived_splits", {})  # e.g. shapes' nocue: test without the cue
    return names + [split for split, source in derived.items() if source in names]


def prepare(name: str, data_cfg: dict, out: str | Path) -> dict:
    """Write every split of dataset `name` under `out` plus meta.json; return the meta."""
    out = Path(out)
    size, seed = data_cfg["image_size"], data_cfg["seed"]
    gen = DATASETS.get(name)(data_cfg[name], size, seed)
    splits, digest = {}, hashlib.sha256()
    with Progress(desc=f"prepare {name}", unit="splits") as bar:
        try:
            while True:
                split, arrays = next(gen)
                write_split(out, split, arrays)
                splits[split] = int(len(arrays["labels"]))
                digest.update(arrays["images"].tobytes())
                bar.update()
        except StopIteration as stop:
            meta = stop.value
    meta.update(dataset=name, image_size=size, seed=seed, splits=splits, settings=data_cfg[name],
                has_masks="masks" in arrays, content_sha256=digest.hexdigest())
    write_meta(out, meta)
    return meta


__all__ = ["Split", "prepare", "read_meta", "read_split", "split_names"]
