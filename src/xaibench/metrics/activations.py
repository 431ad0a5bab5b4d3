"""Activation paths (paper B, Tagade & Rumbelow 2023 §3) and planted-cue strength of generated images.

Path similarity: for every layer l, compare an image's activations A_l(x) with the mean activations
of natural test images of its class, by Spearman rank correlation (as Geirhos et al. 2023) and by
L1 distance (here the mean absolute difference per unit, so layers of different size are comparable;
the paper does not say whether it normalises). Natural images are scored against their class mean
without themselves (leave-one-out), which is the reference a generated image is judged against:
`share_closer` is the share of layers on which an image is closer to its class mean than the
`quantile`-closest natural image of that class (0.5: the median natural image, our default;
1.0: the paper's strict "closer than any natural image").

Layers ("every layer of the model"; the paper's hook points are unpublished): the output of every
conv block of `model.trunk`, i.e. each top-level child that is a ReLU (small_cnn: the 4
conv-bn-relu blocks; resnet18: the stem ReLU) or a residual stage (nn.Sequential: resnet18's
layer1-4), plus the logits. Pools and BatchNorms are not separate layers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..explain import capture
from . import register
from .similarity import spearman


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the block outputs of `model.trunk` that count as layers (module docstring)."""
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Sequential):
        raise ValueError(f"activation paths need a model with an nn.Sequential `trunk`, got {type(model).__name__}")
    found = [(f"trunk.{n}", m) for n, m in trunk.named_children() if isinstance(m, (nn.ReLU, nn.Sequential))]
    if not found:
        raise ValueError("activation paths: model.trunk has no ReLU or nn.Sequential block to hook")
    return found


