"""`salience`: the salience measures of "Explain to Me" (Crum et al. 2023; research/salience_measures.md).

(a) entropy; (b) `noise`, out-of-set reaction; (c) `equivariance`, geometric transforms; (d) `stability`,
across training runs; (e) `degradation`, salience-guided blur. Every measure is vectorised over the
batch in torch; map similarity (SSIM, Spearman) lives in `similarity.py`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import explain as ex
from . import family_maps, over_maps, register, rows
from .similarity import minmax, spearman, ssim


def spatial_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the map read as a spatial distribution p = m / sum(m), divided by log(#cells).

    1 for a uniform map, 0 for a one-hot map. An all-zero map carries no preference and scores 1.
    Unnormalised, this is Quantus' `Complexity`.
    """
    flat = maps.flatten(1).double().clamp_min(0)
    total = flat.sum(1, keepdim=True)
    p = torch.where(total > 0, flat / total.clamp_min(1e-300), 1.0 / flat.shape[1])
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return (h / math.log(flat.shape[1])).float()


def quantise(maps: torch.Tensor) -> torch.Tensor:
    """[B,h,w] -> uint8 levels 0..255 as long: min-max scaled, ×255, truncated (torchcam's map through
    torchvision's `to_pil_image`, `pic.mul(255).byte()`, as the reference saved its CAMs). A constant
    map becomes all 0 (`minmax`)."""
    return (minmax(maps.double()) * 255).floor().clamp(0, 255).long()


def histogram_entropy(maps: torch.Tensor) -> torch.Tensor:
    """The reference code's entropy: of the grey-level histogram, not of where the relevance is.

    The map (at whatever resolution it is given: the reference used the native 7×7 Grad-CAM) is
    quantised to uint8 (`quantise`), and the base-2 Shannon entropy of its value histogram
    (skimage.measure.shannon_entropy) is divided by log2(min(h·w, 256)), the most distinct levels
    the map can hold. The reference notebook divides by the literal 5.614 (= log2 49 = 5.6147 rounded,
    Explain2Me Measures/Entropy notebook); the exact log2 used here differs from it by 1.3e-4 relative.
    A constant map has one level (0); a one-hot map has two, H = H2(1/n) / log2 n.
    """
    q = quantise(maps).flatten(1)
    counts = torch.zeros(len(q), 256, dtype=torch.float64, device=q.device).scatter_add_(
        1, q, torch.ones_like(q, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True)
    h = -(p * torch.log2(p.clamp_min(1e-300))).sum(1)
    return (h / math.log2(min(q.shape[1], 256))).float()


def resolution_maps(arrays: dict, resolution: str, family: str) -> np.ndarray:
    """The maps of an explanation file at `metrics.salience.resolution` (`native` or `input`, upsampled),
    preprocessed as `family` declares (the paper-E families: positive part, `metrics.family_maps`)."""
    key = "native" if resolution == "native" else "maps"
    if key not in arrays:
        raise ValueError(f"explanation file has no '{key}' maps (made before native maps were stored); "
                         "rerun the explain step")
    return family_maps(arrays[key], family)


@register("entropy")
def entropy(ctx) -> pd.DataFrame:
    """(a) Entropy of every saved map, both forms, at `metrics.salience.resolution` (native: the
    explainer's own grid, as the reference's 7×7 Grad-CAM)."""
    def score(b):
        yield "spatial_entropy", spatial_entropy(b.relevance)
        yield "histogram_entropy", histogram_entropy(b.relevance)

    return over_maps(ctx, score, family="entropy", resolution=_settings(ctx)["resolution"])


# ---------------------------------------------------------------------------------------------
# (b)-(e): out-of-set reaction, geometric equivariance, cross-run stability, salience-guided
# degradation. Each family reads the saved clean maps (the same the other families score) and
# computes maps of altered images with the same explainer. Everything runs per batch of
# cfg.explain.batch_size images, vectorised over the batch.
# ---------------------------------------------------------------------------------------------

REF_SIZE = 224        # side of the reference code's images and upscaled maps
SMOOTH_SIGMA = 5.0    # reference: gaussian_filter(CAM, 5) before quantising the salience levels
BLUR_SIGMA_MAX = 10.0  # reference: sigma_blur(s) = (10 - s)^4 / 10^3, s in 0..10


def _settings(ctx) -> dict:
    return ctx.cfg["metrics"]["salience"]


def _test_images(ctx, family: str):
    """The test split and how many of its first images this run uses (metrics.salience.max_images)."""
    if "test" not in ctx.cfg["explain"]["splits"]:
        raise ValueError(f"{family}: needs the saved maps of the test split; add 'test' to explain.splits")
    data = ctx.split("test")
    cap = _settings(ctx)["max_images"]
    return data, len(data) if cap is None else min(cap, len(data))


def _batches(n: int, size: int):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _clean(ctx, method: str, n: int):
    """Saved clean maps [n,H,W] (float16 on disk; preprocessed as the family declares) and the
    targets they explain, first n test images."""
    arrays = ctx.explanation(ctx.seed, method, "test")
    maps = family_maps(torch.from_numpy(arrays["maps"][:n]).float(), ctx.family)
    return maps, torch.from_numpy(arrays["targets"][:n]).long()


class _ReuseFeatures:
    """The model, except that `features(x)` of the batch it last classified is not recomputed.

    Each altered batch is classified (for its score) and then explained by every method; CAM and
    Grad-CAM start from `model.features(x)`, so without this every method repeats the trunk's
    forward pass (3 passes instead of 1 for two methods). The cache is keyed by the tensor's
    identity and version and skipped for inputs that require grad, so an explainer that alters or
    differentiates through its input gets a fresh pass. Everything else goes to the model.
    """

    def __init__(self, model):
        from ..models import Classifier
        self.model, self._key, self._feats = model, None, None
        self._split = type(model).forward is Classifier.forward  # forward == classify(features(x))

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, x):
        if not self._split:
            return self.model(x)
        feats = self.model.features(x)
        if not feats.requires_grad:  # computed outside autograd: safe to hand out again
            self._key, self._feats = (x, x._version), feats
        return self.model.classify(feats)

    def features(self, x):
        if self._key is not None and self._key[0] is x and self._key[1] == x._version and not x.requires_grad:
            return self._feats
        return self.model.features(x)


