"""Spatial-misalignment benchmark of prototypical parts (paper A: Sacha et al., AAAI 2024), batched.

Reference: gmum/interpretability-benchmark `run_adversarial_test.py` (metrics, l.54-119 and AC),
`spatial_alignment_test/adversarial_modification.py` (protected box, attack), `ppnet_wrapper.py`
(objective); research note misalignment.md §2. Per test image:
1. similarity maps A_k [h,w] of every prototype; the attacked set S (top_proto: the single most
   activated prototype of all P, any class; gt_protos: all prototypes of the label's class);
2. protected region: for each k in S, its map bicubic to image size, tight box around pixels >= the
   95th percentile, grown by a margin (10 px at 224 px, scaled); union over S. Pixels inside are
   never changed (bit-exact);
3. perturbation outside it, L_inf eps in *normalised* input units (the reference attacks the
   normalised tensor; here eps is multiplied by the per-channel std on [0,1] images): `noise` =
   U(-eps, eps) i.i.d., which is what the released code does in effect (its PGD gets an exactly
   zero gradient from a one-column cross-entropy, leaving only PGD's random start); `pgd` = a real
   PGD that lowers mean_{k in S} max_hw A_k (random start, `iters` signed steps of `step`,
   projection to the eps ball), which the released code intended;
4. PAC, PRC, PLC per image and accuracy before/after (AC = difference of the means).
Images are not clipped to [0,1] after perturbation, as the reference (clip=True to clip).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from . import ROW_COLUMNS, register, rows
from ..models.protopnet import activation_region, box_mask, upsample_bicubic

KINDS = ("noise", "pgd")
ATTACKS = ("top_proto", "gt_protos")
DIRECTION = {"PAC": "lower", "PRC": "lower", "PLC": "lower", "AC": "lower"}


def attacked_prototypes(model, sim: torch.Tensor, labels: torch.Tensor, attack: str = "top_proto") -> torch.Tensor:
    """Index set S [B,S]: top_proto = argmax_k max_hw A_k over all P (S=1); gt_protos = the label's m prototypes."""
    if attack == "top_proto":
        return sim.flatten(2).amax(2).argmax(1, keepdim=True)
    if attack == "gt_protos":
        m = model.prototypes_per_class
        return labels[:, None] * m + torch.arange(m, device=labels.device)[None]
    raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")