@torch.no_grad()
def record(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Activations {layer name: [B, units]} (float32, flattened in C,H,W order) plus 'logits' [B,K]."""
    model.eval()
    named = dict(layers(model))
    store: dict[str, list[torch.Tensor]] = {n: [] for n in [*named, "logits"]}
    device = next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        with capture(named) as out:
            store["logits"].append(model(images[i:i + batch_size].to(device)).detach().float())
        for n in named:
            store[n].append(out[n].flatten(1).float())
    return {n: torch.cat(v).cpu() for n, v in store.items()}


def class_sums(acts: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int):
    """Per-layer sums of activations per class {layer: [K, units]} and the class counts [K]."""
    labels = torch.as_tensor(labels).long()
    counts = torch.bincount(labels, minlength=num_classes)
    sums = {n: torch.zeros(num_classes, a.shape[1], dtype=torch.float64).index_add_(0, labels, a.double())
            for n, a in acts.items()}
    return sums, counts


def leave_one_out_means(acts: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean activations [B, units] of each image's class without the image itself (acts must be in `sums`)."""
    n = counts[labels]
    if (n < 2).any():
        raise ValueError("leave-one-out class means need at least 2 natural images of every class present")
    return ((sums[labels] - acts.double()) / (n - 1)[:, None]).float()


def path_similarity(acts: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Spearman [B], L1 [B]) between activations [B, units] and reference activations [B, units].

    L1 is the mean absolute difference per unit. Spearman is NaN where either side is constant
    (e.g. a ReLU layer with no active unit), as SciPy.
    """
    if acts.shape != reference.shape:
        raise ValueError(f"path_similarity: shapes differ, {tuple(acts.shape)} vs {tuple(reference.shape)}")
    return spearman(acts, reference), (acts.float() - reference.float()).abs().mean(1)


def natural_reference(scores: torch.Tensor, labels: torch.Tensor, num_classes: int, quantile: float,
                      higher_is_closer: bool) -> torch.Tensor:
    """Per layer and class [L, K]: the score of the `quantile`-closest natural image of the class.

    `scores` [L, N] are natural images' leave-one-out scores. quantile 0.5 = the median image,
    1.0 = the closest one (max Spearman / min L1). NaN scores are ignored; a class with none is NaN.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    q = quantile if higher_is_closer else 1 - quantile
    out = torch.full((scores.shape[0], num_classes), torch.nan)
    for k in range(num_classes):  # K small; each class's quantile over all layers at once
        sel = scores[:, torch.as_tensor(labels) == k]
        if sel.shape[1]:
            out[:, k] = torch.nanquantile(sel.double(), q, dim=1).float()
    return out


def share_closer(scores: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor, higher_is_closer: bool) -> torch.Tensor:
    """Share of layers [B] on which each image's score beats its class's natural reference ([L,B] vs [L,K])."""
    ref = reference[:, torch.as_tensor(targets).long()]
    beats = scores > ref if higher_is_closer else scores < ref
    valid = ~(scores.isnan() | ref.isnan())
    return (beats & valid).sum(0).float() / valid.sum(0).clamp_min(1).float()


@torch.no_grad()
def activation_paths(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, natural: torch.Tensor,
                     natural_labels: torch.Tensor, num_classes: int, quantile: float = 0.5,
                     batch_size: int = 256, max_scored: int | None = None) -> dict:
    """Every paper-B path measure for generated `images` [B,3,H,W] (class `targets`) and for the natural set.

    Returns {"layers": names, "spearman"/"l1": [L,B], "share_spearman"/"share_l1": [B],
    "natural_spearman"/"natural_l1": [L,N] (leave-one-out), "natural_share_spearman"/"natural_share_l1": [N]}
    (N = the scored natural images).
    Natural activations are recorded in chunks and only class sums are kept, so memory stays
    O(batch · units) whatever the test split's size. Class means always use every natural image;
    `max_scored` limits the natural images that get leave-one-out scores (the reference) to the
    first N (ranking every unit of every image is the cost: ~3/4 of the time on 600 images).
    """
    targets, natural_labels = torch.as_tensor(targets).long(), torch.as_tensor(natural_labels).long()
    if len(images) != len(targets) or len(natural) != len(natural_labels):
        raise ValueError("activation_paths: images/targets or natural/natural_labels differ in length")
    names = [n for n, _ in layers(model)] + ["logits"]
    sums, counts = None, torch.zeros(num_classes, dtype=torch.long)
    for i in range(0, len(natural), batch_size):  # pass 1: class sums
        s, c = class_sums(record(model, natural[i:i + batch_size], batch_size), natural_labels[i:i + batch_size], num_classes)
        sums = s if sums is None else {n: sums[n] + s[n] for n in names}
        counts += c
    if (counts[targets.unique()] < 1).any():
        raise ValueError("activation_paths: a target class has no natural image to average")
    means = {n: (sums[n] / counts.clamp_min(1)[:, None]).float() for n in names}
    nat = {"spearman": [], "l1": []}
    scored = len(natural) if max_scored is None else min(len(natural), max_scored)
    for i in range(0, scored, batch_size):  # pass 2: natural images, leave-one-out
        j = min(i + batch_size, scored)
        acts, lab = record(model, natural[i:j], batch_size), natural_labels[i:j]
        per = [path_similarity(acts[n], leave_one_out_means(acts[n], lab, sums[n], counts)) for n in names]
        nat["spearman"].append(torch.stack([p[0] for p in per]))
        nat["l1"].append(torch.stack([p[1] for p in per]))
    nat = {k: torch.cat(v, 1) for k, v in nat.items()}
    acts = record(model, images, batch_size)
    per = [path_similarity(acts[n], means[n][targets]) for n in names]
    gen = {"spearman": torch.stack([p[0] for p in per]), "l1": torch.stack([p[1] for p in per])}
    out = {"layers": names}
    for key, higher in (("spearman", True), ("l1", False)):
        ref = natural_reference(nat[key], natural_labels[:scored], num_classes, quantile, higher)
        out[key], out[f"natural_{key}"] = gen[key], nat[key]
        out[f"share_{key}"] = share_closer(gen[key], targets, ref, higher)
        out[f"natural_share_{key}"] = share_closer(nat[key], natural_labels[:scored], ref, higher)
    return out


# ---- planted spurious cue (shapes) -------------------------------------------------------------

def cue_pixels(image_size: int, cue_size: float) -> int:
    """Side of the corner cue patch in pixels, exactly as `data.shapes.generate_split` draws it."""
    return max(2, int(round(cue_size * image_size)))


def cue_colour_strength(images: torch.Tensor, targets: torch.Tensor, cue_px: int, num_classes: int,
                        colours=None, region: str = "corner") -> torch.Tensor:
    """How much the top-left cue patch of each image [B,3,H,W] shows its class's cue colour ([B]).

    d_j = mean over the patch's pixels of the RGB distance to cue colour j of classes 0..K−1
    (`colours` [K,3]; default: the shapes generator's, class k -> CUE_COLOURS[k mod 8]). strength = (mean_{j≠c} d_j − d_c) / mean_{j≠c} |C_j − C_c|: 1 when the patch is
    exactly class c's cue colour, about 0 when it is no closer to c's colour than to the others',
    negative when it shows another class's cue. Model-free, so it reads the image as a person would.
    `region="image"` scores every pixel instead of the corner: a GAP classifier may respond to the
    cue colour anywhere, and prototypes then paint it all over (seen on shapes).
    """
    from ..data.shapes import CUE_COLOURS
    targets = torch.as_tensor(targets).long()
    if colours is None:
        colours = CUE_COLOURS[np.arange(num_classes) % len(CUE_COLOURS)]
    colours = torch.as_tensor(colours, dtype=torch.float32)
    if len(colours) != num_classes or num_classes < 2 or int(targets.max()) >= num_classes:
        raise ValueError(f"cue_colour_strength: need {num_classes} >= 2 cue colours covering every target, got {len(colours)}")
    if region not in ("corner", "image"):
        raise ValueError(f"cue region must be 'corner' or 'image', got {region!r}")
    patch = images if region == "image" else images[:, :, :cue_px, :cue_px]
    patch = patch.float().flatten(2).transpose(1, 2)                                      # [B, P, 3]
    d = torch.cdist(patch, colours[None].expand(len(patch), -1, -1).to(patch)).mean(1)   # [B, K]
    k = len(colours)
    others = torch.ones(len(targets), k, dtype=torch.bool)
    others[torch.arange(len(targets)), targets] = False
    d_own = d[torch.arange(len(targets)), targets]
    d_other = (d * others).sum(1) / (k - 1)
    sep = torch.cdist(colours, colours)[targets].sum(1) / (k - 1)
    return (d_other - d_own) / sep


@torch.no_grad()
def cue_logit_drop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, cue_px: int,
                   fill: float = 0.5) -> torch.Tensor:
    """Target logit minus the target logit with the corner cue patch replaced by grey `fill` ([B]).

    How much of the model's evidence for the class the image keeps in the cue region.
    """
    targets = torch.as_tensor(targets).long()
    device = next(model.parameters()).device
    masked = images.clone()
    masked[:, :, :cue_px, :cue_px] = fill
    rows = torch.arange(len(targets))
    logits = model.eval()(torch.cat([images, masked]).to(device)).float().cpu()
    return logits[:len(images)][rows, targets] - logits[len(images):][rows, targets]


