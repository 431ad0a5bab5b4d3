"""`deletion`: faithfulness by deletion (Petsiuk et al. 2018's protocol; the test paper C's
"faithful-to-the-model" claim implies, research/lap.md §5).

Pixels are removed most-relevant first, at the configured fractions (the clean image is the
first point). A removed pixel takes the value of a baseline image: the image's own mean colour
(default: no new edges or colours, but a uniform patch) or its Gaussian blur (keeps low
frequencies, so it removes less information). Per image and fraction we record the probability
of the explained class (the explanation's target) and whether the prediction still equals the
label; `deletion_auc` is the trapezoid area under the probability curve divided by the fraction
range (so it lies in [0,1]): lower = the map found what the model actually uses.
`deletion_auc_accuracy` is the same area under the 0/1 accuracy curve.

Cost: (1 + #fractions) forward passes per image and explainer, so only the first
`metrics.deletion.max_images` images of each split are used (default 200, as the salience
families). Explainers that do not apply to a variant (`lap` on a non-LAP model) are skipped
(`catalog.methods_for`).

Ties in a map (common: ReLU'd CAMs are flat zero outside the object) are broken by a seeded random
order, so a flat region is removed in random order rather than top-left first.
"""
from __future__ import annotations

import pandas as pd
import torch

from . import over_maps, register
from .salience import gaussian_blur  # scipy.ndimage.gaussian_filter, tested against it


def removal_rank(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,H,W] -> [B,H,W] rank of each pixel in removal order (0 = most relevant), random tie-break."""
    b = maps.shape[0]
    flat = maps.flatten(1).float()
    p = flat.shape[1]
    perm = torch.rand(b, p, generator=generator).argsort(1).to(flat.device)
    order = perm.gather(1, flat.gather(1, perm).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(p, device=flat.device).expand(b, p).contiguous())
    return rank.view_as(maps)


def baseline_images(images: torch.Tensor, kind: str, blur_sigma: float = 0.1) -> torch.Tensor:
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if kind == "blur":
        return gaussian_blur(images, blur_sigma * max(images.shape[-2:]))
    raise ValueError(f"deletion baseline must be mean or blur, got {kind!r}")


@torch.no_grad()
def deletion_curves(model, images, maps, targets, labels, fractions, baseline: str = "mean", blur_sigma: float = 0.1,
                    generator: torch.Generator | None = None, chunk: int = 256):
    """Probability of `targets` and correctness w.r.t. `labels` after deleting each fraction.

    Returns (levels [F] with 0 first, probability [B,F], correct [B,F]). All fractions of a batch
    are built at once and run through the model in chunks of `chunk` images.
    """
    levels = torch.tensor([0.0] + [float(f) for f in fractions], device=images.device)
    b, _, h, w = images.shape
    rank = removal_rank(maps.to(images.device), generator)
    counts = torch.round(levels * h * w)
    removed = rank[:, None, None] < counts.view(1, -1, 1, 1, 1)                     # [B,F,1,H,W]
    base = baseline_images(images, baseline, blur_sigma)
    batch = torch.where(removed, base[:, None], images[:, None]).flatten(0, 1)      # [B*F,3,H,W]
    logits = torch.cat([model(batch[i:i + chunk]) for i in range(0, len(batch), chunk)]).float()
    probs = logits.softmax(1).view(b, len(levels), -1)
    prob = probs.gather(2, targets.view(b, 1, 1).expand(b, len(levels), 1))[..., 0]
    correct = (probs.argmax(2) == labels.view(b, 1)).float()
    return levels, prob, correct


def curve_auc(curve: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of [B,F] curves over `levels`, divided by the level range (a mean height)."""
    return torch.trapezoid(curve, levels.to(curve), dim=1) / (levels[-1] - levels[0]).clamp_min(1e-12)


@register("deletion")
def deletion(ctx) -> pd.DataFrame:
    dcfg = ctx.cfg["metrics"]["deletion"]
    fractions = sorted(dcfg["fractions"])
    model = ctx.model(ctx.seed).eval()
    generators = {}  # one tie-breaking stream per split × method, seeded by the model's seed

    def score(b):
        gen = generators.setdefault((b.split, b.method), torch.Generator().manual_seed(ctx.seed))
        levels, prob, hit = deletion_curves(model, b.images, b.maps, b.targets.to(ctx.device), b.labels.to(ctx.device),
                                            fractions, dcfg["baseline"], dcfg["blur_sigma"], gen,
                                            chunk=ctx.cfg["explain"]["batch_size"])
        levels = levels.cpu()
        for k, level in enumerate(levels.tolist()):
            yield "target_probability", prob[:, k], "", level
            yield "accuracy", hit[:, k], "", level
        yield "deletion_auc", curve_auc(prob, levels.to(prob.device))
        yield "deletion_auc_accuracy", curve_auc(hit, levels.to(hit.device))

    return over_maps(ctx, score, family="deletion", max_images=dcfg["max_images"],
                     batch_size=ctx.cfg["explain"]["batch_size"])
