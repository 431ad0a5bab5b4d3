"""`localization`: how well a map points at the ground-truth mask (papers C, D, E).

All functions take maps [B,H,W] (non-negative) and boolean masks [B,H,W] and return [B].
Definitions follow Quantus (PointingGame, RelevanceMassAccuracy) and scikit-learn's
average_precision_score, which the tests check them against.
"""
from __future__ import annotations

import pandas as pd
import torch

from . import over_maps, register


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


@register("localization")
def localization(ctx) -> pd.DataFrame:
    def score(b):
        for name, fn in MEASURES.items():
            yield name, fn(b.maps, b.masks)
        if b.split == "pairs":  # two objects: relevance mass on the explained object vs the other one
            other_mask = b.extra("masks2") > 127
            on_first = (b.targets == b.labels)[:, None, None]
            yield "mass_on_target_object", relevance_mass(b.maps, torch.where(on_first, b.masks, other_mask))
            yield "mass_on_other_object", relevance_mass(b.maps, torch.where(on_first, other_mask, b.masks))

    return over_maps(ctx, score, family="localization", needs_masks=True)
