"""Phased ProtoPNet training (variants `protopnet`, `protopnet_comp`), paper A and research note §3, §5.

Reference: cfchen-duke/ProtoPNet main.py / train_and_test.py / push.py and the benchmark fork
gmum/interpretability-benchmark (main.py, train_and_test.py, settings.py). Schedule, from
`cfg["train"]["protopnet"]` (defaults = the reference's):
- warm-up epochs: only add-on layers and prototypes learn (Adam, add-on weight decay);
- joint epochs: backbone, add-on and prototypes learn (Adam, per-group lr, StepLR stepped before each
  joint epoch); the last layer is not in either optimiser, as in the reference;
- push after epoch e when e >= push_start and e % push_every == 0, and always after the final epoch:
  each prototype becomes its nearest 1x1 add-on patch among training images of its own class;
  the source image index, the feature cell and the source image's activation box are recorded;
- after each push, last_layer_epochs of last-layer-only optimisation (Adam);
- early stop after a push cycle when train accuracy > 0.99, cluster < separation and epoch > 20
  (the benchmark's main.py).
Loss = crs_ent*CE + clst*Clst + sep*Sep + l1*L1 (+ weight*L_align for protopnet_comp).

Departure (documented, exact for what is trained): in the last-layer phase the max-pooled
similarities are computed once per push in eval mode and cached, since only the last layer learns
and the cluster/separation/compensation terms are constant there. The reference recomputes them every
epoch in train mode, i.e. with batch-statistics BatchNorm and running statistics still updating.

Every epoch's randomness comes from generators seeded by (seed, step), so a resumed run repeats an
uninterrupted one exactly (the training/fit.py pattern); a checkpoint is written after every step.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import paths
from ..data import read_meta, read_split
from ..models.protopnet import activation_region, upsample_bicubic
from ..io import atomic_path, save_torch
from ..models.protopnet import build
from ..progress import Progress
from . import VARIANTS, Variant
from .fit import (CHANNELS_LAST, EVAL_BATCH, evaluate, load_model, model_config, predict, resolve_device,
                  resume_checkpoint, save_model)

PROTOPNET_VARIANTS = ("protopnet", "protopnet_comp")
CHECKPOINT = "checkpoint.pt"
PHASE_FIELDS = ["step", "phase", "epoch", "loss", "cross_entropy", "cluster", "separation", "l1",
                "compensation", "train_accuracy", "val_accuracy"]


# --- losses ---------------------------------------------------------------------------------------

def cluster_separation(model, min_d: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clst = mean_b min over own-class prototypes of min_hw d; Sep = the same over other classes.

    Computed with the reference's trick max((D - min_d) * mask) so values match it exactly, also when
    a distance exceeds D (prototypes outside the sigmoid cube).
    """
    max_dist = model.prototype_vectors.shape[1]
    own = (model.prototype_class[None, :] == y[:, None]).to(min_d.dtype)
    cluster = (max_dist - ((max_dist - min_d) * own).amax(1)).mean()
    separation = (max_dist - ((max_dist - min_d) * (1 - own)).amax(1)).mean()
    return cluster, separation


def l1_off_class(model) -> torch.Tensor:
    """||W * (1 - identity^T)||_1: only connections from a prototype to classes other than its own."""
    return (model.last_layer.weight * (1 - model.class_identity.t())).abs().sum()


