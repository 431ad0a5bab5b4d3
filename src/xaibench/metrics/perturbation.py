"""Positive and negative perturbation test of paper D (AGF, Gur et al. 2021; the reference is
`pertubation_eval_from_hdf5.py` of shirgur/AGFVisualization, research/agf.md §3.2).

For each fraction p (reference: 0.1, 0.2, …, 0.9), independently from the clean image, the
floor(p·H·W) pixels ranked first are set to a baseline value in all channels and the model is
asked again; the record is whether its top-1 class still equals the label. `positive` removes the
most relevant pixels first (a faithful map makes accuracy fall fast: lower AUC is better),
`negative` the least relevant first (accuracy should hold: higher AUC is better).

Choices vs the reference (docs/agf_protocol.md):
- the fill of removed pixels (`baseline`): `black` (0 in [0,1] space, the reference's), `mean` (the
  dataset's per-channel mean), `blur` (the image's own Gaussian blur) or `road` (ROAD's noisy
  linear imputation, metrics/imputation.py). Black patches are far from the training images of a
  small CNN, which may then fail whatever was removed; the other three are the field's ways to
  stay closer to the data. The default is chosen by how well each separates the oracle map from
  a random one (docs/agf_protocol.md, "Which fill").
- ties in a map are broken by a seeded random order (`seed`); the reference's `torch.topk` leaves
  tie order unspecified, and ReLU'd maps are flat over large areas, where raster order would bias
  the test. Negative order ranks `-maps` with the same tie-break.
- the per-class part (maps of the predicted class, maps of the true class) is the caller's: pass
  the maps of the class to be tested; correctness is always against `labels`, as the reference.

The `perturbation` family (bottom) runs this on every explained split for the maps of the
predicted class and of the true class (`metrics.perturbation.classes`), with, where the split has
masks, a chance line (`baseline_random`) and an oracle (`baseline_oracle`: the mask ranked first).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import over_maps, register
from .imputation import noisy_linear_imputation
from .salience import gaussian_blur

FILLS = ("black", "mean", "blur", "road")  # black: the reference's
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("positive", "negative")


def removal_counts(fractions: Sequence[float], n_pixels: int) -> torch.Tensor:
    """floor(p · n) pixels per fraction, as the reference's int(224·224·p) (1e-9 guards float error)."""
    return torch.tensor([int(float(p) * n_pixels + 1e-9) for p in fractions])


