"""The training loop: seeded, checkpointed every epoch, resumable to identical weights.

Every random choice of epoch e draws from generators seeded by (seed, e), never from state carried
across epochs, so a run killed after epoch e and resumed from its checkpoint ends with the same
weights as an uninterrupted run.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from ..data import read_meta, read_split
from ..io import atomic_path, load_torch, save_json, save_torch
from ..progress import Progress
from .. import catalog
from ..models import load_pretrained
from . import VARIANTS, variant_spec

CHECKPOINT = "checkpoint.pt"
CHANNELS_LAST = torch.channels_last  # ~1.5x faster CPU convolutions for these small CNNs (measured)
EVAL_BATCH = 64  # images per evaluation forward pass: larger batches at 64 px leave the CPU caches (slower, measured)


class CheckpointMismatch(ValueError):
    """A checkpoint was made with another model/data config than the one asked for."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available (use device: auto)")
    return torch.device(name)


def model_config(cfg: dict, meta: dict, variant: str, seed: int) -> dict:
    """Everything that decides what a checkpoint's weights mean; stored with it and checked on load."""
    if catalog.is_external(variant):
        from .external import model_config as external
        return external(cfg, meta, variant, seed)
    train = cfg["train"]
    return {
        "arch": train["arch"], "width": train["width"], "num_classes": len(meta["classes"]),
        "image_size": meta["image_size"], "dataset": meta["dataset"], "data_sha256": meta["content_sha256"],
        "variant": variant, "seed": seed,
        "train": catalog.without_seed_lists({k: train[k] for k in ("pretrained", "epochs", "batch_size", "lr", "weight_decay")
                                             + tuple(k for k in [catalog.VARIANTS[variant].get("settings")] if k)}),
    }


def build(mcfg: dict):
    """An untrained model of the checkpoint's variant and configuration."""
    return variant_spec(mcfg["variant"]).build(mcfg)