def compensation_loss(model, x: torch.Tensor, y: torch.Tensor, sim: torch.Tensor, comp: dict) -> torch.Tensor:
    """Misalignment compensation L_align (Sacha et al. 2024; gmum train_and_test.py, masking_type high_act).

    Per image: a random own-class prototype p; its similarity map A_p (detached) upsampled
    bilinearly; binary mask = pixels above its q-quantile, q ~ U(q_low, q_high) once per batch;
    the image outside the mask set to the normalisation mean (the reference zeroes the normalised
    input); a second forward pass with gradients gives A~_p; L = sum(M_act |A_p - A~_p|) / sum(M_act)
    with M_act the mask resized bilinearly to the feature grid. quantized=false: the min-max
    normalised A_p is the soft mask and L is the plain mean. Random draws use torch's global RNG,
    which the trainer seeds per epoch.
    """
    B, _, h, w = sim.shape
    size = x.shape[-2:]
    with torch.no_grad():
        m = model.prototypes_per_class
        p = y * m + torch.randint(m, (B,), device=y.device)
        a = sim[torch.arange(B, device=sim.device), p][:, None].detach()  # [B,1,h,w]
        if comp["quantized"]:
            up = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            q = comp["q_low"] + (comp["q_high"] - comp["q_low"]) * torch.rand(()).item()
            thr = torch.quantile(up.flatten(1), q, dim=1)
            m_img = (up > thr[:, None, None, None]).to(x.dtype)
            m_act = F.interpolate(m_img, size=(h, w), mode="bilinear", align_corners=False)
        else:
            lo = a.flatten(1).amin(1)[:, None, None, None]
            m_act = a - lo
            m_act = m_act / m_act.flatten(1).amax(1)[:, None, None, None]
            m_img = F.interpolate(m_act, size=size, mode="bilinear", align_corners=False)
        masked = x * m_img + model.mean * (1 - m_img)
    a2 = model.similarity(model.distances(model.features(masked)))[torch.arange(B, device=sim.device), p][:, None]
    diff = (a - a2).abs() if comp["distance"] == "l1" else (a - a2) ** 2
    if comp["quantized"]:
        return (diff * m_act).sum() / m_act.sum().clamp_min(1e-12)
    return diff.mean()


def protopnet_loss(model, x, y, pcfg: dict, compensate: bool = False):
    """(loss, logits, parts): the ProtoPNet objective with the reference coefficients pcfg['coefs']."""
    c = pcfg["coefs"]
    d = model.distances(model.features(x))
    min_d = d.amin(dim=(2, 3))
    logits = model.logits_from_min(min_d)
    ce = F.cross_entropy(logits, y)
    cluster, separation = cluster_separation(model, min_d, y)
    l1 = l1_off_class(model)
    loss = c["crs_ent"] * ce + c["clst"] * cluster + c["sep"] * separation + c["l1"] * l1
    comp = torch.zeros((), device=x.device)
    if compensate:
        comp = compensation_loss(model, x, y, model.similarity(d), pcfg["compensation"])
        loss = loss + pcfg["compensation"]["weight"] * comp
    parts = {"cross_entropy": ce, "cluster": cluster, "separation": separation, "l1": l1, "compensation": comp}
    return loss, logits, parts


# --- push -----------------------------------------------------------------------------------------

@torch.no_grad()
def push(model, split, batch_size: int, device, percentile: float = 95) -> dict:
    """Project every prototype onto its nearest 1x1 add-on patch of a training image of its own class.

    As cfchen-duke/ProtoPNet push.py (class_specific): eval mode; ties go to the first image in split
    order, then row-major cell. Records in the model's buffers `proto_source` (image index, row,
    column) and `proto_box` (find_high_activation_crop box, no margin, of the prototype's pre-push
    similarity map on the source image, bicubic to image size, as the reference's proto_bound_boxes).
    Prototypes of a class without training images keep their vectors and source -1.
    Returns {"min_distance": [P] distances before projection}.
    """
    model.eval()
    P = model.num_prototypes
    best = torch.full((P,), math.inf, device=device)
    best_src = torch.full((P, 3), -1, dtype=torch.long, device=device)
    best_patch = model.prototype_vectors.detach().clone()
    h = w = None
    best_map = None
    cls = model.prototype_class
    for i in range(0, len(split), batch_size):
        x = split.tensors(slice(i, i + batch_size)).to(device, memory_format=CHANNELS_LAST)
        y = torch.from_numpy(split.labels[i:i + batch_size]).to(device)
        f = model.features(x)
        d = model.distances(f)  # [b,P,h,w]
        b, _, h, w = d.shape
        if best_map is None:
            best_map = torch.zeros(P, h, w, device=device)
        dm = d.masked_fill((y[:, None] != cls[None, :])[:, :, None, None], math.inf)
        val, idx = dm.transpose(0, 1).reshape(P, -1).min(1)  # flat index over (image, row, col)
        better = val < best
        if better.any():
            bi, r, c = idx // (h * w), (idx // w) % h, idx % w
            j = better.nonzero()[:, 0]
            best[j] = val[j]
            best_src[j] = torch.stack([bi[j] + i, r[j], c[j]], 1)
            best_patch[j] = f[bi[j], :, r[j], c[j]].float()
            best_map[j] = d[bi[j], j]
    found = best_src[:, 0] >= 0
    model.prototype_vectors.data[found] = best_patch[found].to(model.prototype_vectors.dtype)
    model.proto_source.copy_(best_src)
    if found.any():
        size = split.images.shape[1:3]
        up = upsample_bicubic(model.similarity(best_map[found]), size)
        model.proto_box[found] = activation_region(up, percentile, margin=0)
    return {"min_distance": best.cpu()}