def path_rows(result: dict, method: str, split: str = "test") -> "pd.DataFrame":
    """Per-image tidy rows of an `activation_paths` result: the generated images under `method`,
    the natural images (leave-one-out) under method "natural". Per-layer metrics `spearman`/`l1`
    carry the layer name as `setting` and its depth (1 = first, so `summarize`, which averages
    curves over levels > 0, keeps every layer) as `level`; `share_spearman` and
    `share_l1` span layers."""
    import pandas as pd
    from ..tidy import rows
    frames = []
    for who, prefix in ((method, ""), ("natural", "natural_")):
        for key in ("spearman", "l1"):
            frames += [rows(who, split, key, result[f"{prefix}{key}"][li].numpy(), setting=name, level=li + 1)
                       for li, name in enumerate(result["layers"])]
            frames.append(rows(who, split, f"share_{key}", result[f"{prefix}share_{key}"].numpy()))
    return pd.concat(frames, ignore_index=True)


# ---- the `activations` metric family (catalog: scope model, needs models + prototypes) ------------

def selected(cfg: dict, variant: str, seed: int) -> bool:
    """Whether paper B generated images for this model (featviz.variants × featviz.seeds)."""
    return variant in cfg["featviz"]["variants"] and int(seed) in cfg["featviz"]["seeds"]


@register("activations")
def family(ctx) -> "pd.DataFrame":
    """Per-image rows of paper B for one model: each featviz method's images and the natural test images.

    Per layer (`setting` = layer, `level` = depth): `spearman`, `l1` to the class mean of natural
    test activations (natural images leave-one-out, method "natural"); `share_spearman`, `share_l1`
    (metrics.activations.quantile); per generated image: `classified` (argmax = its class) and, on
    datasets with the planted cue, `cue_colour_strength` (corner), `cue_colour_strength_image`
    (whole image) and `cue_logit_drop`. Models not selected in `featviz` get no rows.
    """
    import pandas as pd

    from .. import paths
    from ..io import load_npz
    from ..tidy import ROW_COLUMNS, rows
    if not selected(ctx.cfg, ctx.variant, ctx.seed):
        return pd.DataFrame(columns=ROW_COLUMNS)
    arrays = load_npz(paths.prototypes(ctx.dataset, ctx.variant, ctx.seed))
    methods, k = [str(m) for m in arrays["methods"]], len(arrays["classes"])
    model = ctx.model(ctx.seed)
    test = ctx.split("test")
    images = torch.cat([torch.from_numpy(arrays[m]).float() for m in methods])
    targets = torch.arange(k).repeat(len(methods))
    opts = ctx.cfg["metrics"]["activations"]
    result = activation_paths(model, images, targets, test.tensors(), torch.from_numpy(test.labels), k,
                              opts["quantile"], opts["batch_size"], opts["max_natural"])
    meta = ctx.meta()
    cue_px = cue_pixels(int(meta["image_size"]), meta["settings"]["cue_size"]) if meta.get("has_cue") else None
    frames = []
    for i, method in enumerate(methods):
        part = slice(i * k, (i + 1) * k)
        sub = {key: (value[..., part] if key in ("spearman", "l1", "share_spearman", "share_l1") else value)
               for key, value in result.items()}
        frame = path_rows(sub, method)
        frames.append(frame if i == 0 else frame[frame.method != "natural"])
        x, t = images[part], targets[part]
        frames.append(rows(method, "test", "classified", arrays[f"{method}_logits"].argmax(1) == np.arange(k)))
        if cue_px:
            frames.append(rows(method, "test", "cue_colour_strength", cue_colour_strength(x, t, cue_px, k).numpy()))
            frames.append(rows(method, "test", "cue_colour_strength_image",
                               cue_colour_strength(x, t, cue_px, k, region="image").numpy()))
            frames.append(rows(method, "test", "cue_logit_drop", cue_logit_drop(model, x, t, cue_px).numpy()))
    return pd.concat(frames, ignore_index=True)