def _model(ctx):
    return _ReuseFeatures(ctx.model(ctx.seed).eval())


class Altered:
    """The second driver, for the families that re-explain altered images (noise, equivariance,
    degradation); `over_maps` drives the families that score saved maps. It holds the first test
    images used (`metrics.salience.max_images`), the model (sharing its forward pass between
    explainers), every scored explainer with its options and its saved clean maps and targets, and
    walks the images in explain batches."""

    def __init__(self, ctx, family: str):
        self.data, self.n = _test_images(ctx, family)
        self.ctx, self.settings, self.device = ctx, _settings(ctx), ctx.device
        self.model, self.methods = _model(ctx), ctx.methods
        self.clean = {m: _clean(ctx, m, self.n) for m in self.methods}
        self.explainers = {m: _explainer(ctx, m) for m in self.methods}

    def batches(self):
        """(slice, images, labels, clean logits) per batch of explain.batch_size test images."""
        for sl in _batches(self.n, self.ctx.cfg["explain"]["batch_size"]):
            x = self.data.tensors(sl).to(self.device)
            with torch.no_grad():
                z0 = self.model(x)
            yield sl, x, torch.from_numpy(self.data.labels[sl]).to(self.device), z0

    def clean_map(self, method: str, sl: slice) -> torch.Tensor:
        return self.clean[method][0][sl].to(self.device)

    def explain(self, method: str, x, logits, sl: slice, native: bool = False):
        """The map of altered images `x` (logits: the model's on them), as `_explain`."""
        return _explain(self.explainers[method], self.model, x, logits, self.clean[method][1][sl].to(self.device),
                        self.settings["target"], native)


def _explainer(ctx, method: str):
    """The explainer with its configured options (explain.options.{method}), as the explain step ran it."""
    fn, options = ex.get(method), ctx.cfg["explain"].get("options", {}).get(method, {})
    return lambda model, x, targets: fn(model, x, targets, **options)


