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
modules it needs (`capture` below) instead of asking the model for special outputs. An explainer that
reads one layer takes it by module name (`layer_of`: option `layer`, or an external model's own
`layer`), with an optional `reshape` of its output to [B,C,h,w] (`tokens`: ViT tokens).
"""
from __future__ import annotations

import importlib
import inspect
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import catalog
from ..io import first_line, save_npz
from ..progress import Progress
from ..registry import Registry, closest

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


def tokens(t: torch.Tensor) -> torch.Tensor:
    """`reshape: tokens`: ViT tokens [B,N,C] -> [B,C,h,h], the last h·h tokens as the patch grid (row
    major, h = isqrt(N)) and the leading extra ones (CLS, registers) dropped: pytorch-grad-cam's ViT
    reshape, with the grid read from the token count (this suite's images are square)."""
    if t.dim() != 3:
        raise ValueError(f"reshape tokens: the layer gives shape {list(t.shape)}, not [B,N,C] tokens")
    n = t.shape[1]
    h = math.isqrt(n)
    if n - h * h >= h:  # more extra tokens than a grid row: the count is no square grid plus CLS/registers
        raise ValueError(f"reshape tokens: {n} tokens are not a square grid plus fewer than {h} leading "
                         "tokens (CLS, registers); give a function instead (reshape: package.module:function)")
    return t[:, n - h * h:].transpose(1, 2).reshape(len(t), -1, h, h)


def reshaper(spec: str | None):
    """The function a `reshape` setting names: None, `tokens`, or `package.module:function` (imported)."""
    if spec is None:
        return None
    if spec == "tokens":
        return tokens
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        raise ValueError(f"reshape {spec!r}: cannot import it ({type(exc).__name__}: {first_line(exc)})") from None
    if not callable(fn):
        raise ValueError(f"reshape {spec!r}: {name} is a {type(fn).__name__}, not a function")
    return fn


def layer_of(model, layer: str | None = None, reshape: str | None = None):
    """(name, module, reshape function) of the layer an explainer reads, or None for its default (the
    last block, `model.features`). The model's own choice comes first (`model.explain_layer`, set from
    an external model's `layer`/`reshape`), then the options'. Names are `model.named_modules()`'s, or
    those of a wrapped file's model (`model.explain_modules()`, training.external.Wrapped)."""
    layer, reshape = getattr(model, "explain_layer", None) or (layer, reshape)
    if layer is None:
        if reshape is not None:
            raise ValueError(f"reshape {reshape!r} needs a layer (the module whose output it reshapes)")
        return None
    modules = model.explain_modules() if hasattr(model, "explain_modules") else dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} is not a module of the model ({type(model).__name__}); "
                         f"closest names: {closest(layer, [n for n in modules if n])}")
    if isinstance(modules[layer], torch.jit.ScriptModule):
        raise ValueError(f"layer {layer!r} is in a TorchScript model, whose modules take no forward hooks; "
                         "Grad-CAM reads its features(x) (no layer), or save it with torch.export")
    return layer, modules[layer], reshaper(reshape)


def check_layer(model, method: str, options: dict, where: str) -> None:
    """Refuse a `layer`/`reshape` option `model` cannot serve before any map is computed (`where`
    names the model in the message)."""
    if options.get("layer") is not None or options.get("reshape") is not None:
        try:
            layer_of(model, options.get("layer"), options.get("reshape"))
        except ValueError as exc:
            raise ValueError(f"{where}: explain.options.{method}.{exc}") from None


def layer_gradient(model, images, targets, name: str, module, reshape=None):
    """Activation of `module` [B,C,h,w] and d logit_target / d activation, from one forward pass of
    `model(images)` with a forward hook and one backward pass (as Captum's LayerGradCam and
    pytorch-grad-cam), so any module whose forward gives logits works. `reshape` makes the output
    [B,C,h,w] (applied to activation and gradient alike, pytorch-grad-cam's `reshape_transform`)."""
    seen = []

    def keep(_module, _inputs, out):
        # the one tensor of its output: a sequence may hold others (an unflattened torch.export module
        # passes symbolic sizes along, [int, int, tensor]; attention returns (tensor, None))
        parts = list(out) if isinstance(out, (list, tuple)) else [out]
        where = [i for i, part in enumerate(parts) if isinstance(part, torch.Tensor)]
        if len(where) != 1:
            raise ValueError(f"layer {name!r} gives a {type(out).__name__} holding {len(where)} tensors; "
                             "name a module whose output is one tensor")
        seen.append(parts[where[0]])
        parts[where[0]] = parts[where[0]].clone()  # an in-place op after it (ReLU(inplace)) then changes the copy
        return type(out)(parts) if isinstance(out, (list, tuple)) else parts[0]

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = model(images.detach().requires_grad_(True)).gather(1, targets[:, None]).sum()
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"layer {name!r} did not run in the model's forward pass")
    (grads,) = torch.autograd.grad(score, seen[-1])  # its last call, if the module runs more than once
    acts, grads = (seen[-1].detach(), grads) if reshape is None else (reshape(seen[-1].detach()), reshape(grads))
    if acts.dim() != 4:
        hint = "; for [B,N,C] tokens set reshape: tokens" if acts.dim() == 3 else ""
        raise ValueError(f"layer {name!r} gives shape {list(acts.shape)}; Grad-CAM needs [B,C,h,w]{hint}")
    return acts, grads


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
def gradcam(model, images, targets, layer: str | None = None, reshape: str | None = None):
    """Grad-CAM (Selvaraju et al. 2017), batched in one backward pass: at the last conv block, or at
    the module named `layer` (`layer_of`; its output reshaped by `reshape`, e.g. `tokens` for a ViT).

    Channel weights are the spatial mean of d logit_c / d A_k; map = ReLU(sum_k w_k A_k) on the
    layer's grid. Upsampled, it matches pytorch-grad-cam's GradCAM and Captum's
    LayerGradCam(relu_attributions=True).
    At the last block the trunk runs without autograd (its graph is never needed): the only backward
    pass is through the head, so the method costs about one forward pass. At a named layer the
    whole model runs with autograd (`layer_gradient`).
    """
    chosen = layer_of(model, layer, reshape)
    if chosen is not None:
        feats, grads = layer_gradient(model, images, targets, *chosen)
    else:
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
