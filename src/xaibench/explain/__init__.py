"""Explainers: one batch contract for every method, registered by name.

`explainer(model, images [B,3,H,W] in [0,1], targets [B], **options) -> maps [B,h,w]` float at the
method's NATIVE resolution (CAM/Grad-CAM: the feature grid; `lap`: the first LAP layer's input),
not normalised (metrics normalise as their definitions say). `explain_split` stores both the
native maps and maps upsampled to the input (bilinear). Options are keyword arguments with
defaults (from `explain.options.{method}` in params.yaml). The caller never needs to know which
method it holds (the Captum pattern); adding a method is one
function with `@register(name)` in a module plus its entry in `xaibench.catalog.EXPLAINERS` (timm);
`explain_split` refuses an option name the function does not take.

Reaching any layer: models are plain `nn.Module`s, so an explainer registers forward hooks on the
modules it needs (`capture` below) instead of asking the model for special outputs.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import catalog
from ..io import save_npz
from ..progress import Progress
from ..registry import Registry

EXPLAINERS = Registry("explainer", catalog.EXPLAINERS)
register, get = EXPLAINERS.register, EXPLAINERS.get


def check_options(method: str, options: dict) -> dict:
    """Refuse option names the explainer does not take, naming the settings key and the choices."""
    params = inspect.signature(get(method)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(options)  # takes **options and checks their names itself (agf)
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY or (p.default is not p.empty)]
    for key in options:
        if key not in allowed:
            raise ValueError(f"explain.options.{method}.{key}: not an option of {method}; "
                             f"choose from: {', '.join(allowed) or '(none)'}")
    return dict(options)


@contextmanager
def capture(modules: dict):
    """Record detached copies of named modules' outputs during a forward pass:
    `with capture({"l1": m}) as out: model(x)`; copies, so a later in-place op (ReLU(inplace)) cannot alter them."""
    out, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o.detach().clone())))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """[B,h,w] -> [B,H,W] bilinear, half-pixel centres (as cv2.resize and Captum's interpolate)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


@register("cam")
def cam(model, images, targets):
    """CAM (Zhou et al. 2016): sum_k W[c,k]·A_k of the last conv block, ReLU'd, on the feature grid."""
    with torch.no_grad():
        feats = model.features(images)
        maps = torch.einsum("bchw,bc->bhw", feats, model.fc.weight[targets])
    return maps.relu()


@register("gradcam")
def gradcam(model, images, targets):
    """Grad-CAM (Selvaraju et al. 2017) at the last conv block, batched in one backward pass.

    Channel weights are the spatial mean of d logit_c / d A_k; map = ReLU(sum_k w_k A_k) on the
    feature grid. Upsampled, it matches pytorch-grad-cam's GradCAM and Captum's
    LayerGradCam(relu_attributions=True).
    The trunk runs without autograd (its graph is never needed): the only backward pass is through
    the head, so the whole method costs about one forward pass.
    """
    with torch.no_grad():
        feats = model.features(images)
    with torch.enable_grad():
        feats.requires_grad_(True)
        score = model.classify(feats).gather(1, targets[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    maps = (grads.mean(dim=(2, 3), keepdim=True) * feats.detach()).sum(1)
    return maps.relu()


def maps_for(model, images, targets, method: str, options: dict | None = None) -> torch.Tensor:
    """Maps [B,H,W] of `method` (with its configured options) for any classes, upsampled to the
    input as the saved `maps`: what a family needs to explain a class the explain step did not."""
    return upsample(get(method)(model, images, targets, **check_options(method, options or {})).detach().float(),
                    images.shape[-2:])


def explain_split(model, split, method: str, target: str, batch_size: int, device,
                  options: dict | None = None) -> dict[str, np.ndarray]:
    """Maps for a whole split in batches, with targets, predictions and logits.

    `native` (float16): the explainer's own grid; `maps` (float16): the same upsampled to the input
    size (bilinear, `upsample`), computed from the float32 native maps. `options` are passed to
    the explainer as keyword arguments.
    """
    fn = get(method)
    options = check_options(method, options or {})
    native, maps, targets, logits = [], [], [], []
    model.eval()
    for i in Progress(range(0, len(split), batch_size), f"explain {method} {split.name}", unit="batches"):
        x = split.tensors(slice(i, i + batch_size)).to(device)
        with torch.no_grad():
            z = model(x)
        t = z.argmax(1) if target == "predicted" else torch.from_numpy(split.labels[i:i + batch_size]).to(device)
        m = fn(model, x, t, **options).detach().float()
        if m.dim() != 3 or len(m) != len(x):
            raise ValueError(f"{method} returned maps of shape {tuple(m.shape)}; expected [{len(x)},h,w]")
        if not torch.isfinite(m).all():
            raise FloatingPointError(f"{method} produced NaN/inf maps for images {i}..{i + len(x) - 1} of {split.name}")
        native.append(m.cpu())
        maps.append(upsample(m, x.shape[-2:]).cpu())
        targets.append(t.cpu())
        logits.append(z.float().cpu())
    logits_t = torch.cat(logits)
    return {"maps": torch.cat(maps).numpy().astype(np.float16), "native": torch.cat(native).numpy().astype(np.float16),
            "targets": torch.cat(targets).numpy().astype(np.int64),
            "predictions": logits_t.argmax(1).numpy().astype(np.int64), "logits": logits_t.numpy(),
            "labels": split.labels}


def save(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    save_npz(path, **arrays)