def removal_rank(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[B,H,W] -> [B,H,W] removal rank (0 = highest value), ties in one seeded random pixel order.

    The tie order is one permutation shared by all images (unlike `deletion.removal_rank`, which
    draws one per row), so an image's curve does not depend on the batch it is scored in.
    """
    flat = maps.flatten(1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(int(seed))).to(flat.device)
    order = perm[flat[:, perm].argsort(dim=1, descending=True, stable=True)]
    return torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=flat.device)
                                            .expand_as(order).contiguous()).view_as(maps)


def fill_image(images: torch.Tensor, baseline: str = "black", dataset_mean: Sequence[float] | None = None,
               blur_sigma: float = 0.0625) -> torch.Tensor:
    """What a removed pixel becomes, for the fills that do not depend on which pixels are removed:
    `black` (0), `mean` (`dataset_mean`, per channel) or `blur` (the image blurred with σ =
    `blur_sigma` × its longer side; torchvision's gaussian_blur, kernel 2·int(4σ + 0.5) + 1).
    Broadcastable to images [B,C,H,W]."""
    c = images.shape[1]
    if baseline == "black":
        return torch.zeros(1, c, 1, 1, dtype=images.dtype, device=images.device)
    if baseline == "mean":
        if dataset_mean is None or len(dataset_mean) != c:
            raise ValueError(f"perturbation baseline 'mean' needs dataset_mean with {c} values, got {dataset_mean}")
        return torch.as_tensor(dataset_mean, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma * max(images.shape[-2:]), mirror=True)
    raise ValueError(f"perturbation baseline must be one of {', '.join(FILLS)}, got {baseline!r}")


@torch.no_grad()
def perturbation_curves(model, images: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor,
                        fractions: Sequence[float] = FRACTIONS, order: str = "positive", baseline: str = "black",
                        dataset_mean: Sequence[float] | None = None, seed: int = 0, blur_sigma: float = 0.0625,
                        road_noise: float = 0.01) -> torch.Tensor:
    """[B, len(fractions)] bool: top-1 prediction == label after removing each fraction of pixels.

    images [B,C,H,W] in [0,1]; maps [B,H,W] (any sign; only the ranking matters). Removed pixels
    take the fill `baseline` (FILLS; `fill_image`, or ROAD's imputation with noise sd `road_noise`
    drawn from `seed`). One batched forward pass per fraction.
    """
    b, c, h, w = images.shape
    if maps.shape != (b, h, w) or labels.shape != (b,):
        raise ValueError(f"perturbation: maps must be [B,H,W]={b, h, w} and labels [B]; got "
                         f"{tuple(maps.shape)} and {tuple(labels.shape)}")
    if order not in ORDERS:
        raise ValueError(f"perturbation order must be positive or negative, got {order!r}")
    if not fractions or any(not 0 < float(p) <= 1 for p in fractions):
        raise ValueError(f"perturbation fractions must lie in (0, 1], got {list(fractions)}")
    value = None if baseline == "road" else fill_image(images, baseline, dataset_mean, blur_sigma)
    noise = torch.Generator().manual_seed(int(seed))
    ranked = maps if order == "positive" else -maps
    rank = removal_rank(ranked, seed)  # [B,H,W], 0 = removed first
    out = []
    for k in removal_counts(fractions, h * w).tolist():
        removed = rank < k
        if value is None:
            x = noisy_linear_imputation(images, removed, road_noise, noise)
        else:
            x = torch.where(removed[:, None], value, images)
        out.append(model(x).argmax(1) == labels)
    return torch.stack(out, 1)


def auc(fractions: Sequence[float], accuracy: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """Trapezoid area under accuracy [..., F] over the removed fraction (x in [0,1], y in [0,1]).

    Over the reference's 10–90% the area lies in [0, 0.8]; `normalise=True` divides by the
    fraction range (the mean height, in [0,1], as `deletion.curve_auc`). The paper's integration
    rule is not in its code (research/agf.md §3.2); the lab's wording is "area under the curve
    over 10% to 90%". Linear in the curve, so the mean of per-image AUCs = the AUC of the mean curve.
    """
    x = torch.as_tensor([float(p) for p in fractions], dtype=torch.float64)
    if len(x) < 2 or not bool((x[1:] > x[:-1]).all()) or accuracy.shape[-1] != len(x):
        raise ValueError(f"auc needs >= 2 increasing fractions matching the curve's last axis; got "
                         f"{x.tolist()} for a curve of shape {tuple(accuracy.shape)}")
    area = torch.trapezoid(accuracy.double(), x.to(accuracy.device), dim=-1)
    return area / (x[-1] - x[0]) if normalise else area


# ------------------------------------------------------------------------- the metric family
def class_maps(model, batch, wanted: torch.Tensor, options: dict) -> torch.Tensor:
    """The batch's saved maps where they explain `wanted`, recomputed with the same explainer and
    options (xaibench.explain.get) for the images whose saved target differs (e.g. the true class
    of a misclassified image); one explainer call per batch for those images only."""
    from ..explain import maps_for
    redo = (batch.targets.to(wanted.device) != wanted).nonzero()[:, 0]
    if batch.explanation is None or not len(redo):
        return batch.maps  # the same tensor: its curves are computed once for every class kind
    maps = batch.maps.clone()
    x = batch.images[redo.to(batch.images.device)]
    maps[redo] = maps_for(model, x, wanted[redo].to(x.device), batch.method, options).cpu()
    return maps


def reference_maps(kind: str, seed: int):
    """A reference line as an `over_maps` reference: localization.baseline_maps of kind `random`
    (chance: i.i.d. uniform noise, seeded by `seed` and the batch's first image), `uniform`
    (constant) or `oracle` (the object mask); None on splits without masks."""
    from .localization import baseline_maps

    def maps(b):
        if b.masks is None:
            return None
        return baseline_maps(kind, b.masks, seed=int(seed) * 1_000_003 + b.index.start)
    return maps


@register("perturbation")
def perturbation(ctx) -> pd.DataFrame:
    """Positive and negative perturbation curves and AUCs (paper D, research/agf.md §3.2).

    Rows per image: `positive_accuracy` / `negative_accuracy` at level = removed fraction, and
    `positive_auc` (lower = faithful) / `negative_auc` (higher = faithful) over the fractions
    (trapezoid, x in [0,1]: at most 0.8 over 10–90%); setting = the class the map explains
    (`predicted` or `label`). Correct = top-1 equals the label, for both, as the reference.
    Signed maps (AGF, gradient × input): ranked as stored (`ranking: signed`, the reference, which
    ranks AGF's signed map and −map), or by their positive part (`ranking: positive`: negative
    evidence ties with zero and goes in the seeded random order).
    Reference lines (splits with masks): `baseline_random` (chance: a uniform random map) and
    `baseline_oracle` (the object mask ranked first).
    """
    pcfg = ctx.cfg["metrics"]["perturbation"]
    fractions = sorted(pcfg["fractions"])
    model = ctx.model(ctx.seed).eval()
    mean, fill = None, {k: pcfg[k] for k in ("blur_sigma", "road_noise")}
    if pcfg["baseline"] == "mean":  # the training images' per-channel mean, in [0,1]
        mean = (ctx.split("train").images.reshape(-1, 3).mean(0) / 255.0).tolist()
    options = ctx.cfg["explain"].get("options", {})

    def score(b):
        labels = b.labels.to(ctx.device)
        if b.explanation is None:  # reference lines explain no class
            kinds = {k: b.maps for k in pcfg["classes"]}
        else:
            preds = torch.from_numpy(b.explanation["predictions"][b.index])
            wanted = {"predicted": preds, "label": b.labels}
            kinds = {k: class_maps(model, b, wanted[k], options.get(b.method, {})) for k in pcfg["classes"]}
        curves = {}  # one set of forward passes per distinct map tensor
        for kind, maps in kinds.items():
            if id(maps) not in curves:
                ranked = (maps.clamp_min(0) if pcfg["ranking"] == "positive" else maps).to(ctx.device)
                curves[id(maps)] = {order: perturbation_curves(model, b.images, labels, ranked, fractions, order,
                                                               pcfg["baseline"], mean, seed=ctx.seed, **fill).float().cpu()
                                    for order in ORDERS}
            for order, curve in curves[id(maps)].items():
                for k, p in enumerate(fractions):
                    yield f"{order}_accuracy", curve[:, k], kind, p
                yield f"{order}_auc", auc(fractions, curve).float(), kind

    return over_maps(ctx, score, family="perturbation", max_images=pcfg["max_images"],
                     batch_size=ctx.cfg["explain"]["batch_size"],
                     references={f"baseline_{k}": reference_maps(k, ctx.seed) for k in ("random", "oracle")})
