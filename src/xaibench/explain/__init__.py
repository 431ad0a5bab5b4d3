"""Explainers: one batch contract for every method, registered by name.

`explainer(model, images [B,3,H,W] in [0,1], targets [B]) -> maps [B,H,W]` float at input
resolution, non-negative, not normalised (metrics normalise as their definitions say). The
caller never needs to know which method it holds (the Captum pattern); adding a method is one
function and one decorator (the timm pattern).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..io import save_npz

EXPLAINERS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        EXPLAINERS[name] = fn
        return fn
    return deco


def get(name: str) -> Callable:
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer '{name}'; registered: {', '.join(sorted(EXPLAINERS))}")
    return EXPLAINERS[name]


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """[B,h,w] -> [B,H,W] bilinear, half-pixel centres (as cv2.resize and Captum's interpolate)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


@register("cam")
def cam(model, images, targets):
    """CAM (Zhou et al. 2016): sum_k W[c,k]·A_k of the last conv block, ReLU'd, upsampled."""
    with torch.no_grad():
        feats = model.features(images)
        maps = torch.einsum("bchw,bc->bhw", feats, model.fc.weight[targets])
    return upsample(maps.relu(), images.shape[-2:])


@register("gradcam")
def gradcam(model, images, targets):
    """Grad-CAM (Selvaraju et al. 2017) at the last conv block, batched in one backward pass.

    Channel weights are the spatial mean of d logit_c / d A_k; map = ReLU(sum_k w_k A_k), upsampled.
    Matches pytorch-grad-cam's GradCAM and Captum's LayerGradCam(relu_attributions=True).
    """
    with torch.enable_grad():
        feats = model.features(images).detach().requires_grad_(True)
        score = model.classify(feats).gather(1, targets[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    maps = (grads.mean(dim=(2, 3), keepdim=True) * feats.detach()).sum(1)
    return upsample(maps.relu(), images.shape[-2:])


def explain_split(model, split, method: str, target: str, batch_size: int, device) -> dict[str, np.ndarray]:
    """Maps for a whole split in batches, with targets, predictions and logits."""
    fn = get(method)
    maps, targets, logits = [], [], []
    model.eval()
    for i in tqdm(range(0, len(split), batch_size), desc=f"explain {method} {split.name}", mininterval=1):
        x = split.tensors(slice(i, i + batch_size)).to(device)
        with torch.no_grad():
            z = model(x)
        t = z.argmax(1) if target == "predicted" else torch.from_numpy(split.labels[i:i + batch_size]).to(device)
        m = fn(model, x, t)
        if not torch.isfinite(m).all():
            raise FloatingPointError(f"{method} produced NaN/inf maps for images {i}..{i + len(x) - 1} of {split.name}")
        maps.append(m.detach().float().cpu())
        targets.append(t.cpu())
        logits.append(z.float().cpu())
    logits_t = torch.cat(logits)
    return {"maps": torch.cat(maps).numpy().astype(np.float16), "targets": torch.cat(targets).numpy().astype(np.int64),
            "predictions": logits_t.argmax(1).numpy().astype(np.int64), "logits": logits_t.numpy(),
            "labels": split.labels}


def save(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    save_npz(path, **arrays)



# Explainers in their own modules register themselves on import.
from . import lap  # noqa: E402,F401
from . import prototypes  # noqa: E402,F401