def _gather(sim: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """sim [B,P,h,w], protos [B,S] -> [B,S,h,w]."""
    return sim.gather(1, protos[:, :, None, None].expand(-1, -1, *sim.shape[2:]))


def protected_mask(sim: torch.Tensor, protos: torch.Tensor, size, percentile: float = 95,
                   margin: int | None = None, reference_clip: bool = True) -> torch.Tensor:
    """bool [B,H,W], True where no pixel may change: union over S of the prototypes' grown boxes."""
    maps = _gather(sim, protos)  # [B,S,h,w]
    B, S = maps.shape[:2]
    up = upsample_bicubic(maps.flatten(0, 1), size)
    boxes = activation_region(up, percentile, margin, reference_clip)
    return box_mask(boxes, size).view(B, S, *size).any(1)


def perturb_noise(images: torch.Tensor, protected: torch.Tensor, eps: float = 0.4, std=None,
                  generator: torch.Generator | None = None, clip: bool = False) -> torch.Tensor:
    """images + U(-eps, eps)*std outside `protected` (bool [B,H,W]); inside returned bit-exact."""
    std = _std(images, std)
    noise = (torch.rand(images.shape, generator=generator, device="cpu").to(images.device) * 2 - 1) * eps * std
    out = images + noise
    if clip:
        out = out.clamp(0, 1)
    return torch.where(protected[:, None], images, out)


def _std(images, std):
    if std is None:
        from ..models import IMAGENET_STD
        std = IMAGENET_STD
    return torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def _objective(model, x, protos) -> torch.Tensor:
    """[B] mean over S of the max similarity of the attacked prototypes (the reference wrapper's output)."""
    sim, _ = model.prototype_maps(x)
    return _gather(sim, protos).flatten(2).amax(2).mean(1)


def perturb_pgd(model, images: torch.Tensor, protos: torch.Tensor, protected: torch.Tensor, eps: float = 0.4,
                step: float = 0.01, iters: int = 40, rand_init: bool = True, std=None,
                generator: torch.Generator | None = None, clip: bool = False) -> torch.Tensor:
    """L_inf PGD (Madry et al. 2018; cleverhans projected_gradient_descent's steps) that lowers the
    attacked prototypes' activation, changing only pixels outside `protected` (inside bit-exact).

    Batched: the objective is summed over images, whose gradients are independent (eval mode).
    """
    std = _std(images, std)
    keep = protected[:, None]
    bound = eps * std
    x0 = images.detach()
    x = x0.clone()
    if rand_init:
        x = x + (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * bound
    was_training = model.training
    model.eval()
    for _ in range(iters):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            obj = _objective(model, torch.where(keep, x0, x), protos).sum()
            (grad,) = torch.autograd.grad(obj, x)
        x = x.detach() - step * std * grad.sign()
        x = x0 + (x - x0).clamp(-bound, bound)
        if clip:
            x = x.clamp(0, 1)
    model.train(was_training)
    return torch.where(keep, x0, x.detach())


# --- metrics (pure: batched tensors in, [B] out) ----------------------------------------------------

def top_in_set(max_before: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """j [B]: the member of S most activated on the clean image (argmax over S of max_hw A_k)."""
    return protos.gather(1, max_before.gather(1, protos).argmax(1, keepdim=True))[:, 0]


def pac(a_before: torch.Tensor, a_after: torch.Tensor) -> torch.Tensor:
    """Prototype activation change, % : 100 (1 - a'_j / a_j), a = max_hw of A_j clipped at 0 (reference)."""
    a_before, a_after = a_before.clamp_min(0), a_after.clamp_min(0)
    return 100 * (1 - a_after / a_before)


def prc(max_before: torch.Tensor, max_after: torch.Tensor, j: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Prototype rank change: #{k not own-class: a'_k > a'_j} - #{k not own-class: a_k > a_j} (a count).

    max_* [B,P] max-pooled similarities (clipped at 0), own [B,P] bool (prototypes of the label's class).
    """
    mb, ma = max_before.clamp_min(0), max_after.clamp_min(0)
    other = ~own
    jb, ja = mb.gather(1, j[:, None]), ma.gather(1, j[:, None])
    return ((ma > ja) & other).sum(1).float() - ((mb > jb) & other).sum(1).float()


def plc(map_before: torch.Tensor, map_after: torch.Tensor, size, quantile: float = 0.9) -> torch.Tensor:
    """Prototype location change, % : 100 (1 - IoU) of the pixels strictly above the `quantile`
    of each map, maps [B,h,w] upsampled bilinearly (align_corners False) to `size`; 0 if both empty.
    """
    def hot(m):
        up = F.interpolate(m[:, None].float().clamp_min(0), size=tuple(size), mode="bilinear", align_corners=False)
        up = up.flatten(1)
        return up > torch.quantile(up, quantile, dim=1, keepdim=True)
    hb, ha = hot(map_before), hot(map_after)
    inter, union = (hb & ha).sum(1).float(), (hb | ha).sum(1).float()
    return torch.where(union > 0, 100 * (1 - inter / union.clamp_min(1)), torch.zeros_like(union))


def accuracy_change(logits_before: torch.Tensor, logits_after: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image 100 (correct before - correct after); its mean is AC = Acc_before - Acc_after (points)."""
    return 100 * ((logits_before.argmax(1) == labels).float() - (logits_after.argmax(1) == labels).float())


@torch.no_grad()
def benchmark(model, images: torch.Tensor, labels: torch.Tensor, kind: str = "noise", attack: str = "top_proto",
              eps: float = 0.4, step: float = 0.01, iters: int = 40, rand_init: bool = True,
              percentile: float = 95, margin: int | None = None, reference_clip: bool = True,
              plc_quantile: float = 0.9, clip: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole test on one batch: per-image PAC, PRC, PLC, acc_before, acc_after, AC (each [B]),
    plus `perturbed` [B,3,H,W], `protected` [B,H,W], `prototype` [B] (j) for figures.
    `seed` seeds the noise / PGD random start (the caller derives it from the batch position).
    """
    if kind not in KINDS:
        raise ValueError(f"misalignment kind must be one of {KINDS}, got {kind!r}")
    if images.ndim != 4 or images.shape[1] != 3 or labels.shape != (len(images),):
        raise ValueError(f"misalignment needs images [B,3,H,W] and labels [B], got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    if not hasattr(model, "prototype_maps"):
        raise ValueError(f"the misalignment benchmark needs a ProtoPNet model, got {type(model).__name__}")
    model.eval()
    size = images.shape[-2:]
    gen = torch.Generator().manual_seed(seed)
    sim, min_d = model.prototype_maps(images)
    logits = model.logits_from_min(min_d)
    protos = attacked_prototypes(model, sim, labels, attack)
    protected = protected_mask(sim, protos, size, percentile, margin, reference_clip)
    if kind == "noise":
        x2 = perturb_noise(images, protected, eps, generator=gen, clip=clip)
    else:
        x2 = perturb_pgd(model, images, protos, protected, eps, step, iters, rand_init, generator=gen, clip=clip)
    sim2, min_d2 = model.prototype_maps(x2)
    logits2 = model.logits_from_min(min_d2)
    mb, ma = sim.flatten(2).amax(2), sim2.flatten(2).amax(2)
    j = top_in_set(mb, protos)
    b = torch.arange(len(j), device=j.device)
    own = model.prototype_class[None, :] == labels[:, None]
    correct_b = 100 * (logits.argmax(1) == labels).float()
    correct_a = 100 * (logits2.argmax(1) == labels).float()
    return {"PAC": pac(mb[b, j], ma[b, j]), "PRC": prc(mb, ma, j, own), "PLC": plc(sim[b, j], sim2[b, j], size, plc_quantile),
            "acc_before": correct_b, "acc_after": correct_a, "AC": correct_b - correct_a,
            "perturbed": x2, "protected": protected, "prototype": j}


# --- the `misalignment` metric family (catalog.FAMILIES; applies to variants providing `prototypes`) ---

FAMILY_METRICS = {"PAC": "PAC", "PRC": "PRC", "PLC": "PLC", "AC": "AC",
                  "acc_before": "accuracy_before", "acc_after": "accuracy_after"}


@register("misalignment")
def family(ctx):
    """Per-image PAC, PRC, PLC, AC (and accuracy before/after) on the test split, setting = perturbation
    kind (noise, pgd), method `proto` (the prototype maps being tested).

    Settings: metrics.misalignment (kinds, attack, eps, step, iters, max_images, batch_size, ...).
    Each batch's noise / PGD start is seeded by (metrics.misalignment.seed, the batch's first image
    index), so results do not depend on how the work is split across jobs.
    """
    s = ctx.cfg["metrics"]["misalignment"]
    split = ctx.split("test")
    n = len(split) if s["max_images"] is None else min(len(split), s["max_images"])
    model = ctx.model(ctx.seed)
    parts = {}
    for kind in s["kinds"]:
        for i in range(0, n, s["batch_size"]):
            idx = slice(i, min(i + s["batch_size"], n))
            x = split.tensors(idx).to(ctx.device)
            y = torch.from_numpy(split.labels[idx]).to(ctx.device)
            res = benchmark(model, x, y, kind=kind, attack=s["attack"], eps=s["eps"], step=s["step"],
                            iters=s["iters"], percentile=s["percentile"], margin=s["margin"],
                            plc_quantile=s["plc_quantile"], clip=s["clip"], seed=s["seed"] * 1_000_003 + i)
            for key, metric in FAMILY_METRICS.items():
                parts.setdefault((kind, metric), []).append(res[key].float().cpu())
    out = [rows("proto", "test", metric, torch.cat(v).numpy(), kind) for (kind, metric), v in parts.items()]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)