# --- trainer --------------------------------------------------------------------------------------

def schedule(p: dict) -> list[tuple[str, int, int]]:
    """The step list: (phase, epoch, k) with phase warm | joint (k = joint epoch index) | push | last (k = i)."""
    steps, joint = [], 0
    for e in range(p["epochs"]):
        if e < p["warm_epochs"]:
            steps.append(("warm", e, 0))
        else:
            steps.append(("joint", e, joint))
            joint += 1
        final = e == p["epochs"] - 1
        if final or (e >= p["push_start"] and e % p["push_every"] == 0):
            steps.append(("push", e, 0))
            steps += [("last", e, i) for i in range(p["last_layer_epochs"])]
    return steps


def _set_trainable(model, phase: str) -> None:
    for prm in model.trunk.parameters():
        prm.requires_grad_(phase == "joint")
    for prm in model.add_on.parameters():
        prm.requires_grad_(phase in ("warm", "joint"))
    model.prototype_vectors.requires_grad_(phase in ("warm", "joint"))
    model.last_layer.weight.requires_grad_(phase == "last")


def optimizers(model, p: dict) -> dict:
    """The reference's three Adam optimisers (settings.py / main.py)."""
    lr, wd = p["lr"], p["weight_decay"]
    return {
        "warm": torch.optim.Adam([
            {"params": model.add_on.parameters(), "lr": lr["warm_add_on"], "weight_decay": wd},
            {"params": [model.prototype_vectors], "lr": lr["warm_prototypes"]}]),
        "joint": torch.optim.Adam([
            {"params": model.trunk.parameters(), "lr": lr["joint_features"], "weight_decay": wd},
            {"params": model.add_on.parameters(), "lr": lr["joint_add_on"], "weight_decay": wd},
            {"params": [model.prototype_vectors], "lr": lr["joint_prototypes"]}]),
        "last": torch.optim.Adam([{"params": [model.last_layer.weight], "lr": lr["last_layer"]}]),
    }


def _order(n: int, seed: int, step: int) -> np.ndarray:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + step)).numpy()


