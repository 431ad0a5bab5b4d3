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

from . import register, rows


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 if a maximum of the map lies inside the mask (any of tied maxima, as Quantus), else 0."""
    flat = maps.flatten(1)
    at_max = flat == flat.max(1, keepdim=True).values
    return (at_max & masks.flatten(1)).any(1).float()


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
    from ..training.fit import cue_subsets
    opts = ctx.cfg["metrics"]["localization"]
    out = []
    for split in ctx.cfg["explain"]["splits"]:
        data = ctx.split(split)
        if data.masks is None:
            print(f"localization: {ctx.dataset}/{split} has no masks; skipped")
            continue
        masks = torch.from_numpy(data.masks) > 127
        boxes = (data.extras or {}).get("cue_box")
        cues = None if boxes is None or not boxes.any() else box_masks(torch.from_numpy(boxes), *masks.shape[1:])
        groups = {split: np.arange(len(data))}
        if split == "test":
            groups.update({name: np.flatnonzero(keep) for name, keep in cue_subsets(data).items() if keep.any()})
        maps = {m: torch.from_numpy(ctx.explanation(ctx.seed, m, split)["maps"]).float() for m in ctx.methods}
        maps.update({f"baseline_{k}": baseline_maps(k, masks, opts["gaussian_sigma"], ctx.seed) for k in BASELINES})
        for method, m in maps.items():
            scores = {name: fn(m, masks) for name, fn in MEASURES.items()}
            if cues is not None:
                scores["cue_mass"] = cue_mass(m, cues)
            for group, idx in groups.items():
                for name, values in scores.items():
                    out.append(rows(method, group, name, values[idx].numpy()).assign(image=idx))
            if split == "pairs" and not method.startswith("baseline_"):
                out.append(_second_object(ctx, method, data, m))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _second_object(ctx, method, data, maps) -> pd.DataFrame:
    """Two-object images: relevance mass on the explained object's mask vs the other object's."""
    m1 = torch.from_numpy(data.masks) > 127
    m2 = torch.from_numpy(data.extras["masks2"]) > 127
    targets = torch.from_numpy(ctx.explanation(ctx.seed, method, "pairs")["targets"])
    on_first = targets == torch.from_numpy(data.labels)
    own = torch.where(on_first[:, None, None], m1, m2)
    other = torch.where(on_first[:, None, None], m2, m1)
    return pd.concat([rows(method, "pairs", "mass_on_target_object", relevance_mass(maps, own).numpy()),
                      rows(method, "pairs", "mass_on_other_object", relevance_mass(maps, other).numpy())])
