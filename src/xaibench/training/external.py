"""External models: checkpoints trained elsewhere, imported instead of trained (settings `models.external`).

The `train` step of an external model checks its file against the dataset (class count, input size)
and writes what a trained model leaves: model.pt (the weights, and a model config holding the settings
block and the file's sha256), an empty history.csv and summary.json (its accuracies), so every later
step treats it like any other model. Loading rebuilds the model from the file, so a file replaced
after the import is refused by `load_trained` (its sha256 differs) until the import job reruns, which
Snakemake does by itself: the file is that job's input.

Formats: a state_dict of a registered architecture (a `Classifier`), TorchScript (`features`/`classify`
methods) or torch.export (forward only). The block's `layer` (and `reshape`) go with the model
(`explain_layer`), so every step that explains it reads the same layer; the import checks that Grad-CAM
runs there, so a bad name fails this job, before any explain job.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import file_sha256, read_meta
from ..io import first_line, load_torch
from . import Variant

FIX = "fix the file or its models.external block"


class Wrapped(nn.Module):
    """A TorchScript or torch.export model behind what explainers use: [0, 1] images, normalised as the
    block says, -> logits; `features`/`classify` pass through when the file has them (TorchScript of
    a Classifier), and then forward is classify(features(x)), the logits Grad-CAM differentiates."""

    def __init__(self, net, normalisation: dict | None):
        super().__init__()
        norm = normalisation or {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        self.net, self.split = net, hasattr(net, "features")
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def explain_modules(self) -> dict[str, nn.Module]:
        """The file's modules by the names its author knows (`explain.layer_of` looks a layer up here)."""
        return dict(self.net.named_modules())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features((x - self.mean) / self.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.classify(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x)) if self.split else self.net((x - self.mean) / self.std)


def _file_model(block: dict) -> Wrapped:
    """A TorchScript file (which must have `features`/`classify`: its modules take no hooks) or a
    torch.export file, unflattened: `.module()` runs one flat graph, on whose submodules forward hooks
    never fire; `torch.export.unflatten` calls them, so a layer can be read by name."""
    path, fmt = block["path"], block["format"]
    try:
        net = torch.jit.load(path, map_location="cpu") if fmt == "torchscript" else torch.export.load(path)
    except Exception as exc:  # torch raises RuntimeError and others for a damaged or foreign file
        raise ValueError(f"{path}: not a {fmt} file ({type(exc).__name__}: {first_line(exc)}); {FIX}") from None
    if fmt == "export":
        net = torch.export.unflatten(net)
        for module in net.modules():  # tracing's symbolic shapes: not needed to run, and deepcopy refuses them
            for node in getattr(getattr(module, "graph", None), "nodes", ()):
                node.meta.clear()
    elif not (hasattr(net, "features") and hasattr(net, "classify")):
        raise ValueError(f"{path}: the TorchScript model has no features or classify method; explainers need "
                         "features(x) -> [B,C,h,w] and classify(features) -> logits (script an "
                         "xaibench.models.Classifier, or @torch.jit.export both), or save it with torch.export "
                         "(format: export) and name a layer")
    return Wrapped(net, block["normalisation"])


def model_config(cfg: dict, meta: dict, variant: str, seed: int) -> dict:
    """What an imported model is: its settings block, the file's content and the data it must fit."""
    block = cfg["models"]["external"][variant]
    return {"variant": variant, "seed": seed, "dataset": meta["dataset"], "num_classes": len(meta["classes"]),
            "image_size": meta["image_size"], "external": block, "sha256": file_sha256(block["path"])}


def build(mcfg: dict) -> nn.Module:
    """The model of the file `mcfg` names, with its weights (a state_dict is loaded into its architecture),
    carrying its block's `layer` and `reshape` (`explain_layer`: `explain.layer_of` reads it first)."""
    block = mcfg["external"]
    model = _state_dict_model(mcfg) if block["format"] == "state_dict" else _file_model(block)
    if block["layer"] is not None:
        model.explain_layer = (block["layer"], block["reshape"])
    return model


def _state_dict_model(mcfg: dict) -> nn.Module:
    from ..models import create_model
    block, path = mcfg["external"], mcfg["external"]["path"]
    model = create_model(block["arch"], block["classes"], width=block["width"], image_size=mcfg["image_size"])
    state = load_torch(path, "state_dict", weights_only=True, fix=FIX)
    state = state.get("state_dict", state) if isinstance(state, dict) else state  # an xaibench model.pt too
    try:
        model.load_state_dict(state)
    except Exception as exc:  # torch's first line only says "Error(s) in loading state_dict": give the next
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise ValueError(f"{path}: not a state_dict of {block['arch']} (width {block['width']}) with "
                         f"{block['classes']} classes ({lines[min(1, len(lines) - 1)][:160]}); {FIX}") from None
    return model


def check(model: nn.Module, mcfg: dict) -> None:
    """Refuse a model that does not fit the dataset or whose Grad-CAM layer does not work (a name it does
    not have, an output no reshape makes [B,C,h,w]), each in one line naming the file."""
    from ..explain import gradcam
    block, path, n, side = mcfg["external"], mcfg["external"]["path"], mcfg["num_classes"], mcfg["image_size"]
    if block["classes"] != n:
        raise ValueError(f"{path}: models.external.{mcfg['variant']}.classes is {block['classes']} but dataset "
                         f"{mcfg['dataset']} has {n} classes")
    x = torch.zeros(2, 3, side, side)
    try:
        with torch.no_grad():
            logits = model(x)
            feats = model.features(x) if block["layer"] is None else None
    except Exception as exc:
        raise ValueError(f"{path}: fails on the dataset's {side}x{side} RGB images "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    if feats is not None and feats.dim() != 4:
        raise ValueError(f"{path}: features(x) gives shape {list(feats.shape)}; explainers need [B,C,h,w]")
    if list(logits.shape) != [2, n]:
        raise ValueError(f"{path}: gives outputs of shape {list(logits.shape[1:])} but dataset "
                         f"{mcfg['dataset']} has {n} classes")
    if block["layer"] is not None:
        try:
            gradcam(model, x, torch.zeros(2, dtype=torch.long))
        except ValueError as exc:  # the layer's own one-line reasons (explain.layer_of, layer_gradient, tokens)
            raise ValueError(f"{path}: models.external.{mcfg['variant']}.{exc}") from None
        except Exception as exc:  # e.g. a reshape function of the user's that fails
            raise ValueError(f"{path}: Grad-CAM at models.external.{mcfg['variant']}.layer fails "
                             f"({type(exc).__name__}: {first_line(exc)})") from None


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