def _explain(fn, model, x, logits, fixed, mode: str, native: bool = False):
    """Map of an altered image: for its own predicted class (`predicted`, the reference code's
    choice) or for the clean image's target (`fixed`), upsampled to the input as the saved `maps`
    (with native=True: also the native map, returned first). Rounded to float16 like the saved
    maps, so a map and its saved counterpart differ only by what the alteration did."""
    targets = logits.argmax(1) if mode == "predicted" else fixed
    m = fn(model, x, targets).detach().float()
    up = ex.upsample(m, x.shape[-2:]).half().float()
    return (m.half().float(), up) if native else up


def _entropy_maps(native: torch.Tensor, upsampled: torch.Tensor, resolution: str) -> torch.Tensor:
    return native if resolution == "native" else upsampled


def _score_class(ctx, logits, labels):
    """The class whose probability is tracked: the clean image's explained class (explain.target)."""
    return logits.argmax(1) if ctx.cfg["explain"]["target"] == "predicted" else labels


def _collect(parts: dict, key, value: torch.Tensor):
    parts[key].append(value.detach().float().cpu())


def _frame(parts: dict) -> pd.DataFrame:
    out = [rows(method, split, metric, torch.cat(vals).numpy(), setting=setting, level=level)
           for (method, split, metric, setting, level), vals in parts.items()]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


# ---- (b) out-of-set reaction -----------------------------------------------------------------

def salt_and_pepper(images: torch.Tensor, amount: float, uniforms: torch.Tensor) -> torch.Tensor:
    """skimage.util.random_noise(mode='s&p', salt_vs_pepper=0.5), per array element.

    Every channel value is independently replaced with probability `amount`, by 1 or 0 with equal
    odds (coloured noise, as the reference). `uniforms` [B,2,C,H,W] holds the two uniform draws
    (replace?, salt?); reusing them across amounts makes the noise nested: a value noised at 0.1
    is also noised at 0.2 (common random numbers, so curves over amount are not jittered by
    resampling). amount 0 leaves the image untouched; amount 1 is pure noise.
    """
    flip, salt = uniforms[:, 0] < amount, uniforms[:, 1] < 0.5
    return torch.where(flip, salt.to(images.dtype), images)


@register("noise")
def noise(ctx) -> pd.DataFrame:
    """Out-of-set reaction (paper E, measure b): salt-and-pepper sweep on test, and ood vs test.

    Amounts: metrics.salience.noise_amounts, default the reference grid {0, .01, .05, .1, .25, .5,
    .75, 1} (Explain2Me Measures/Noise/noise-varying-intensities.py). Entropies at
    metrics.salience.resolution (native by default, as measure a); map SSIM at input resolution.

    Per image and amount: `score` = softmax probability of the clean image's explained class on
    the noisy image (the reference scores sigmoid(logit_synthetic) of a binary model; softmax of
    the tracked class is its K-class counterpart), `prediction_changed` (argmax differs from the
    clean one), and per explainer `map_ssim` (SSIM of the noisy-image map vs the clean map, both
    min-max scaled, data_range 1) and `spatial_entropy` of the noisy map. The reference code draws
    the noise unseeded; here one torch.Generator seeded by metrics.salience.noise_seed is drawn
    batch by batch in image order, so every model sees the same noisy images (paired comparison).
    With an `ood` split: per-image `max_softmax`, `spatial_entropy` and `histogram_entropy` on ood
    and on test (setting 'ood'; maps computed here for the predicted class, since the explain step
    may not cover ood).
    """
    a = Altered(ctx, "noise")
    s, model = a.settings, a.model
    gen = torch.Generator().manual_seed(s["noise_seed"])
    parts = defaultdict(list)
    for sl, x, labels, z0 in a.batches():
        uniforms = torch.rand((len(x), 2, *x.shape[1:]), generator=gen).to(a.device)
        cls = _score_class(ctx, z0, labels)
        for amount in s["noise_amounts"]:
            xn = salt_and_pepper(x, amount, uniforms)
            with torch.no_grad():
                z = model(xn)
            _collect(parts, ("model", "test", "score", "s&p", amount), z.softmax(1).gather(1, cls[:, None])[:, 0])
            _collect(parts, ("model", "test", "prediction_changed", "s&p", amount), (z.argmax(1) != z0.argmax(1)).float())
            for m in a.methods:
                small, maps = a.explain(m, xn, z, sl, native=True)
                _collect(parts, (m, "test", "map_ssim", "s&p", amount), ssim(minmax(maps), minmax(a.clean_map(m, sl))))
                _collect(parts, (m, "test", "spatial_entropy", "s&p", amount),
                         spatial_entropy(_entropy_maps(small, maps, s["resolution"])))
    if ctx.meta()["splits"].get("ood"):
        for split in ("test", "ood"):
            _ood_side(ctx, model, ctx.split(split), s["max_images"], a.explainers, parts)
    else:
        print(f"noise: {ctx.dataset} has no ood split; ood-vs-test comparison skipped")
    return _frame(parts)


