"""`localization`: how well a map points at the ground-truth mask (papers C, D, E), beside the
chance and ceiling lines of the same measures (baseline maps) and the mass on the cue patch.

All functions take maps [B,H,W] (non-negative) and boolean masks [B,H,W] and return [B].
Definitions follow Quantus (PointingGame, RelevanceMassAccuracy) and scikit-learn's
average_precision_score, which the tests check them against.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import over_maps, register


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 if a maximum of the map lies inside the mask (any of tied maxima, as Quantus), else 0."""
    flat = maps.flatten(1)
    at_max = flat == flat.amax(1, keepdim=True)  # amax: no argmax indices to compute
    return at_max.logical_and_(masks.flatten(1)).any(1).float()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the map's total relevance that falls inside the mask (Arras et al. 2022). 0/0 -> 0."""
    flat = maps.flatten(1)
    inside = (flat * masks.flatten(1)).sum(1)
    return inside / flat.sum(1).clamp_min(1e-12)


def pixel_average_precision(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average precision of the map as a pixel ranking of the mask, ties grouped (as scikit-learn).

    AP = sum over distinct thresholds of (recall step) × precision. Images with an empty mask give NaN.
    """
    flat, lab = maps.flatten(1).double(), masks.flatten(1).double()
    vals, order = flat.sort(1, descending=True)
    lab = lab.gather(1, order)
    n = vals.shape[1]
    tp = lab.cumsum(1)
    precision = tp / torch.arange(1, n + 1, dtype=tp.dtype, device=tp.device)
    last = torch.ones_like(vals, dtype=torch.bool)
    last[:, :-1] = vals[:, :-1] != vals[:, 1:]
    first = torch.ones_like(last)
    first[:, 1:] = last[:, :-1]
    group = first.long().cumsum(1) - 1
    pos_in_group = torch.zeros_like(lab).scatter_add_(1, group, lab).gather(1, group)
    n_pos = lab.sum(1)
    ap = (last * pos_in_group * precision).sum(1) / n_pos
    return torch.where(n_pos > 0, ap, torch.nan).float()


MEASURES = {"pointing_game": pointing_game, "relevance_mass": relevance_mass, "pixel_ap": pixel_average_precision}

# Chance and ceiling lines: maps that know nothing (uniform, centred Gaussian, seeded random) and
# the mask itself (oracle), scored by the same measures on the same images.
BASELINES = ("uniform", "gaussian", "random", "oracle")


def baseline_maps(kind: str, masks: torch.Tensor, sigma: float = 0.25, seed: int = 0) -> torch.Tensor:
    """Reference maps [B,H,W] for masks [B,H,W].

    `uniform`: all ones. Analytic values: relevance mass = pixel AP = the mask's area fraction;
    pointing game = 1 whenever the mask is non-empty, because every pixel ties at the maximum and
    the tie rule (any maximum inside the mask counts, as Quantus) makes it a hit. `gaussian`: a
    centred isotropic Gaussian with sd `sigma` × the side (our choice; the centre-bias baseline of
    saliency benchmarks). `random`: i.i.d. uniform noise from a generator seeded by `seed`; expected
    pointing game = the mask's area fraction. `oracle`: the mask itself: pointing game, relevance
    mass and pixel AP are 1 (the ceiling).
    """
    b, h, w = masks.shape
    if kind == "uniform":
        return torch.ones(b, h, w)
    if kind == "gaussian":
        y = (torch.arange(h) + 0.5 - h / 2) / (sigma * h)
        x = (torch.arange(w) + 0.5 - w / 2) / (sigma * w)
        return torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).expand(b, h, w)
    if kind == "random":
        return torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed))
    if kind == "oracle":
        return masks.float()
    raise ValueError(f"unknown baseline map '{kind}'; choose from: {', '.join(BASELINES)}")


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boolean masks [B,H,W] of boxes [B,4] = (y0, x0, y1, x1) in pixels, end exclusive (as the prepared `cue_box`)."""
    yy = torch.arange(h)[None, :, None]
    xx = torch.arange(w)[None, None, :]
    y0, x0, y1, x1 = (boxes[:, i, None, None] for i in range(4))
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def cue_mass(maps: torch.Tensor, cue_masks: torch.Tensor) -> torch.Tensor:
    """Share of the map's relevance on the planted cue patch: relevance mass with the patch as the mask.

    A map of a model that follows the cue should put its relevance there; NaN where an image has no patch.
    """
    return torch.where(cue_masks.flatten(1).any(1), relevance_mass(maps, cue_masks), torch.nan)


@register("localization")
def localization(ctx) -> pd.DataFrame:
    """Every measure for every explainer and every baseline map (method `baseline_{kind}`), on each
    explained split and, on `test`, separately on its cue-agreeing and cue-conflicting images
    (splits `test_cue_agreeing`, `test_cue_conflicting`; image indices kept). Baselines depend on the
    data alone (the random map on the model's seed), so they repeat across variants.
    """
    def score(b):
        yield from _scores(b.relevance, b.masks, b.extra("cue_box"))
        if b.split == "pairs":  # two objects: relevance mass on the explained object vs the other one
            other_mask = b.extra("masks2") > 127
            on_first = (b.targets == b.labels)[:, None, None]
            yield "mass_on_target_object", relevance_mass(b.relevance, torch.where(on_first, b.masks, other_mask))
            yield "mass_on_other_object", relevance_mass(b.relevance, torch.where(on_first, other_mask, b.masks))

    sigma = ctx.cfg["metrics"]["localization"]["gaussian_sigma"]
    references = {f"baseline_{kind}": (lambda b, kind=kind: baseline_maps(kind, b.masks, sigma, ctx.seed))
                  for kind in BASELINES}
    frame = over_maps(ctx, score, family="localization", needs_masks=True, references=references)
    return _with_cue_subsets(ctx, frame)


def _scores(maps, masks, boxes):
    for name, fn in MEASURES.items():
        yield name, fn(maps, masks)
    if boxes is not None and boxes.any():
        yield "cue_mass", cue_mass(maps, box_masks(boxes, *masks.shape[1:]))


def _with_cue_subsets(ctx, frame: pd.DataFrame) -> pd.DataFrame:
    """Append the `test` rows again under split names `test_cue_agreeing` / `test_cue_conflicting`."""
    from ..training.fit import cue_subsets
    if "test" not in ctx.cfg["explain"]["splits"] or frame.empty:
        return frame
    test = frame[frame.split == "test"]
    extra = [test[test.image.isin(np.flatnonzero(keep))].assign(split=name)
             for name, keep in cue_subsets(ctx.split("test")).items() if keep.any()]
    return pd.concat([frame, *extra], ignore_index=True)
