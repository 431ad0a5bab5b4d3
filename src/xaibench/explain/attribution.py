"""Pixel-attribution baselines of paper D (AGF, Gur et al. 2021): gradient, gradient × input,
Integrated Gradients and SmoothGrad, batched in plain torch and tested equal to Captum's
`Saliency`, `InputXGradient`, `IntegratedGradients` and `NoiseTunnel(Saliency)`.

Each method first computes a per-channel attribution [B,3,H,W] (`*_attributions`, what Captum
returns) and the registered explainer reduces it over the colour channels to a map [B,H,W] at
input resolution with `reduce`:
- `"abs_sum"`: sum_c |a_c|. The AGF reference does this for IG and SmoothGrad before both the
  perturbation and the segmentation test (`cam.abs().sum(dim=1)` in generate_visualizations.py),
  so it is the default of `gradient`, `ig` and `smoothgrad`.
- `"sum"`: sum_c a_c, signed. The reference does this for its LRP-family maps; default of `gxi`,
  whose channel sum is the (signed) first-order contribution of each pixel.
- `"max_abs"`: max_c |a_c| (Simonyan et al. 2014's saliency map).
Signed maps are returned signed; the metrics decide what to do with negative values.

Gradients are taken w.r.t. the [0,1] image (the model normalises internally), so "black" is 0 in
[0,1] space as in the reference, and the "mean" baseline is the model's normalisation mean, i.e.
zero after normalisation, which is the reference IG's zero baseline in normalised space.

LRP-ε is not offered: Captum's `LRP` needs every module used once and a rule for every leaf
module. On resnet18 it raises TypeError (the CIFAR stem's `nn.Identity` has no rule) or, with the
ImageNet stem, returns relevances of ~1e14 for logits ~1 (torchvision's BasicBlock reuses one
in-place `relu` and adds the skip functionally, which its hooks cannot see). On small_cnn it runs,
but with its default ε = 1e-9 an image's map depends on the batch it is computed in (max
difference 0.0055 for maps of max 0.66, from near-zero denominators). See docs/agf_protocol.md.
"""
from __future__ import annotations

import numpy as np
import torch

from . import register

REDUCTIONS = {
    "abs_sum": lambda a: a.abs().sum(1),
    "sum": lambda a: a.sum(1),
    "max_abs": lambda a: a.abs().amax(1),
}
IG_METHODS = ("riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")


def reduce_channels(attributions: torch.Tensor, reduce: str) -> torch.Tensor:
    """[B,C,H,W] -> [B,H,W] by one of REDUCTIONS."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    return REDUCTIONS[reduce](attributions)


def _check(images: torch.Tensor, targets: torch.Tensor) -> None:
    if images.dim() != 4 or targets.shape != images.shape[:1]:
        raise ValueError(f"expected images [B,C,H,W] and targets [B], got {tuple(images.shape)} and "
                         f"{tuple(targets.shape)}")


def _grad(model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit_target / d x for a batch, in one forward and one backward pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        score = model(x).gather(1, targets[:, None]).sum()
        (g,) = torch.autograd.grad(score, x)
    return g


def gradient_attributions(model, images, targets):
    """Gradient of the target logit w.r.t. the input (Simonyan et al. 2014); = Captum Saliency(abs=False)."""
    _check(images, targets)
    return _grad(model, images, targets)


def gxi_attributions(model, images, targets):
    """Input ⊙ gradient (Shrikumar et al. 2016); = Captum InputXGradient."""
    return images * gradient_attributions(model, images, targets)


def ig_path(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points α_k on [0,1] and weights w_k with ∫₀¹ f ≈ Σ w_k f(α_k), the rules Captum offers."""
    if steps < 2 or method not in IG_METHODS:
        raise ValueError(f"ig needs steps >= 2 and method in {', '.join(IG_METHODS)}, got {steps}, {method!r}")
    n = steps
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy(0.5 * (1 + x)), torch.from_numpy(0.5 * w)
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if method == "riemann_trapezoid":
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[[0, -1]] /= 2
        return torch.linspace(0, 1, n, dtype=torch.float64), w
    start = {"riemann_left": 0.0, "riemann_middle": 0.5 / n, "riemann_right": 1.0 / n}[method]
    return start + torch.arange(n, dtype=torch.float64) / n, w


def baseline_image(model, images: torch.Tensor, baseline: str) -> torch.Tensor:
    """"black" = 0 in [0,1] space; "mean" = the model's normalisation mean (0 after normalising)."""
    if baseline == "black":
        return torch.zeros_like(images)
    if baseline == "mean":
        mean = getattr(model, "mean", None)
        if not isinstance(mean, torch.Tensor):
            raise ValueError("baseline 'mean' needs a model with a `mean` normalisation buffer")
        return mean.to(images).expand_as(images)
    raise ValueError(f"baseline must be black or mean, got {baseline!r}")


