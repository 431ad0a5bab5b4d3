"""Plug LAP into an already-trained model (paper C v5: "pluggable into … already trained" CNNs).

Takes a trained `standard` checkpoint, swaps its pooling for LAP layers initialised to behave like
what they replace (`lapify(init="match")`, docs/lap.md), fine-tunes briefly with the `lap` loss and
writes model.pt, history.csv and summary.json to results/models/{dataset}/lap_plugin/seed{seed}/ (paths.model_dir).
summary.json has the usual evaluation of the fine-tuned model at top level (so the `accuracy`
family reads it like any model) and, under `plugin`, the original model's evaluation, the plugged
model's before any fine-tuning, and how far the plug-in moved predictions at initialisation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import catalog, paths
from ..data import read_meta, read_split
from ..models.lap import calibrate_scores, lapify
from . import VARIANTS, Variant, losses
from .fit import EVAL_BATCH, evaluate, fit_epoch, load_model, model_config, predict, resolve_device, save_model
from .variants import lap_classifier

VARIANT = "lap_plugin"


def plugin(cfg: dict, data_root: str | Path, variant: str, seed: int, out: str | Path, device="auto",
           src: str | Path | None = None) -> dict:
    """The `lap_plugin` trainer: fine-tune LAP put into a trained `standard` model (default: same seed's)."""
    data_root, out = Path(data_root), Path(out)
    if src is None:
        src = paths.model_dir(read_meta(data_root)["dataset"], catalog.VARIANTS[variant]["source"], seed) / "model.pt"
    tcfg, lcfg = cfg["train"], cfg["train"]["lap"]
    pcfg = lcfg["plugin"]
    device = resolve_device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    meta = read_meta(data_root)
    expect = {k: v for k, v in model_config(cfg, meta, "standard", seed).items() if k != "seed"}  # --source may be any seed
    model, base_cfg = load_model(src, expect=expect, device=device)
    if base_cfg["variant"] != "standard":
        raise ValueError(f"{src}: plug-in expects a `standard` checkpoint, got variant {base_cfg['variant']!r}")
    train_split, test_split = read_split(data_root, "train"), read_split(data_root, "test")
    original = evaluate(model, data_root, meta, EVAL_BATCH, device)
    original_logits = predict(model, test_split, EVAL_BATCH, device)

    torch.manual_seed(seed)
    model = lapify(model, mode=lcfg["mode"], beta_init=lcfg["beta_init"], init=pcfg["init"],
                   match_beta=pcfg["match_beta"]).to(device)
    n, bs = len(train_split), tcfg["batch_size"]
    calib = np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()[:bs])
    calibrate_scores(model, train_split.tensors(calib).to(device))
    model.eval()
    at_init = evaluate(model, data_root, meta, EVAL_BATCH, device)
    init_logits = predict(model, test_split, EVAL_BATCH, device)

    mcfg = {**base_cfg, "variant": VARIANT, "seed": seed, "source": {"path": str(src), "seed": base_cfg["seed"]},
            "train": catalog.without_seed_lists({**base_cfg["train"], "lap": lcfg})}
    loss_fn = losses.lap
    opt = torch.optim.AdamW(model.parameters(), lr=pcfg["lr"], weight_decay=tcfg["weight_decay"])
    val_split = read_split(data_root, "val")
    history = [fit_epoch(model, opt, loss_fn, train_split, val_split, tcfg, pcfg["lr"], epoch, pcfg["epochs"], seed,
                         device, f"{VARIANT} seed{seed}", lr_key="train.lap.plugin.lr") for epoch in range(pcfg["epochs"])]

    after = evaluate(model, data_root, meta, EVAL_BATCH, device)
    summary = {"variant": VARIANT, "seed": seed, "dataset": meta["dataset"], "epochs": pcfg["epochs"], **after,
               "plugin": {"init": pcfg["init"], "mode": lcfg["mode"], "original": original, "at_init": at_init,
                          "after": after,
                          "test_agreement_at_init": float((init_logits.argmax(1) == original_logits.argmax(1)).float().mean()),
                          "test_max_logit_change_at_init": float((init_logits - original_logits).abs().max())}}
    save_model(out, mcfg, model, history, summary)
    return summary


VARIANTS.register(VARIANT, Variant(lap_classifier, trainer=plugin))  # fine-tunes with losses.lap, as `lap` trains
