"""External models: checkpoints trained elsewhere, imported instead of trained (settings `models.external`).

The `train` step of an external model checks its file against the dataset (class count, input size)
and writes what a trained model leaves: model.pt (the weights, and a model config holding the settings
block and the file's sha256), an empty history.csv and summary.json (its accuracies), so every later
step treats it like any other model. Loading rebuilds the model from the file, so a file replaced
after the import is refused by `load_trained` (its sha256 differs) until the import job reruns, which
Snakemake does by itself: the file is that job's input.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import file_sha256, read_meta
from ..io import first_line, load_torch
from . import Variant

FIX = "fix the file or its models.external block"


class Scripted(nn.Module):
    """A TorchScript classifier behind the interface explainers use: [0, 1] images -> `features`
    (normalised first, as the block says) -> `classify` -> logits."""

    def __init__(self, net, normalisation: dict | None):
        super().__init__()
        norm = normalisation or {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        self.net = net
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features((x - self.mean) / self.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.classify(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class Cut(nn.Module):
    """A Classifier whose `features` end at an earlier trunk layer (`cam_layer`), the rest of the trunk
    moved into `classify`: what Grad-CAM explains is that layer; outputs and weights are unchanged."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model, self.index = model, index

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.trunk[:self.index + 1]((x - self.model.mean) / self.model.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.model.classify(self.model.trunk[self.index + 1:](f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def model_config(cfg: dict, meta: dict, variant: str, seed: int) -> dict:
    """What an imported model is: its settings block, the file's content and the data it must fit."""
    block = cfg["models"]["external"][variant]
    return {"variant": variant, "seed": seed, "dataset": meta["dataset"], "num_classes": len(meta["classes"]),
            "image_size": meta["image_size"], "external": block, "sha256": file_sha256(block["path"])}


def build(mcfg: dict) -> nn.Module:
    """The model of the file `mcfg` names, with its weights (a state_dict is loaded into its architecture)."""
    block, path = mcfg["external"], mcfg["external"]["path"]
    if block["format"] == "torchscript":
        try:
            net = torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and others for a damaged or foreign file
            raise ValueError(f"{path}: not a TorchScript file ({type(exc).__name__}: {first_line(exc)}); {FIX}") from None
        missing = [m for m in ("features", "classify") if not hasattr(net, m)]
        if missing:
            raise ValueError(f"{path}: the TorchScript model has no {' or '.join(missing)} method; explainers need "
                             "features(x) -> [B,C,h,w] and classify(features) -> logits (script an "
                             "xaibench.models.Classifier, or @torch.jit.export both)")
        return Scripted(net, block["normalisation"])
    from ..models import create_model
    model = create_model(block["arch"], block["classes"], width=block["width"], image_size=mcfg["image_size"])
    state = load_torch(path, "state_dict", weights_only=True, fix=FIX)
    state = state.get("state_dict", state) if isinstance(state, dict) else state  # an xaibench model.pt too
    try:
        model.load_state_dict(state)
    except Exception as exc:  # torch's first line only says "Error(s) in loading state_dict": give the next
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise ValueError(f"{path}: not a state_dict of {block['arch']} (width {block['width']}) with "
                         f"{block['classes']} classes ({lines[min(1, len(lines) - 1)][:160]}); {FIX}") from None
    if block["cam_layer"] is None:
        return model
    index = int(block["cam_layer"].split(".")[1])
    if index >= len(model.trunk):
        raise ValueError(f"{path}: models.external.{mcfg['variant']}.cam_layer {block['cam_layer']}: {block['arch']}'s "
                         f"trunk has layers trunk.0 to trunk.{len(model.trunk) - 1}")
    return Cut(model, index)


def check(model: nn.Module, mcfg: dict) -> None:
    """Refuse a model that does not fit the dataset: class count and input size, each in one line."""
    block, path, n, side = mcfg["external"], mcfg["external"]["path"], mcfg["num_classes"], mcfg["image_size"]
    if block["classes"] != n:
        raise ValueError(f"{path}: models.external.{mcfg['variant']}.classes is {block['classes']} but dataset "
                         f"{mcfg['dataset']} has {n} classes")
    try:
        with torch.no_grad():
            feats = model.features(torch.zeros(2, 3, side, side))
            logits = model.classify(feats)
    except Exception as exc:
        raise ValueError(f"{path}: fails on the dataset's {side}x{side} RGB images "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    if feats.dim() != 4:
        raise ValueError(f"{path}: features(x) gives shape {list(feats.shape)}; explainers need [B,C,h,w]")
    if list(logits.shape) != [2, n]:
        raise ValueError(f"{path}: gives outputs of shape {list(logits.shape[1:])} but dataset "
                         f"{mcfg['dataset']} has {n} classes")


def import_model(cfg: dict, data_root: str | Path, variant: str, seed: int, out: str | Path, device="auto") -> dict:
    """The `train` step of an external model: check it, evaluate it, write it as a trained model."""
    from .fit import EVAL_BATCH, evaluate, resolve_device, save_model
    data_root, out = Path(data_root), Path(out)
    meta = read_meta(data_root)
    mcfg = model_config(cfg, meta, variant, seed)
    model = build(mcfg).eval()
    check(model, mcfg)
    device = resolve_device(device)
    summary = {"variant": variant, "seed": seed, "dataset": meta["dataset"], "epochs": 0,
               "external": mcfg["external"]["path"], "sha256": mcfg["sha256"],
               **evaluate(model.to(device), data_root, meta, EVAL_BATCH, device)}
    save_model(out, mcfg, model, [], summary)
    return summary


EXTERNAL = Variant(build, trainer=import_model)
