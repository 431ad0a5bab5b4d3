"""Training objectives, one function per variant, all `(model, x, y, masks, cfg) -> (loss, logits)`."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map of a batch [B,...] to [0,1]; a constant map becomes 0 (CYBORG's later repos guard it so)."""
    flat = a.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(a)


def class_activation_map(model, feats: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Original CAM at feature resolution: sum_k W[c,k] * F_k (no bias, no ReLU, as CYBORG's code)."""
    return torch.einsum("bchw,bc->bhw", feats, model.fc.weight[classes])


def cross_entropy(model, x, y, masks, cfg):
    logits = model(x)
    return F.cross_entropy(logits, y), logits


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


LOSSES = {"standard": cross_entropy, "salience": cyborg}