def _epoch(model, opt, split, val_split, p, compensate, seed, step, device, desc) -> dict:
    """One warm or joint epoch over the training split, seeded by (seed, step)."""
    torch.manual_seed(seed * 100003 + step)
    order, bs = _order(len(split), seed, step), p["batch_size"]
    model.train()
    sums, correct, seen = {k: 0.0 for k in ("loss", "cross_entropy", "cluster", "separation", "l1", "compensation")}, 0, 0
    bar = Progress(desc=desc, unit="batches", total=math.ceil(len(split) / bs))
    for i in range(0, len(split), bs):
        idx = np.sort(order[i:i + bs])
        x = split.tensors(idx).to(device, memory_format=CHANNELS_LAST)
        y = torch.from_numpy(split.labels[idx]).to(device)
        loss, logits, parts = protopnet_loss(model, x, y, p, compensate)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in {"loss": loss, **parts}.items():
            sums[k] += float(v.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        bar.update()
        bar.note(loss=sums["loss"] / seen, acc=correct / seen)
    val_acc = float((predict(model, val_split, EVAL_BATCH, device).argmax(1).numpy() == val_split.labels).mean())
    bar.note(loss=sums["loss"] / seen, acc=correct / seen, val_acc=val_acc)
    bar.close()
    return {**{k: v / seen for k, v in sums.items()}, "train_accuracy": correct / seen, "val_accuracy": val_acc}


@torch.no_grad()
def _min_distances(model, split, device, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    model.eval()
    out = [model.distances(model.features(split.tensors(slice(i, i + batch_size)).to(device))).amin(dim=(2, 3))
           for i in range(0, len(split), batch_size)]
    return torch.cat(out)


def _last_epoch(model, opt, cache, split, val_split, p, seed, step) -> dict:
    """One last-layer epoch on the cached eval-mode min distances (see the module docstring)."""
    c = p["coefs"]
    train_d, val_d = cache
    device = train_d.device
    y_all = torch.from_numpy(split.labels).to(device)
    order, bs = _order(len(split), seed, step), p["batch_size"]
    sums, correct = {k: 0.0 for k in ("loss", "cross_entropy", "cluster", "separation", "l1")}, 0
    for i in range(0, len(split), bs):
        idx = torch.from_numpy(np.sort(order[i:i + bs])).to(device)
        min_d, y = train_d[idx], y_all[idx]
        logits = model.logits_from_min(min_d)
        ce = F.cross_entropy(logits, y)
        cluster, separation = cluster_separation(model, min_d, y)
        l1 = l1_off_class(model)
        loss = c["crs_ent"] * ce + c["clst"] * cluster + c["sep"] * separation + c["l1"] * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in {"loss": loss, "cross_entropy": ce, "cluster": cluster, "separation": separation, "l1": l1}.items():
            sums[k] += float(v.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
    with torch.no_grad():
        val_acc = float((model.logits_from_min(val_d).argmax(1).cpu().numpy() == val_split.labels).mean())
    n = len(split)
    return {**{k: v / n for k, v in sums.items()}, "compensation": 0.0, "train_accuracy": correct / n,
            "val_accuracy": val_acc}


def _write_phases(out: Path, rows: list[dict]) -> None:
    with atomic_path(out / "phases.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PHASE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def train(cfg: dict, data_root: str | Path, variant: str, seed: int, out: str | Path, device="auto",
          stop_after: int | None = None) -> dict:
    """Train one ProtoPNet; write model.pt, history.csv, summary.json (training/fit.py) and phases.csv.

    history.csv has one row per warm/joint/last-layer epoch (the fit.py columns); phases.csv has
    every step with its phase and loss terms, pushes included. Resumes from out/checkpoint.pt when
    it was made with the same config; `stop_after` ends the run after that many steps (to test it).
    """
    if variant not in PROTOPNET_VARIANTS:
        raise ValueError(f"unknown ProtoPNet variant '{variant}'; choose from: {', '.join(PROTOPNET_VARIANTS)}")
    data_root, out = Path(data_root), Path(out)
    p = cfg["train"]["protopnet"]
    device = resolve_device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    meta = read_meta(data_root)
    train_split, val_split = read_split(data_root, "train"), read_split(data_root, "val")
    mcfg = model_config(cfg, meta, variant, seed)

    torch.manual_seed(seed)
    model = build(mcfg).to(device, memory_format=CHANNELS_LAST)
    if p["backbone"] == "standard":  # stands in for the paper's ImageNet-pretrained backbone
        src = paths.model_dir(meta["dataset"], "standard", seed) / "model.pt"
        base, _ = load_model(src, expect=model_config(cfg, meta, "standard", seed), device=device)
        model.trunk.load_state_dict(base.trunk.state_dict())
    opts = optimizers(model, p)
    steps = schedule(p)
    rows, start, stopped = [], 0, False
    ckpt_path = out / CHECKPOINT
    ckpt = resume_checkpoint(ckpt_path, mcfg, device, ("state_dict", "optimizers", "rows", "done", "stopped"))
    if ckpt:
        model.load_state_dict(ckpt["state_dict"])
        for k, o in opts.items():
            o.load_state_dict(ckpt["optimizers"][k])
        rows, start, stopped = ckpt["rows"], ckpt["done"] + 1, ckpt["stopped"]
        print(f"resuming {out} after step {start}/{len(steps)}", flush=True)

    cache = None
    for s in range(start, len(steps)):
        if stopped:
            break
        if stop_after is not None and s >= stop_after:
            return {}
        phase, epoch, k = steps[s]
        desc = (f"{variant} seed{seed} last-layer epoch {k + 1}/{p['last_layer_epochs']} (after push, epoch {epoch + 1})"
                if phase == "last" else f"{variant} seed{seed} {phase} epoch {epoch + 1}/{p['epochs']}")
        _set_trainable(model, phase)
        if phase == "push":
            push(model, train_split, EVAL_BATCH, device)
            cache = None
            acc = float((predict(model, val_split, EVAL_BATCH, device).argmax(1).numpy() == val_split.labels).mean())
            row = {"val_accuracy": acc}
        elif phase == "last":
            if cache is None:  # after a push, or on resume inside a last-layer phase: same eval-mode values
                cache = (_min_distances(model, train_split, device), _min_distances(model, val_split, device))
            row = _last_epoch(model, opts["last"], cache, train_split, val_split, p, seed, s)
        if phase in ("push", "last"):  # short steps without a bar: one line each
            print(f"{desc}: val_acc {row['val_accuracy']:.3f}", flush=True)
        else:
            opt = opts[phase]
            if phase == "joint":  # StepLR stepped before each joint epoch: lr = base * gamma^((k+1) // step)
                for g, key in zip(opt.param_groups, ("joint_features", "joint_add_on", "joint_prototypes")):
                    g["lr"] = p["lr"][key] * p["joint_lr_gamma"] ** ((k + 1) // p["joint_lr_step"])
            row = _epoch(model, opt, train_split, val_split, p, variant == "protopnet_comp", seed, s, device, desc)
        rows.append({"step": s + 1, "phase": phase, "epoch": epoch + 1, **row})
        last_of_cycle = phase == "last" and (s + 1 == len(steps) or steps[s + 1][0] != "last")
        if p["early_stop"] and last_of_cycle and epoch > 20:
            stopped = row["train_accuracy"] > 0.99 and row["cluster"] < row["separation"]
        save_torch(ckpt_path, {"model_config": mcfg, "state_dict": model.state_dict(), "done": s, "stopped": stopped,
                               "optimizers": {k: o.state_dict() for k, o in opts.items()}, "rows": rows})

    history = [{"epoch": i + 1, "loss": r["loss"], "train_accuracy": r["train_accuracy"],
                "val_accuracy": r["val_accuracy"]} for i, r in enumerate(x for x in rows if x["phase"] != "push")]
    summary = {"variant": variant, "seed": seed, "dataset": meta["dataset"],
               "epochs": sum(r["phase"] in ("warm", "joint") for r in rows),
               "pushes": sum(r["phase"] == "push" for r in rows), "stopped_early": stopped,
               **evaluate(model.eval(), data_root, meta, EVAL_BATCH, device)}
    save_model(out, mcfg, model, history, summary)
    _write_phases(out, rows)
    ckpt_path.unlink(missing_ok=True)
    return summary


VARIANTS.register("protopnet", Variant(build, trainer=train))
VARIANTS.register("protopnet_comp", Variant(build, trainer=train))