def first_difference(stored, expected, prefix: str = "") -> tuple[str, object, object] | None:
    """The first key (dotted path, in `expected`'s order) whose value differs, with both values.

    Keys only the stored config has (e.g. a plug-in model's `source`) are provenance, not settings,
    and are ignored.
    """
    if isinstance(expected, dict) and isinstance(stored, dict):
        for key, want in expected.items():
            found = first_difference(stored.get(key, _MISSING), want, f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if stored == expected else (prefix.rstrip("."), stored, expected)


_MISSING = "<missing>"
# The setting behind each top-level model_config key (train.* keys are settings already).
SETTING_OF = {"arch": "train.arch", "width": "train.width", "image_size": "data.image_size",
              "num_classes": "the dataset's classes", "data_sha256": "the prepared data", "dataset": "the dataset"}


def load_model(path: str | Path, expect: dict | None = None, device="cpu"):
    """Load model.pt; if `expect` is given (a full `model_config`, or some of its keys), the stored
    config must match it key for key, else CheckpointMismatch names the first differing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found; run `xaibench train` for it first")
    ckpt = load_torch(path, "xaibench checkpoint", keys=("model_config", "state_dict"), map_location=device,
                      fix="delete it and rerun `snakemake --cores all`")
    mcfg = ckpt["model_config"]
    diff = first_difference(mcfg, expect or {})
    if diff:
        key, have, want = diff
        setting = SETTING_OF.get(key.split(".")[0], key)
        raise CheckpointMismatch(f"{path}: made with {key}={have!r} but the settings ask for {want!r} "
                                 f"({setting}); delete it and rerun `snakemake --cores all` to retrain, "
                                 "or fix the settings")
    # channels_last on CPU: its convolutions and pools run ~1.6x faster whatever layout the inputs
    # come in (featviz's generated images, perturbed copies), and the numbers are the same function.
    layout = CHANNELS_LAST if torch.device(device).type == "cpu" else torch.preserve_format
    model = build(mcfg).to(device, memory_format=layout)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), mcfg


def load_trained(cfg: dict, dataset: str, variant: str, seed: int, device="cpu"):
    """The trained model of (dataset, variant, seed), refused unless made with the current settings
    and data (its full model_config is compared). Plug-in models are checked on their own keys."""
    from .. import paths
    meta = read_meta(paths.prepared(dataset))
    return load_model(paths.model_dir(dataset, variant, seed) / "model.pt",
                      expect=model_config(cfg, meta, variant, seed), device=device)


@torch.no_grad()
def predict(model, split, batch_size: int, device) -> torch.Tensor:
    """Logits for a whole split, batched."""
    model.eval()
    out = [model(split.tensors(slice(i, i + batch_size)).to(device)).float().cpu()
           for i in range(0, len(split), batch_size)]
    return torch.cat(out)


# Subsets of the test split by the planted cue (`metrics.accuracy` and `metrics.localization` use
# the same names as tidy split names): the patch names the label / another class.
CUE_SUBSETS = ("test_cue_agreeing", "test_cue_conflicting")
EVAL_SPLITS = ("val", "test", *CUE_SUBSETS, "nocue", "ood")  # prefixes of the summary.json keys


def cue_subsets(split) -> dict[str, np.ndarray]:
    """Boolean masks of a split's cue-agreeing and cue-conflicting images, named `{split}_cue_agreeing`
    and `{split}_cue_conflicting` (empty without a cue)."""
    cue = (split.extras or {}).get("cue")
    if cue is None or (cue < 0).all():
        return {}
    has = cue >= 0
    return {f"{split.name}_cue_agreeing": has & (cue == split.labels),
            f"{split.name}_cue_conflicting": has & (cue != split.labels)}


def evaluate(model, data_root: Path, meta: dict, batch_size: int, device) -> dict:
    """Accuracy on val, test, the cue-agreeing / cue-conflicting parts of test and the cue-free `nocue`
    split; how often the prediction names the cue's class when it conflicts (`follows_cue`) and how
    often removing the patch changes it (`cue_changes_prediction`, nocue holds the same images);
    confidence on ood.
    """
    res, pred, conflict = {}, {}, None
    for name in ("val", "test", "nocue"):
        if name not in meta["splits"]:
            continue
        split = read_split(data_root, name)
        logits = predict(model, split, batch_size, device)
        pred[name] = logits.argmax(1).numpy()
        res[f"{name}_accuracy"] = float((pred[name] == split.labels).mean())
        if name == "test":
            res["test_max_softmax"] = float(logits.softmax(1).max(1).values.mean())
            subsets = cue_subsets(split)
            for sub, keep in subsets.items():
                if keep.any():
                    res[f"{sub}_accuracy"] = float((pred["test"][keep] == split.labels[keep]).mean())
            conflict = subsets.get("test_cue_conflicting")
            if conflict is not None and conflict.any():
                res["test_cue_conflicting_follows_cue"] = float((pred["test"][conflict] == split.extras["cue"][conflict]).mean())
    if "nocue" in pred and conflict is not None and conflict.any():
        res["test_cue_conflicting_cue_changes_prediction"] = float((pred["test"][conflict] != pred["nocue"][conflict]).mean())
    if meta["splits"].get("ood"):
        # ood classes were never trained on, so accuracy is undefined; report how confident the model stays.
        logits = predict(model, read_split(data_root, "ood"), batch_size, device)
        res["ood_max_softmax"] = float(logits.softmax(1).max(1).values.mean())
    return res


def _lr(base: float, epoch: int, epochs: int, warmup: int = 0) -> float:
    """Cosine schedule computed from the epoch alone (no scheduler state to resume), after `warmup`
    epochs whose rate rises linearly to `base` (epoch e < warmup: base·(e+1)/(warmup+1))."""
    if epoch < warmup:
        return base * (epoch + 1) / (warmup + 1)
    return base * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def budget(tcfg: dict, own: dict) -> dict:
    """How long and how fast a variant trains in `fit.train`: train.{epochs, lr}, unless its own
    settings block `own` sets them (train.lap: LAP's budget is calibrated on its own), with its
    warm-up epochs and whether to keep the epoch of best validation accuracy (default: the last)."""
    def pick(key):
        return tcfg[key] if own.get(key) is None else own[key]
    return {"epochs": pick("epochs"), "lr": pick("lr"), "warmup_epochs": own.get("warmup_epochs", 0),
            "keep_best": own.get("keep_best", False)}


class Diverged(ValueError):
    """The training loss became NaN or infinite; nothing is written as a result."""


def fit_epoch(model, opt, loss_fn, train_split, val_split, tcfg: dict, lr: float, epoch: int, epochs: int,
              seed: int, device, desc: str, lr_key: str = "train.lr", warmup: int = 0) -> dict:
    """One epoch of training plus validation; returns its history row. Each optimiser group runs at
    its `lr_scale` (default 1) × the epoch's rate.

    The batch order and every random draw come from generators seeded by (seed, epoch) alone, so a
    resumed run repeats exactly what an uninterrupted one would have done. A non-finite loss stops
    the run (Diverged names the epoch and `lr_key`, the setting that usually causes it).
    """
    torch.manual_seed(seed * 100003 + epoch)
    n, bs = len(train_split), tcfg["batch_size"]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch)).numpy()
    for group in opt.param_groups:
        group["lr"] = _lr(lr, epoch, epochs, warmup) * group.get("lr_scale", 1.0)
    model.train()
    total, correct, seen = 0.0, 0, 0
    bar = Progress(desc=f"{desc} epoch {epoch + 1}/{epochs}", unit="batches", total=math.ceil(n / bs))
    for i in range(0, n, bs):
        idx = np.sort(order[i:i + bs])
        x = train_split.tensors(idx).to(device, memory_format=CHANNELS_LAST)
        y = torch.from_numpy(train_split.labels[idx]).to(device)
        m = train_split.mask_tensor(idx)
        loss, logits = loss_fn(model, x, y, None if m is None else m.to(device), tcfg)
        if not torch.isfinite(loss):
            raise Diverged(f"{desc}: training diverged, loss is {loss.item()} at epoch {epoch + 1} (batch {i // bs + 1}); "
                           f"lower {lr_key} (now {lr}) and rerun; nothing was written")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        bar.update()
        bar.note(loss=total / seen, acc=correct / seen)
    val_acc = float((predict(model, val_split, EVAL_BATCH, device).argmax(1).numpy() == val_split.labels).mean())
    bar.note(loss=total / seen, acc=correct / seen, val_acc=val_acc)
    bar.close()
    return {"epoch": epoch + 1, "loss": total / seen, "train_accuracy": correct / seen, "val_accuracy": val_acc}


def save_model(out: Path, mcfg: dict, model, history: list[dict], summary: dict) -> None:
    """Write model.pt (weights + config + history), history.csv and summary.json, each atomically."""
    save_torch(out / "model.pt", {"model_config": mcfg, "state_dict": model.state_dict(), "history": history})
    with atomic_path(out / "history.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "loss", "train_accuracy", "val_accuracy"])
        writer.writeheader()
        writer.writerows(history)
    save_json(out / "summary.json", summary)


def resume_checkpoint(path: Path, mcfg: dict, device, keys: tuple[str, ...]) -> dict | None:
    """The epoch checkpoint to resume from, or None to start afresh: when there is none, when it was
    made with other settings, or when it cannot be read (a run killed while the disk was full, a
    copy cut short). A checkpoint only saves time, and training is seeded per epoch, so starting
    afresh gives the same model; refusing would block every rerun on the damaged file instead."""
    if not path.is_file():
        return None
    try:
        ckpt = load_torch(path, "training checkpoint", keys=("model_config", *keys), map_location=device)
    except ValueError as exc:
        print(f"warning: {exc}; ignoring it and training from the first epoch", flush=True)
        return None
    if ckpt["model_config"] != mcfg:
        print(f"{path}: made with other settings; starting afresh", flush=True)
        return None
    return ckpt


def train(cfg: dict, data_root: str | Path, variant: str, seed: int, out: str | Path, device="auto",
          stop_after: int | None = None) -> dict:
    """Train one model and write model.pt, history.csv and summary.json under `out`.

    Resumes from `out/checkpoint.pt` when it was made with the same config. `stop_after` ends the
    run after that many epochs (to test resuming) without writing the final files.
    """
    data_root, out = Path(data_root), Path(out)
    tcfg = cfg["train"]
    device = resolve_device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    meta = read_meta(data_root)
    train_split = read_split(data_root, "train")
    val_split = read_split(data_root, "val")
    mcfg = model_config(cfg, meta, variant, seed)
    block = catalog.VARIANTS[variant].get("settings")
    own = tcfg[block] if block else {}
    spec, plan = VARIANTS.get(variant), budget(tcfg, own)
    lr_key = "train.lr" if own.get("lr") is None else f"train.{block}.lr"

    torch.manual_seed(seed)
    model = build(mcfg).to(device, memory_format=CHANNELS_LAST)
    if tcfg["pretrained"]:
        load_pretrained(model, tcfg["pretrained"])
    groups = spec.param_groups(model, own) if spec.param_groups else [{"params": list(model.parameters())}]
    opt = torch.optim.AdamW(groups, lr=plan["lr"], weight_decay=tcfg["weight_decay"])
    history, start, best = [], 0, None  # best: (val accuracy, epoch, weights) when keeping the best epoch
    ckpt_path = out / CHECKPOINT
    ckpt = resume_checkpoint(ckpt_path, mcfg, device, ("state_dict", "optimizer", "epoch", "history"))
    if ckpt:
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        history, start, best = ckpt["history"], ckpt["epoch"] + 1, ckpt.get("best")
        print(f"resuming {out} after epoch {start}", flush=True)

    for epoch in range(start, plan["epochs"]):
        if stop_after is not None and epoch >= stop_after:
            return {}
        ecfg = spec.epoch_settings(tcfg, epoch) if spec.epoch_settings else tcfg
        history.append(fit_epoch(model, opt, spec.loss, train_split, val_split, ecfg, plan["lr"], epoch, plan["epochs"],
                                 seed, device, f"{variant} seed{seed}", lr_key, plan["warmup_epochs"]))
        if plan["keep_best"] and (best is None or history[-1]["val_accuracy"] > best[0]):
            best = (history[-1]["val_accuracy"], epoch, {k: v.clone() for k, v in model.state_dict().items()})
        save_torch(ckpt_path, {"model_config": mcfg, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                               "epoch": epoch, "history": history, "best": best})

    if best is not None:  # the epoch of best validation accuracy (first of ties), not the last
        model.load_state_dict(best[2])
    summary = {"variant": variant, "seed": seed, "dataset": meta["dataset"], "epochs": plan["epochs"],
               **({"best_epoch": best[1] + 1} if best is not None else {}),
               **evaluate(model, data_root, meta, EVAL_BATCH, device)}
    save_model(out, mcfg, model, history, summary)
    ckpt_path.unlink(missing_ok=True)
    return summary