def ig_attributions(model, images, targets, steps: int = 100, baseline: str = "mean",
                    method: str = "riemann_trapezoid", internal_batch_size: int = 64):
    """Integrated Gradients (Sundararajan et al. 2017): (x − x̄) ⊙ Σ_k w_k ∇f(x̄ + α_k (x − x̄)).

    The AGF reference's IG (100 steps, zero baseline in normalised space) omits the (x − x̄) factor
    (research/agf.md §6.6); ours includes it, so it equals Captum's IntegratedGradients with the same
    `method` and `n_steps` (for `riemann_trapezoid`, Captum × n/(n−1): Captum weights the points
    of linspace(0, 1, n) by 1/n instead of 1/(n−1), so its weights sum to (n−1)/n and break
    completeness by that factor; ours is the textbook trapezoid). Default 100 steps with the
    trapezoid rule, the closest of Captum's rules to the reference's sum over α = 0, 1/100, …, 1
    (each weighted 1/100). Path points of several steps share one forward
    pass, at most `internal_batch_size` images per pass (64: larger passes at 64 px leave the CPU
    caches and ran up to 2.6x slower with two jobs on 2 cores, measured).
    """
    _check(images, targets)
    base = baseline_image(model, images, baseline)
    alphas, weights = ig_path(steps, method)
    b, per = len(images), max(1, internal_batch_size // max(1, len(images)))
    total = torch.zeros_like(images)
    for i in range(0, steps, per):
        a = alphas[i:i + per].to(images)
        pts = (base[None] + a.view(-1, 1, 1, 1, 1) * (images - base)[None]).flatten(0, 1)
        g = _grad(model, pts, targets.repeat(len(a))).view(len(a), *images.shape)
        total += (weights[i:i + per].to(images).view(-1, 1, 1, 1, 1) * g).sum(0)
    return (images - base) * total


def smoothgrad_attributions(model, images, targets, samples: int = 50, noise: float = 0.15, seed: int = 0,
                            internal_batch_size: int = 64):
    """SmoothGrad (Smilkov et al. 2017): mean gradient over `samples` copies of the image with
    Gaussian noise of sd `noise` in [0,1] space; = Captum NoiseTunnel(Saliency(abs=False), 'smoothgrad').

    The noise is drawn once per call from `seed`, shape [samples,C,H,W], and shared by every image,
    so a map depends on the seed only, not on the batch it is computed in. 0.15 is Smilkov et al.'s
    10–20% of the input range and close to the reference's effective noise (σ = 4/(max−min) of the
    normalised image used as a *variance*, ≈ 0.16 in [0,1] units on ImageNet; research/agf.md §3.1).
    """
    _check(images, targets)
    if samples < 1 or noise < 0:
        raise ValueError(f"smoothgrad needs samples >= 1 and noise >= 0, got {samples}, {noise}")
    gen = torch.Generator(device=images.device).manual_seed(int(seed))
    eps = torch.randn((samples, *images.shape[1:]), generator=gen, device=images.device, dtype=images.dtype) * noise
    per = max(1, internal_batch_size // samples)
    out = []
    for i in range(0, len(images), per):
        x, t = images[i:i + per], targets[i:i + per]
        pts = (x[:, None] + eps[None]).flatten(0, 1)  # image-major, as Captum's repeat_interleave
        g = _grad(model, pts, t.repeat_interleave(samples))
        out.append(g.view(len(x), samples, *x.shape[1:]).mean(1))
    return torch.cat(out)


@register("gradient")
def gradient(model, images, targets, reduce: str = "abs_sum"):
    """Gradient map: channel reduction of `gradient_attributions`."""
    return reduce_channels(gradient_attributions(model, images, targets), reduce)


@register("gxi")
def gxi(model, images, targets, reduce: str = "sum"):
    """Gradient × input map: channel reduction of `gxi_attributions` (signed by default)."""
    return reduce_channels(gxi_attributions(model, images, targets), reduce)


@register("ig")
def ig(model, images, targets, steps: int = 100, baseline: str = "mean", method: str = "riemann_trapezoid",
       reduce: str = "abs_sum", internal_batch_size: int = 64):
    """Integrated Gradients map: channel reduction of `ig_attributions` (reference: abs, sum)."""
    return reduce_channels(ig_attributions(model, images, targets, steps, baseline, method, internal_batch_size),
                           reduce)


@register("smoothgrad")
def smoothgrad(model, images, targets, samples: int = 50, noise: float = 0.15, seed: int = 0,
               reduce: str = "abs_sum", internal_batch_size: int = 64):
    """SmoothGrad map: channel reduction of `smoothgrad_attributions` (reference: abs, sum)."""
    return reduce_channels(smoothgrad_attributions(model, images, targets, samples, noise, seed,
                                                   internal_batch_size), reduce)
