"""Segmentation test of paper D (AGF, Gur et al. 2021), the ImageNet-segmentation protocol on any
dataset with masks (research/agf.md §3.3; reference `imagenet_seg_eval.py` + `utils/metrices.py`
of shirgur/AGFVisualization, mIoU and the continuous AP from hila-chefer/Transformer-Explainability's
derived script, which the lab's later papers use).

The map is binarised into foreground (map > threshold) and background, and compared with the
mask as a two-class segmentation:
- pixel accuracy: share of pixels whose class is right;
- mIoU: mean over {background, foreground} of intersection / union;
- mAP: average precision (scikit-learn's) of the two-channel scores against the two-channel
  one-hot mask, flattened together. `ap="binary"` scores the binarised map, as the AGF script
  does; then mAP = a² + (1 − a)/2 with a the pixel accuracy (tested against scikit-learn), so it
  adds no information, and it is computed so.
  `ap="continuous"` scores (1 − r, r) with r the min-max normalised map, as Chefer's script.
Thresholds: `"mean"` (each map's own mean; the reference for Grad-CAM, IG, SmoothGrad, LRP:
`Res - Res.mean()` then `> 0`), `"zero"` (the reference for AGF, RAP, LRP-αβ, CLRP, SGLRP: signed
maps at 0), or a number. A constant map has no foreground (Chefer's script gets NaN and the same).

All functions take maps [B,H,W] and boolean masks [B,H,W] and return per-image [B] values. The
reference pools pixel counts over the dataset for pixel accuracy and mIoU; with equal-size images
pooled pixel accuracy = the mean of per-image ones, but pooled mIoU is not the mean of per-image
mIoU: `pooled_scores` gives the reference's pooled numbers from `segmentation_counts`.

The `segmentation` family (bottom) scores every explained split with masks, per image.
"""
from __future__ import annotations

import pandas as pd
import torch

from . import over_maps, register
from .localization import pixel_average_precision


def binarise(maps: torch.Tensor, threshold: str | float = "mean") -> torch.Tensor:
    """[B,H,W] -> bool foreground: map > its mean ("mean"), > 0 ("zero") or > a number."""
    flat = maps.flatten(1).double()
    if threshold == "mean":
        thr = flat.mean(1, keepdim=True)
    elif threshold == "zero":
        thr = torch.zeros_like(flat[:, :1])
    elif isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        thr = torch.full_like(flat[:, :1], float(threshold))
    else:
        raise ValueError(f"segmentation threshold must be mean, zero or a number, got {threshold!r}")
    flat_map = flat.amax(1, keepdim=True) == flat.amin(1, keepdim=True)
    return ((flat > thr) & ~flat_map).view_as(maps)


def _check(maps, masks):
    if maps.shape != masks.shape or maps.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"segmentation: maps [B,H,W] and bool masks of the same shape expected; got "
                         f"{tuple(maps.shape)} {maps.dtype} and {tuple(masks.shape)} {masks.dtype}")


def segmentation_counts(maps: torch.Tensor, masks: torch.Tensor, threshold: str | float = "mean") -> dict:
    """Per-image pixel counts [B]: correct, labelled, and intersection/union of background and foreground."""
    _check(maps, masks)
    pred, gt = binarise(maps, threshold).flatten(1), masks.flatten(1)
    count = lambda t: t.sum(1).double()  # noqa: E731
    return {"correct": count(pred == gt), "labelled": torch.full_like(count(gt), gt.shape[1]),
            "inter_bg": count(~pred & ~gt), "union_bg": count(~pred | ~gt),
            "inter_fg": count(pred & gt), "union_fg": count(pred | gt)}


def _iou(inter, union):
    """Intersection / union with the reference's guard: 0 when both are empty."""
    return inter / (union + torch.finfo(torch.float64).eps)


def segmentation_scores(maps: torch.Tensor, masks: torch.Tensor, threshold: str | float = "mean",
                        ap: str = "binary") -> dict[str, torch.Tensor]:
    """Per-image pixel_accuracy, miou and map (mAP), each [B] float."""
    c = segmentation_counts(maps, masks, threshold)
    accuracy = c["correct"] / c["labelled"]
    if ap == "binary":
        # the two-channel scores are 0/1, so the AP has two thresholds: at 1, precision = recall =
        # accuracy a; at 0, precision 1/2 and recall 1. AP = a² + (1 − a)/2 exactly (scikit-learn
        # agrees, tests/unit/test_agf_metrics.py), without sorting 2·H·W scores per image.
        mean_ap = (accuracy ** 2 + (1 - accuracy) / 2).float()
    elif ap == "continuous":
        flat = maps.flatten(1).double()
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        fg = torch.where(hi > lo, (flat - lo) / (hi - lo).clamp_min(1e-300), 0.0).view_as(maps)
        mean_ap = pixel_average_precision(torch.stack([1 - fg, fg], 1), torch.stack([~masks, masks], 1))
    else:
        raise ValueError(f"segmentation ap must be binary or continuous, got {ap!r}")
    return {"pixel_accuracy": accuracy.float(),
            "miou": ((_iou(c["inter_bg"], c["union_bg"]) + _iou(c["inter_fg"], c["union_fg"])) / 2).float(),
            "map": mean_ap}


def pooled_scores(counts: dict) -> dict[str, float]:
    """The reference's dataset-level pixel accuracy and mIoU: counts summed over all images first."""
    s = {k: float(v.sum()) for k, v in counts.items()}
    eps = float(torch.finfo(torch.float64).eps)
    return {"pixel_accuracy": s["correct"] / (s["labelled"] + eps),
            "miou": (s["inter_bg"] / (s["union_bg"] + eps) + s["inter_fg"] / (s["union_fg"] + eps)) / 2}


@register("segmentation")
def segmentation(ctx) -> pd.DataFrame:
    """Per-image pixel_accuracy, miou, map (binarised map, the AGF script) and map_continuous
    (Chefer's) of the saved maps (the explained class, predicted by default) vs the object mask.

    Threshold per explainer from `metrics.segmentation.thresholds` (default `mean`; `agf: zero`, as
    the reference treats AGF, RAP and LRP-αβ). Signed maps are thresholded as stored: at their mean
    (gradient × input, as the reference's signed LRP maps) or at 0 (AGF: positive = evidence for
    the class). Reference lines: `baseline_oracle` (the mask: 1, 1, 1), `baseline_random` (chance:
    uniform noise, at its mean) and `baseline_uniform` (a constant map: no foreground, everything
    background, which on small objects beats chance on pixel accuracy and mAP; docs/agf_protocol.md).
    On the default data (objects 5.8% of the image) that constant map beats every explainer on
    pixel_accuracy and map, which are then uninformative; miou and map_continuous are not
    (docs/agf_protocol.md, "Which threshold and AP form").
    """
    from .perturbation import reference_maps
    thresholds = ctx.cfg["metrics"]["segmentation"]["thresholds"]

    def score(b):
        thr = thresholds.get(b.method, "mean")
        for name, values in segmentation_scores(b.maps, b.masks, thr, ap="binary").items():
            yield name, values
        yield "map_continuous", segmentation_scores(b.maps, b.masks, thr, ap="continuous")["map"]

    refs = {f"baseline_{k}": reference_maps(k, ctx.seed) for k in ("random", "uniform", "oracle")}
    return over_maps(ctx, score, family="segmentation", needs_masks=True, references=refs)
