"""Training objectives, one function per variant, all `(model, x, y, masks, cfg) -> (loss, logits)`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import LOSSES


def minmax(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map of a batch [B,...] to [0,1]; a constant map becomes 0 (CYBORG's later repos guard it so)."""
    flat = a.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(a)


def class_activation_map(model, feats: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Original CAM at feature resolution: sum_k W[c,k] * F_k (no bias, no ReLU, as CYBORG's code)."""
    return torch.einsum("bchw,bc->bhw", feats, model.fc.weight[classes])


@LOSSES.register("cross_entropy")
def cross_entropy(model, x, y, masks, cfg):
    logits = model(x)
    return F.cross_entropy(logits, y), logits


@LOSSES.register("cyborg")
def cyborg(model, x, y, masks, cfg):
    """CYBORG (Boyd et al. 2023): (1-a)·CE + a·MSE(minmax CAM, minmax human map at CAM size).

    `alpha` weighs the salience term here (the reference code's α weighs CE; at the default 0.5
    they coincide). The CAM is taken for the predicted class as in the reference code, or for the
    label with `cam_class: label`. Human maps are resized with antialiased bilinear interpolation,
    matching the PIL resize the reference code uses.
    """
    if masks is None:
        raise ValueError("the salience variant needs human masks, and this dataset has none")
    alpha, cam_class = cfg["salience"]["alpha"], cfg["salience"]["cam_class"]
    feats = model.features(x)
    logits = model.classify(feats)
    classes = logits.argmax(1) if cam_class == "predicted" else y
    cam = minmax(class_activation_map(model, feats, classes))
    human = F.interpolate(masks[:, None], size=cam.shape[-2:], mode="bilinear", antialias=True, align_corners=False)[:, 0]
    loss = (1 - alpha) * F.cross_entropy(logits, y) + alpha * F.mse_loss(cam, minmax(human))
    return loss, logits


def _unit(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    flat = a.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)


def mask_injection(maps: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """GALA-style (Linsley et al. 2019): ||m/||m|| - M/||M|| ||² per attention map [B,h,w], averaged.

    The mask is area-averaged to each map's resolution; unit-norm scaling makes the loss ask only
    *where* attention is (it is 2 - 2·cos, in [0,2]). Images with an empty mask are left out.
    """
    has = masks.flatten(1).sum(1) > 0
    if not has.any():
        return masks.new_zeros(())
    terms = []
    for m in maps:
        target = F.adaptive_avg_pool2d(masks[:, None], m.shape[-2:])[:, 0]
        terms.append((_unit(m) - _unit(target)).square().sum(1))
    return torch.stack(terms).mean(0)[has].mean()


def mil_injection(head_scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Image-label-only MIL (research/lap.md §4): the image is a positive bag for its class and a
    negative bag for every other class. max_p s_y -> 1 (some strongly attended region for the true
    class), max_p s_k -> 0 for k != y (no attention anywhere for absent classes); binary cross-entropy,
    the negatives averaged so both sides weigh the same.
    """
    peak = head_scores.flatten(2).amax(-1).clamp(1e-6, 1 - 1e-6)  # [B,K]
    pos = F.one_hot(y, peak.shape[1]).to(peak.dtype)
    bce = F.binary_cross_entropy(peak, pos, reduction="none")
    neg = (bce * (1 - pos)).sum(1) / max(peak.shape[1] - 1, 1)
    return ((bce * pos).sum(1) + neg).mean()


@LOSSES.register("lap")
def lap(model, x, y, masks, cfg):
    """LAP variant: CE + injection_weight · knowledge-injection term on the model's own attention maps.

    `mask`: mask_injection on every LAP layer's map and on the head's map of the true class (needs
    masks); `mil`: mil_injection on the head's class maps (image labels only); `none`: CE alone.
    """
    opts = cfg["lap"]
    if not hasattr(model, "lap_layers"):
        raise ValueError("the lap loss needs a LAP-extended model (variant lap or lap_plugin)")
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    if opts["injection"] == "none" or opts["injection_weight"] == 0:
        return loss, logits
    head = model.head.last_scores
    if opts["injection"] == "mask":
        if masks is None:
            raise ValueError("train.lap.injection: mask needs masks, and this dataset has none (use mil or none)")
        maps = [m[:, 0] for m in (layer.last_scores for layer in model.lap_layers())]
        maps.append(head[torch.arange(len(y), device=y.device), y])
        extra = mask_injection(maps, masks)
    else:
        extra = mil_injection(head, y)
    return loss + opts["injection_weight"] * extra, logits

