"""Training variants, registered by name (their index is `xaibench.catalog.VARIANTS`).

A variant is what gets trained and how: an architecture builder and either the loss of the plain
seeded epoch loop of `fit.train` or its own trainer (a phased schedule such as ProtoPNet's, or a
fine-tuning of another variant's model such as the LAP plug-in). Adding one is a module that calls
`VARIANTS.register(name, Variant(...))` plus its catalog entry; its settings block, if any, lives
under `train.{settings}` in params.yaml and becomes part of its checkpoints' model config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry
from .. import catalog

VARIANTS = Registry("training variant", catalog.VARIANTS)


@dataclass(frozen=True)
class Variant:
    build: Callable  # model config (fit.model_config) -> untrained nn.Module
    loss: Callable | None = None  # (model, x, y, masks, train settings) -> (loss, logits): what fit.train minimises
    trainer: Callable | None = None  # (cfg, data_root, variant, seed, out, device) -> summary; None = fit.train
    param_groups: Callable | None = None  # (model, variant settings) -> optimiser groups with an "lr_scale"; None = one group
    epoch_settings: Callable | None = None  # (train settings, epoch) -> the settings the loss sees that epoch

    def __post_init__(self):
        if (self.loss is None) == (self.trainer is None):
            raise TypeError("a Variant has a loss for fit.train's epoch loop or a trainer of its own, exactly one")


def variant_spec(name: str) -> Variant:
    """The Variant of `name`: an external model (settings `models.external`) is imported, not trained."""
    if catalog.is_external(name):
        from .external import EXTERNAL
        return EXTERNAL
    return VARIANTS.get(name)


def train_variant(cfg: dict, data_root: str | Path, variant: str, seed: int, out: str | Path, device="auto") -> dict:
    """Train one model of `variant` with its trainer; writes model.pt, history.csv, summary.json under `out`."""
    from .fit import train
    trainer = variant_spec(variant).trainer or train
    return trainer(cfg, data_root, variant, seed, out, device)