def _ood_side(ctx, model, data, cap, fns, parts):
    n = len(data) if cap is None else min(cap, len(data))
    res = _settings(ctx)["resolution"]
    for sl in _batches(n, ctx.cfg["explain"]["batch_size"]):
        x = data.tensors(sl).to(ctx.device)
        with torch.no_grad():
            z = model(x)
        _collect(parts, ("model", data.name, "max_softmax", "ood", np.nan), z.softmax(1).max(1).values)
        for m, fn in fns.items():
            maps = _entropy_maps(*_explain(fn, model, x, z, None, "predicted", native=True), res)
            _collect(parts, (m, data.name, "spatial_entropy", "ood", np.nan), spatial_entropy(maps))
            _collect(parts, (m, data.name, "histogram_entropy", "ood", np.nan), histogram_entropy(maps))


# ---- (c) geometric equivariance --------------------------------------------------------------

def geometric_transforms(height: int, width: int, shift_fraction: float) -> list[tuple]:
    """(name, forward, back) for flips, 8 replicate-padded shifts and ±90° rotations.

    forward: images [B,C,H,W] -> transformed images. back: map of the transformed image [B,h,w]
    -> (that map in the original frame, original-frame window (y0,y1,x0,x1) where it is defined).
    Shifts follow the reference notebook: every (dx,dy) in {-d,0,+d}² but (0,0), content moved by
    (dx,dy), the uncovered border filled by edge replication (cv2.BORDER_REPLICATE). Pixels moved
    out of the frame have no counterpart, so comparison is restricted to the window that stayed.
    Rotations are named by their true direction (the reference notebook's names are swapped).
    """
    dy_px, dx_px = round(shift_fraction * height), round(shift_fraction * width)
    full = (0, height, 0, width)
    out = [("hflip", lambda x: x.flip(-1), lambda m: (m.flip(-1), full)),
           ("vflip", lambda x: x.flip(-2), lambda m: (m.flip(-2), full)),
           ("rot90_ccw", lambda x: torch.rot90(x, 1, (-2, -1)), lambda m: (torch.rot90(m, -1, (-2, -1)), full)),
           ("rot90_cw", lambda x: torch.rot90(x, -1, (-2, -1)), lambda m: (torch.rot90(m, 1, (-2, -1)), full))]
    for dx in (-dx_px, 0, dx_px):
        for dy in (-dy_px, 0, dy_px):
            if dx or dy:
                out.append((f"shift_x{dx:+d}_y{dy:+d}".replace("+0", "0"), *_shift(dx, dy, height, width)))
    return out


