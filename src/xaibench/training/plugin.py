"""Plug LAP into an already-trained model (paper C v5: "pluggable into … already trained" CNNs).

Takes a trained `standard` checkpoint, swaps its pooling for LAP layers initialised to behave like
what they replace (`lapify(init="match")`, docs/lap.md), fine-tunes briefly with the `lap` loss and
writes model.pt, history.csv and summary.json to results/models/{dataset}/lap_plugin/seed{seed}/ (paths.model_dir).
summary.json has the usual evaluation of the fine-tuned model at top level (so the `accuracy`
family reads it like any model) and, under `plugin`, the original model's evaluation, the plugged
model's before any fine-tuning, and how far the plug-in moved predictions at initialisation.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import read_meta, read_split
from ..io import atomic_path, save_json
from ..models.lap import calibrate_scores, lapify
from .fit import CHANNELS_LAST, _lr, evaluate, load_model, predict, resolve_device
from .losses import LOSSES

VARIANT = "lap_plugin"


def plugin(cfg: dict, data_root: str | Path, seed: int, src: str | Path, out: str | Path, device="auto") -> dict:
    data_root, out = Path(data_root), Path(out)
    tcfg, lcfg = cfg["train"], cfg["train"]["lap"]
    pcfg = lcfg["plugin"]
    device = resolve_device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    meta = read_meta(data_root)
    model, base_cfg = load_model(src, expect={"dataset": meta["dataset"], "data_sha256": meta["content_sha256"]},
                                 device=device)
    if base_cfg["variant"] != "standard":
        raise ValueError(f"{src}: plug-in expects a `standard` checkpoint, got variant {base_cfg['variant']!r}")
    train_split, test_split = read_split(data_root, "train"), read_split(data_root, "test")
    original = evaluate(model, data_root, meta, 256, device)
    original_logits = predict(model, test_split, 256, device)

    torch.manual_seed(seed)
    model = lapify(model, mode=lcfg["mode"], beta_init=lcfg["beta_init"], init=pcfg["init"],
                   match_beta=pcfg["match_beta"], combine=lcfg["combine"]).to(device)
    n, bs = len(train_split), tcfg["batch_size"]
    calib = np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()[:bs])
    calibrate_scores(model, train_split.tensors(calib).to(device))
    model.eval()
    at_init = evaluate(model, data_root, meta, 256, device)
    init_logits = predict(model, test_split, 256, device)

    mcfg = {**base_cfg, "variant": VARIANT, "seed": seed, "source": {"path": str(src), "seed": base_cfg["seed"]},
            "train": {**base_cfg["train"], "lap": lcfg}}
    loss_fn = LOSSES["lap"]
    opt = torch.optim.AdamW(model.parameters(), lr=pcfg["lr"], weight_decay=tcfg["weight_decay"])
    history = []
    for epoch in range(pcfg["epochs"]):
        torch.manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch)).numpy()
        for group in opt.param_groups:
            group["lr"] = _lr(pcfg["lr"], epoch, pcfg["epochs"])
        model.train()
        total, correct = 0.0, 0
        for i in tqdm(range(0, n, bs), desc=f"{VARIANT} seed{seed} epoch {epoch + 1}/{pcfg['epochs']}", mininterval=1):
            idx = np.sort(order[i:i + bs])
            x = train_split.tensors(idx).to(device, memory_format=CHANNELS_LAST)
            y = torch.from_numpy(train_split.labels[idx]).to(device)
            m = train_split.mask_tensor(idx)
            loss, logits = loss_fn(model, x, y, None if m is None else m.to(device), tcfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        val = read_split(data_root, "val")
        val_acc = float((predict(model, val, 256, device).argmax(1).numpy() == val.labels).mean())
        history.append({"epoch": epoch + 1, "loss": total / n, "train_accuracy": correct / n, "val_accuracy": val_acc})

    after = evaluate(model, data_root, meta, 256, device)
    summary = {"variant": VARIANT, "seed": seed, "dataset": meta["dataset"], "epochs": pcfg["epochs"], **after,
               "plugin": {"init": pcfg["init"], "mode": lcfg["mode"], "original": original, "at_init": at_init,
                          "after": after,
                          "test_agreement_at_init": float((init_logits.argmax(1) == original_logits.argmax(1)).float().mean()),
                          "test_max_logit_change_at_init": float((init_logits - original_logits).abs().max())}}
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"model_config": mcfg, "state_dict": model.state_dict(), "history": history}, tmp)
    if history:
        with atomic_path(out / "history.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    save_json(out / "summary.json", summary)
    return summary
