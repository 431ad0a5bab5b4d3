"""Prototype generation (Tagade & Rumbelow 2023) and two baseline feature visualisations.

Each method: `fn(model, num_classes, image_size, generator, **options) -> images [K,3,H,W] in [0,1]`,
one image per class, optimised together in one batch (the loss is a sum of per-image terms and the
model is frozen in eval mode, so the images do not interact). Every option is a keyword argument;
its default and where it comes from are in docs/prototypes.md.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .. import catalog
from ..registry import Registry
from .param import FourierImage, PixelImage
from .transforms import ANGLES, JITTERS, SCALES, random_affine

METHODS = Registry("featviz method", catalog.FEATVIZ)
register, get = METHODS.register, METHODS.get


@contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode and no weight gradients while images are optimised; the model's state is restored after."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def probability_variance(logits: torch.Tensor) -> torch.Tensor:
    """L_pv per image [B]: variance of the softmax over classes; 0 iff every class is equally likely."""
    return logits.softmax(1).var(1, unbiased=False)


def high_frequency(images: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """L_hf per image [B]: mean difference between horizontally and vertically adjacent pixels.

    The paper describes L_hf only as penalising "large differences between adjacent pixel values"
    (research note §2.2; no equation published). We take the anisotropic total variation, mean
    absolute difference over channels and positions (`norm="l1"`); `norm="l2"` squares the differences.
    """
    dy = images[..., 1:, :] - images[..., :-1, :]
    dx = images[..., :, 1:] - images[..., :, :-1]
    if norm == "l1":
        dy, dx = dy.abs(), dx.abs()
    elif norm == "l2":
        dy, dx = dy.square(), dx.square()
    else:
        raise ValueError(f"hf_norm must be 'l1' or 'l2', got {norm!r}")
    return dy.flatten(1).mean(1) + dx.flatten(1).mean(1)


def _device(model) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _ascend(model, param, targets, steps: int, lr: float, generator, transform: bool = False,
            hf_weight: float = 0.0, hf_norm: str = "l1", transform_kw: dict | None = None) -> torch.Tensor:
    """Adam on `param` to maximise logit[i, targets[i]] (minus hf_weight·L_hf) for `steps` steps."""
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    rows = torch.arange(len(targets))
    for _ in range(steps):
        x = param()
        seen = random_affine(x, generator, **(transform_kw or {})) if transform else x
        loss = -model(seen)[rows, targets].sum()
        if hf_weight:
            loss = loss + hf_weight * high_frequency(x, hf_norm).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(param, "project"):
            param.project()
    return param().detach()


def neutral_baseline(model, num_classes: int, image_size: int, generator, steps: int = 200, lr: float = 0.01,
                     init: float | str = 0.0) -> torch.Tensor:
    """Stage 1: one image [1,3,H,W] the model finds equally likely to be any class (minimise L_pv).

    Starts from a constant image of value `init` (leap-ie's `baseline_init=0`) or from uniform
    noise (`init="random"`, leap-ie's `'r'`); pixel space with projection to [0,1], Adam, no
    transforms (Fig. 3 applies them in stage 2 only). Shared by all classes, so no prototype
    inherits a class bias from its start.
    """
    shape = (1, 3, image_size, image_size)
    if init == "random":
        start = torch.rand(shape, generator=generator)
    elif isinstance(init, (int, float)) and 0 <= init <= 1:
        start = torch.full(shape, float(init))
    else:
        raise ValueError(f"baseline_init must be a number in [0, 1] or 'random', got {init!r}")
    param = PixelImage(start.to(_device(model)))
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    best, best_loss = param().detach().clone(), float("inf")
    for _ in range(steps + 1):
        loss = probability_variance(model(param())).sum()
        if loss.item() < best_loss:  # keep the most neutral iterate: Adam can overshoot into a saturated
            best, best_loss = param().detach().clone(), loss.item()  # softmax, where L_pv's gradient vanishes
        if _ == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        param.project()
    return best


@register("prototype")
def prototype(model, num_classes: int, image_size: int, generator, steps: int = 1500, lr: float = 0.05,
              hf_weight: float = 1.0, hf_norm: str = "l1", transform: bool = True, use_baseline: bool = True,
              baseline_steps: int = 200, baseline_lr: float = 0.01, baseline_init: float | str = 0.0,
              jitters=JITTERS, scales=SCALES, angles=ANGLES) -> torch.Tensor:
    """Prototype generation (Tagade & Rumbelow 2023, arXiv 2309.17144, Fig. 3).

    Stage 1 (`use_baseline`): the class-neutral start of `neutral_baseline`. Stage 2: from that
    start, in pixel space, Adam minimises −logit_c(T(x)) + hf_weight·L_hf(x) for `steps` steps with
    a fresh random transform T per step, projecting x to [0,1]. The model's own normalisation is
    the "preprocessing based on model expectations". leap-ie's learning-rate finder and blur are
    not reproduced (docs/prototypes.md).
    """
    device = _device(model)
    start = neutral_baseline(model, num_classes, image_size, generator, baseline_steps if use_baseline else 0,
                             baseline_lr, baseline_init)
    param = PixelImage(start.expand(num_classes, -1, -1, -1))
    targets = torch.arange(num_classes, device=device)
    return _ascend(model, param, targets, steps, lr, generator, transform, hf_weight, hf_norm,
                   dict(jitters=jitters, scales=scales, angles=angles))


@register("fourier_fv")
def fourier_fv(model, num_classes: int, image_size: int, generator, steps: int = 512, lr: float = 0.05,
               sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True, transform: bool = True,
               jitters=JITTERS, scales=SCALES, angles=ANGLES) -> torch.Tensor:
    """Classic feature visualisation (Olah, Mordvintsev & Schubert 2017, Distill), as torch-lucent's
    `render_vis(model, "fc:c")`: decorrelated Fourier parameterisation from random noise (sd 0.01),
    Adam lr 0.05, 512 steps, the standard transforms, maximising the class logit, no penalty."""
    param = FourierImage(num_classes, image_size, sd, decay_power, decorrelate, generator).to(_device(model))
    targets = torch.arange(num_classes, device=_device(model))
    return _ascend(model, param, targets, steps, lr, generator, transform,
                   transform_kw=dict(jitters=jitters, scales=scales, angles=angles))


@register("pixel_ascent")
def pixel_ascent(model, num_classes: int, image_size: int, generator, steps: int = 512, lr: float = 0.05,
                 sd: float = 0.01) -> torch.Tensor:
    """Weak baseline: plain gradient ascent on the class logit in pixel space (Erhan et al. 2009;
    Simonyan et al. 2014 without their L2 term): grey plus noise of `sd` (torch-lucent's pixel
    init), Adam, projection to [0,1], no transforms, no penalty, no preconditioning."""
    start = (0.5 + sd * torch.randn(num_classes, 3, image_size, image_size, generator=generator)).to(_device(model))
    targets = torch.arange(num_classes, device=_device(model))
    return _ascend(model, PixelImage(start), targets, steps, lr, generator)
