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


def outline_band(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """A sparser human map: the band around each mask's boundary, dilation minus erosion of the
    binarised mask (> 0.5) by a (2r+1)² square; [B,H,W] -> [B,H,W] in {0,1}. A filled s×s square
    gives a frame of (s+2r)² − (s−2r)² pixels (for s > 2r)."""
    m = (masks > 0.5).float()[:, None]
    k = 2 * radius + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=radius)
    eroded = -F.max_pool2d(-m, k, stride=1, padding=radius)  # zero padding erodes from the border too
    return (dilated - eroded)[:, 0]


def human_map(masks: torch.Tensor, mode: str, width: float) -> torch.Tensor:
    """The map CYBORG learns from: the dataset mask (`mask`) or its outline band (`outline`, total
    thickness `width` × side, at least 1 px each side of the boundary)."""
    if mode == "mask":
        return masks
    if mode == "outline":
        return outline_band(masks, max(1, round(width * min(masks.shape[-2:]) / 2)))
    raise ValueError(f"train.cyborg.human_map must be mask or outline, got {mode!r}")


def last_relu_input(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features before the trunk's last ReLU, logits) in one forward pass.

    The reference CYBORG code builds its CAM from pre-activation features (DenseNet-121 `features`
    = norm5 before the final ReLU; ResNet-50 a hook on layer4[-1].conv3). Here: the input of the
    last `nn.ReLU` module of `model.trunk`, at its last call (for torchvision residual blocks, whose
    ReLU module runs twice: the sum of residual and shortcut). Cloned in a pre-hook, so an in-place
    ReLU does not overwrite it; gradients flow through the clone.
    """
    relus = [m for m in model.trunk.modules() if isinstance(m, torch.nn.ReLU)]
    if not relus:
        raise ValueError("train.cyborg.cam_features: pre_relu needs a ReLU in the model's trunk; use post_relu")
    store = {}
    handle = relus[-1].register_forward_pre_hook(lambda mod, args: store.__setitem__("f", args[0].clone()))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return store["f"], logits


def cyborg(model, x, y, masks, cfg):
    """CYBORG (Boyd et al. 2023): α·CE + (1−α)·MSE(minmax CAM, minmax human map at CAM size).

    As the reference code (CVRL/CYBORG training_code/train_cam.py: `loss = alpha*class_loss +
    (1-alpha)*hmap_loss`); `alpha_weighs: map` gives the reverse orientation. The CAM is Σ_k W[c,k]·F_k
    without bias or ReLU, for the predicted class (reference) or the label (`cam_class: label`), on
    features before the trunk's last ReLU (reference, `cam_features: pre_relu`) or after it
    (`post_relu`, what the classifier reads). The human map (`human_map`: the mask or its outline band)
    is resized with antialiased bilinear interpolation, as the PIL resize of the reference.
    """
    if masks is None:
        raise ValueError("the salience variant needs human masks, and this dataset has none")
    sc = cfg["cyborg"]
    alpha = sc["alpha"]
    if sc["cam_features"] == "pre_relu":
        feats, logits = last_relu_input(model, x)
    else:
        feats = model.features(x)
        logits = model.classify(feats)
    classes = logits.argmax(1) if sc["cam_class"] == "predicted" else y
    cam = minmax(class_activation_map(model, feats, classes))
    target = human_map(masks, sc["human_map"], sc["outline_width"])
    human = F.interpolate(target[:, None], size=cam.shape[-2:], mode="bilinear", antialias=True, align_corners=False)[:, 0]
    ce, mse = F.cross_entropy(logits, y), F.mse_loss(cam, minmax(human))
    w_ce = alpha if sc["alpha_weighs"] == "ce" else 1 - alpha
    return w_ce * ce + (1 - w_ce) * mse, logits


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

