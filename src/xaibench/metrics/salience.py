"""`salience`: the salience measures of "Explain to Me" (Crum et al. 2023; research/salience_measures.md).

(a) entropy is here; every measure takes maps [B,H,W] and returns [B], vectorised in torch.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from . import register, rows


def spatial_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the map read as a spatial distribution p = m / sum(m), divided by log(#cells).

    1 for a uniform map, 0 for a one-hot map. An all-zero map carries no preference and scores 1.
    Unnormalised, this is Quantus' `Complexity`.
    """
    flat = maps.flatten(1).double().clamp_min(0)
    total = flat.sum(1, keepdim=True)
    p = torch.where(total > 0, flat / total.clamp_min(1e-300), 1.0 / flat.shape[1])
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return (h / math.log(flat.shape[1])).float()


def histogram_entropy(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """The reference code's entropy: of the grey-level histogram, not of where the relevance is.

    The map is area-averaged to grid×grid cells (the reference used the 7×7 feature-map Grad-CAM),
    min-max normalised, quantised to uint8 by truncation (torchcam's `to_pil_image`), and the
    base-2 Shannon entropy of its value histogram (skimage.measure.shannon_entropy) is divided by
    log2(min(grid², 256)), the most distinct levels the map can hold (5.614 = log2 49 at 7×7).
    """
    small = F.adaptive_avg_pool2d(maps[:, None].double(), grid).flatten(1)
    lo, hi = small.min(1, keepdim=True).values, small.max(1, keepdim=True).values
    q = ((small - lo) / (hi - lo).clamp_min(1e-12) * 255).floor().clamp(0, 255).long()
    counts = F.one_hot(q, 256).sum(1).double()
    p = counts / counts.sum(1, keepdim=True)
    h = -(p * torch.log2(p.clamp_min(1e-300))).sum(1)
    return (h / math.log2(min(grid * grid, 256))).float()


@register("entropy")
def entropy(ctx) -> pd.DataFrame:
    grid = ctx.cfg["metrics"]["entropy_grid"]
    out = []
    for split in ctx.cfg["explain"]["splits"]:
        for method in ctx.cfg["explain"]["methods"]:
            maps = torch.from_numpy(ctx.explanation(ctx.seed, method, split)["maps"]).float()
            out.append(rows(method, split, "spatial_entropy", spatial_entropy(maps).numpy()))
            out.append(rows(method, split, "histogram_entropy", histogram_entropy(maps, grid).numpy()))
    return pd.concat(out, ignore_index=True)
