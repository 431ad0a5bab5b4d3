"""`randomisation`: the model-parameter randomisation test (Adebayo et al. 2018; docs/sanity_checks.md).

A map that explains the model must change when the model's weights are destroyed. Layers are
re-initialised from the top down: `cascading` re-initialises one more layer at each step (level k =
the top k layers random), `independent` one layer at a time (level k = only the k-th layer from the
top random). Per image, explainer and step: Spearman rank correlation and SSIM (min-max scaled maps,
as the noise family) between the map of the randomised model and that of the original, at input
resolution, for the class the original map explains. Summary rows: the same after the full cascade
(`randomised_spearman`, `randomised_ssim`: lower is better, a model-independent map stays at 1), and
Hedström et al. 2024's efficient MPRT, the relative rise of the map's complexity after the full
cascade (`complexity_rise`, histogram entropy; higher is better). Method `model` rows: the share of
predictions the randomisation changed (it did destroy the model).

Layers and re-initialisation follow Quantus' `MPRT` (its `get_random_layer_generator`): every module
with a `reset_parameters` method, in reverse registration order, re-initialised by that method under
`torch.manual_seed(seed)` (Quantus seeds seed + 1). Parameters of modules without it (ProtoPNet's
prototype vectors, LAP's scalar temperatures) are kept: their initialisation is the trainer's.
Smooth MPRT (Hedström et al. 2024: each map the mean over noisy copies of the image) is
`metrics.randomisation.smooth_samples` > 0, off by default (it multiplies the cost).
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Iterator

import pandas as pd
import torch

from .. import catalog
from .. import explain as ex
from . import family_maps, register
from .salience import _collect, _explainer, _frame, _ReuseFeatures, _score_class, histogram_entropy
from .similarity import minmax, rank_correlation, ranks, ssim

ORDERS = ("cascading", "independent")


def layers(model: torch.nn.Module) -> list[str]:
    """Names of the re-initialisable modules, top (output side) first: every module with
    `reset_parameters` in reverse registration order (Quantus' top-down order)."""
    return [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")][::-1]


def randomised(model: torch.nn.Module, order: str, seed: int) -> Iterator[tuple[int, str, torch.nn.Module]]:
    """(k, layer, model) for k = 1..L: a copy of `model` with the top k layers re-initialised
    (`cascading`) or only the k-th (`independent`). The copy is reused between steps; the global
    random state is left untouched."""
    if order not in ORDERS:
        raise ValueError(f"metrics.randomisation.orders: unknown order {order!r}; choose from {', '.join(ORDERS)}")
    rand = copy.deepcopy(model).eval()
    original = copy.deepcopy(model.state_dict())
    modules = dict(rand.named_modules())
    for k, name in enumerate(layers(rand), start=1):
        if order == "independent":
            rand.load_state_dict(original)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules[name].reset_parameters()
        yield k, name, rand


def smoothed(fn, samples: int, noise: float, seed: int):
    """Smooth MPRT's explainer: the mean map over `samples` copies of the images with Gaussian noise of
    sd `noise` × each image's value range (Quantus' `sMPRT`); `fn` itself when samples is 0. The same
    noise for every model (a generator seeded by `seed` per call), so only the weights differ."""
    if not samples:
        return fn

    def mean_map(model, x, targets):
        gen = torch.Generator().manual_seed(seed)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True))
        total = 0
        for _ in range(samples):
            total = total + fn(model, x + torch.randn(x.shape, generator=gen).to(x.device) * noise * span, targets)
        return total / samples
    return mean_map


class Reference:
    """The original maps [B,H,W] of one explainer, ranked and min-max scaled once for every comparison."""

    def __init__(self, maps: torch.Tensor):
        self.maps, self.ranks, self.scaled = maps, ranks(maps.flatten(1)), minmax(maps)

    def similarities(self, other: torch.Tensor) -> dict[str, torch.Tensor]:
        """Spearman (as similarity.spearman) and SSIM (min-max scaled, data range 1) of `other` against
        the original maps, image by image."""
        return {"spearman": rank_correlation(ranks(other.flatten(1)), self.ranks),
                "ssim": ssim(minmax(other), self.scaled)}


def complexity_rise(original: torch.Tensor, randomised_maps: torch.Tensor) -> torch.Tensor:
    """Efficient MPRT: (H(randomised) − H(original)) / H(original), H = histogram entropy; NaN for H = 0."""
    h0, h1 = histogram_entropy(original), histogram_entropy(randomised_maps)
    return torch.where(h0 > 0, (h1 - h0) / h0.clamp_min(1e-12), torch.nan)


@register("randomisation")
def randomisation(ctx) -> pd.DataFrame:
    """Every order × layer × explainer on the first `metrics.randomisation.max_images` test images."""
    s = ctx.cfg["metrics"]["randomisation"]
    if "test" not in ctx.cfg["explain"]["splits"]:
        raise ValueError("randomisation: explains the test split; add 'test' to explain.splits")
    data = ctx.split("test")
    n = len(data) if s["max_images"] is None else min(s["max_images"], len(data))
    model = ctx.model(ctx.seed).eval()
    print(f"randomisation: layers top down: {', '.join(layers(model))}", flush=True)
    fns = {m: smoothed(_explainer(ctx, m), s["smooth_samples"], s["smooth_noise"], s["seed"]) for m in ctx.methods}
    plain = {m: catalog.EXPLAINERS[m].get("needs") == "plain_layers" for m in fns}

    def maps(net, x, targets):
        """Every explainer's maps; `net` (a _ReuseFeatures) has just classified x, so the explainers reuse
        its features, except AGF, whose rule table walks the plain model."""
        return {m: family_maps(ex.upsample(fn(net.model if plain[m] else net, x, targets).detach().float(),
                                           x.shape[-2:]), ctx.family) for m, fn in fns.items()}

    top = len(layers(model))
    parts = defaultdict(list)
    for i in range(0, n, ctx.cfg["explain"]["batch_size"]):
        sl = slice(i, min(i + ctx.cfg["explain"]["batch_size"], n))
        x = data.tensors(sl).to(ctx.device)
        with torch.no_grad():
            z0 = (net := _ReuseFeatures(model))(x)
        targets = _score_class(ctx, z0, torch.from_numpy(data.labels[sl]).to(ctx.device))
        clean = {m: Reference(v) for m, v in maps(net, x, targets).items()}
        for order in s["orders"]:
            for k, _, rand in randomised(model, order, s["seed"]):
                with torch.no_grad():
                    changed = ((net := _ReuseFeatures(rand))(x).argmax(1) != z0.argmax(1)).float()
                _collect(parts, ("model", "test", "prediction_changed", order, float(k)), changed)
                full = order == "cascading" and k == top  # every layer re-initialised: the summary rows
                for m, after in maps(net, x, targets).items():
                    for metric, values in clean[m].similarities(after).items():
                        _collect(parts, (m, "test", metric, order, float(k)), values)
                        if full:
                            _collect(parts, (m, "test", f"randomised_{metric}", "", float("nan")), values)
                    if full:
                        _collect(parts, (m, "test", "complexity_rise", "", float("nan")),
                                 complexity_rise(clean[m].maps, after))
    return _frame(parts)