def _shift(dx: int, dy: int, h: int, w: int):
    px, py = abs(dx), abs(dy)
    y0, y1, x0, x1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)

    def forward(x):
        # out[y, x] = image[y - dy, x - dx], edge-replicated outside the image
        padded = F.pad(x, (px, px, py, py), mode="replicate")
        return padded[..., py - dy:py - dy + h, px - dx:px - dx + w]

    def back(m):
        back_map = torch.zeros_like(m)
        back_map[:, y0:y1, x0:x1] = m[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
        return back_map, (y0, y1, x0, x1)

    return forward, back


def compare_maps(a: torch.Tensor, b: torch.Tensor, window=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, Spearman) of maps a[i] vs b[i] on the window (y0,y1,x0,x1), each min-max scaled there."""
    if window is not None:
        y0, y1, x0, x1 = window
        a, b = a[:, y0:y1, x0:x1], b[:, y0:y1, x0:x1]
    return ssim(minmax(a), minmax(b)), spearman(a, b)


@register("equivariance")
def equivariance(ctx) -> pd.DataFrame:
    """Geometric equivariance (paper E, measure c): SSIM(T⁻¹(map(T(x))), map(x)) and Spearman.

    The reference released the transformed images but not the comparison; SSIM after the
    inverse transform is the natural reading (research/salience_measures.md §3c) and Spearman
    rank correlation is added as a scale-free check. Shifts: ±shift_fraction of the side, default
    16/224 as the reference notebook (cv2.copyMakeBorder(img, 16, 16, 16, 16, BORDER_REPLICATE) on
    224 px images). Setting = transform name. Also per image
    `prediction_changed` (the reference notebook's only printed outcome).
    """
    a = Altered(ctx, "equivariance")
    h, w = a.data.images.shape[1:3]
    parts = defaultdict(list)
    for sl, x, _, z0 in a.batches():
        for name, forward, back in geometric_transforms(h, w, a.settings["shift_fraction"]):
            xt = forward(x)
            with torch.no_grad():
                z = a.model(xt)
            _collect(parts, ("model", "test", "prediction_changed", name, np.nan), (z.argmax(1) != z0.argmax(1)).float())
            for m in a.methods:
                maps, window = back(a.explain(m, xt, z, sl))
                sim, rho = compare_maps(maps, a.clean_map(m, sl), window)
                _collect(parts, (m, "test", "map_ssim", name, np.nan), sim)
                _collect(parts, (m, "test", "map_spearman", name, np.nan), rho)
    return _frame(parts)


# ---- (d) cross-run stability -----------------------------------------------------------------

def stability_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference's stability SSIM: skimage.metrics.structural_similarity at its defaults on the
    maps quantised to uint8 (`quantise`; data_range 255 from the dtype, 7×7 window, so one global
    window on a 7×7 map). Computed as SSIM of q/255 with data_range 1 (the same number: SSIM is
    invariant to scaling data and range together). Maps smaller than 7 a side (e.g. 4×4 grids of
    32 px images, where skimage would refuse) use the largest odd window that fits.
    """
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"stability SSIM: maps of {tuple(a.shape[-2:])} are too small for a 3x3 window")
    return ssim(quantise(a).float() / 255, quantise(b).float() / 255, data_range=1.0, win_size=win)


@register("stability")
def stability(ctx) -> pd.DataFrame:
    """Cross-run stability (paper E, measure d): maps of the same image from independently trained
    seeds, compared pairwise (every pair, as the reference's 45 pairs of 10 runs).

    Per image and pair: `map_ssim` and `map_spearman`; setting "seedA-seedB". At resolution `native`
    (default) as the reference (Explain2Me Measures/Stability/ssim.py): scikit-image's SSIM at its
    defaults on the native maps quantised to uint8 (`stability_ssim`). At `input`: the upsampled
    maps min-max scaled, data_range 1 (local 7×7-pixel windows).
    """
    bs = ctx.cfg["explain"]["batch_size"]
    res = _settings(ctx)["resolution"]
    if len(ctx.seeds) < 2:
        print(f"stability: {ctx.variant} has {len(ctx.seeds)} seed(s); needs at least 2; skipped")
        return pd.DataFrame()
    parts = defaultdict(list)
    for split in ctx.cfg["explain"]["splits"]:
        for method in ctx.methods:
            maps = {seed: resolution_maps(ctx.explanation(seed, method, split), res, "stability") for seed in ctx.seeds}
            for a, b in combinations(ctx.seeds, 2):
                if maps[a].shape != maps[b].shape:
                    raise ValueError(f"stability: {method}/{split} maps of seed {a} {maps[a].shape} and seed {b} "
                                     f"{maps[b].shape} differ; re-explain both from the same data")
                for sl in _batches(len(maps[a]), bs):
                    pa, pb = torch.from_numpy(maps[a][sl]).float(), torch.from_numpy(maps[b][sl]).float()
                    sim, rho = (stability_ssim(pa, pb), spearman(pa, pb)) if res == "native" else compare_maps(pa, pb)
                    _collect(parts, (method, split, "map_ssim", f"{a}-{b}", np.nan), sim)
                    _collect(parts, (method, split, "map_spearman", f"{a}-{b}", np.nan), rho)
    return _frame(parts)


# ---- (e) salience-guided degradation ---------------------------------------------------------

def _reflect_index(n: int, r: int, device) -> torch.Tensor:
    """Indices that pad a length-n axis by r on each side as scipy.ndimage mode 'reflect' (d c b a | a b c d)."""
    i = torch.arange(-r, n + r, device=device).remainder(2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(images: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter of each channel of [B,C,H,W]: separable, radius
    int(truncate·σ + 0.5), mode 'reflect'. Radius 0 (σ < 0.125) is scipy's 1-tap identity."""
    r = int(truncate * sigma + 0.5) if sigma > 0 else 0
    if r == 0:
        return images
    c, h, w = images.shape[1:]
    t = torch.arange(-r, r + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = images.index_select(3, _reflect_index(w, r, images.device))
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = x.index_select(2, _reflect_index(h, r, images.device))
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def salience_steps(maps: torch.Tensor, mode: str) -> torch.Tensor:
    """The reference's salience level per pixel, in tenths: q = round(100·G / max G) ∈ {0..100}
    (s = q/10 ∈ 0.0..10.0), G = the min-max scaled map smoothed by a Gaussian of σ = 5 at 224 px
    (scaled to the image size here). `object` inverts the map first (1 − M), so the salient region
    gets low levels and is blurred. An all-zero map (no salience) gives 0/0, taken as level 0.
    """
    m = minmax(maps)
    if mode == "object":
        m = 1 - m
    g = gaussian_blur(m[:, None], SMOOTH_SIGMA * min(maps.shape[-2:]) / REF_SIZE)[:, 0]
    top = g.flatten(1).max(1).values.view(-1, 1, 1)
    return torch.where(top > 0, torch.round(100 * g / top.clamp_min(1e-30)), torch.zeros_like(g))


def blur_sigma(level: float, scale: float) -> float:
    """σ_blur(s) = scale · (10 − s)⁴ / 10³ (reference: 10 at s=0, 0 at s=10; `scale` = size × strength)."""
    return scale * (BLUR_SIGMA_MAX - level) ** 4 / 10 ** 3


def blur_plan(steps: dict, levels: int, shape) -> dict:
    """Where each pixel sits between the precomputed blur levels (independent of the strength).

    `steps` maps a key to q [B,H,W] (tenths of s). Position in level units p = q·(levels−1)/100,
    lower level lo = floor(p) (at most levels−2), weight of the upper level f = p − lo. Pixels are
    grouped by lo (one argsort), so each level later touches only its own pixels.
    """
    b, c, h, w = shape
    plan = {}
    for k, q in steps.items():
        pos = q.double().flatten() * (levels - 1) / 100
        lo = pos.floor().clamp(0, levels - 2).long()
        frac = (pos - lo).float()
        order = lo.argsort(stable=True)
        bounds = torch.cat([lo.new_zeros(1), torch.bincount(lo, minlength=levels).cumsum(0)]).tolist()
        upper = (torch.bincount(lo, weights=(frac > 0).double(), minlength=levels) > 0).tolist()
        # flat indices into [B,C,H,W] of every channel of each pixel, grouped by level
        index = ((order // (h * w)) * (c * h * w) + order % (h * w))[:, None] + torch.arange(c, device=q.device) * (h * w)
        plan[k] = (bounds, upper, index, frac[order][:, None])
    return plan


def guided_blur(images: torch.Tensor, steps: dict, scale: float, levels: int, plan: dict | None = None) -> dict:
    """Blur every pixel with its own σ_blur(s); `steps` maps a key to q [B,H,W] (tenths of s).

    The reference blurs the whole image once per distinct s (up to 101 levels, s = 0.0..10.0) and
    keeps each blur at the pixels of that level. Here `levels` blurs at s evenly spaced on 0..10
    are computed once per batch and shared by every key (methods × modes); a pixel between two
    levels takes the linear interpolation (in s) of their two blurred values. levels = 101 is the
    reference exactly (every q falls on a level); fewer trade accuracy for time. Levels no pixel
    uses are not computed. `plan` (from `blur_plan`) can be shared across strengths.
    """
    plan = plan or blur_plan(steps, levels, images.shape)
    out = {k: torch.zeros(images.numel(), dtype=images.dtype, device=images.device) for k in steps}
    for j in range(levels):
        lower = [k for k, (bounds, _, _, _) in plan.items() if bounds[j + 1] > bounds[j]]
        upper = [k for k, (bounds, up, _, _) in plan.items() if j > 0 and up[j - 1]]
        if not lower and not upper:
            continue
        blurred = gaussian_blur(images, blur_sigma(10.0 * j / (levels - 1), scale)).reshape(-1)
        for k in lower:  # pixels whose lower level is j: weight 1 − f
            bounds, _, index, frac = plan[k]
            idx, f = index[bounds[j]:bounds[j + 1]], frac[bounds[j]:bounds[j + 1]]
            out[k][idx] += (1 - f) * blurred[idx]
        for k in upper:  # pixels whose upper level is j: weight f
            bounds, _, index, frac = plan[k]
            idx, f = index[bounds[j - 1]:bounds[j]], frac[bounds[j - 1]:bounds[j]]
            out[k][idx] += f * blurred[idx]
    return {k: v.view_as(images) for k, v in out.items()}


@register("degradation")
def degradation(ctx) -> pd.DataFrame:
    """Salience-guided degradation (paper E, measure e): blur guided by the clean map, then score.

    Mode (setting) `background` blurs the non-salient region, `object` the salient one; level =
    strength multiplier of σ_blur (σ also scaled by image size / 224, since the reference's σ is
    in 224-px pixels). Per image: `score` (softmax probability of the clean image's explained
    class), `accuracy` (prediction == label) and per explainer `map_ssim` (map of the degraded
    image vs the clean map). Rows at level 0 hold the clean score and accuracy, where the curves start.
    """
    a = Altered(ctx, "degradation")
    s = a.settings
    size_scale = min(a.data.images.shape[1:3]) / REF_SIZE
    parts = defaultdict(list)
    for sl, x, labels, z0 in a.batches():
        cls = _score_class(ctx, z0, labels)
        steps = {(m, mode): salience_steps(a.clean_map(m, sl), mode) for m in a.methods for mode in ("background", "object")}
        for (m, mode) in steps:
            _collect(parts, (m, "test", "score", mode, 0.0), z0.softmax(1).gather(1, cls[:, None])[:, 0])
            _collect(parts, (m, "test", "accuracy", mode, 0.0), (z0.argmax(1) == labels).float())
        plan = blur_plan(steps, s["degradation_levels"], x.shape)
        for strength in s["degradation_strengths"]:
            degraded = guided_blur(x, steps, size_scale * strength, s["degradation_levels"], plan)
            for (m, mode), xd in degraded.items():
                with torch.no_grad():
                    z = a.model(xd)
                _collect(parts, (m, "test", "score", mode, strength), z.softmax(1).gather(1, cls[:, None])[:, 0])
                _collect(parts, (m, "test", "accuracy", mode, strength), (z.argmax(1) == labels).float())
                maps = a.explain(m, xd, z, sl)
                _collect(parts, (m, "test", "map_ssim", mode, strength), ssim(minmax(maps), minmax(a.clean_map(m, sl))))
    return _frame(parts)
