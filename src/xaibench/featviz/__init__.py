"""Feature visualisation: prototype generation (paper B) and the baselines it is compared with.

`generate(model, K, method, image_size, seed, **options)` returns one image per class, [K,3,H,W]
in [0,1]; methods are `prototype` (Tagade & Rumbelow 2023), `fourier_fv` (Olah et al. 2017, as
torch-lucent) and `pixel_ascent` (unregularised). `generate_prototypes(cfg, model, meta, seed)`
runs the configured methods for the CLI; `draw_grid` draws classes × methods.
"""
from __future__ import annotations

import inspect
import zlib
from pathlib import Path

import numpy as np
import torch

from .methods import METHODS, frozen, get, high_frequency, neutral_baseline, probability_variance  # noqa: F401
from .param import FourierImage, PixelImage  # noqa: F401
from .transforms import random_affine  # noqa: F401

def generate(model: torch.nn.Module, num_classes: int, method: str, image_size: int, seed: int,
             **options) -> torch.Tensor:
    """One image per class [K,3,H,W] in [0,1]; the same (model, method, seed, options) give the same images."""
    fn = get(method)
    allowed = set(inspect.signature(fn).parameters) - {"model", "num_classes", "image_size", "generator"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"featviz method '{method}': unknown option(s) {', '.join(unknown)}; "
                         f"choose from: {', '.join(sorted(allowed))}")
    if num_classes < 2 or image_size < 8:
        raise ValueError(f"featviz needs num_classes >= 2 and image_size >= 8, got {num_classes} and {image_size}")
    generator = torch.Generator().manual_seed(int(seed))
    with frozen(model):
        images = fn(model, num_classes, image_size, generator, **options)
    return images.clamp(0, 1)


def generate_prototypes(cfg: dict, model: torch.nn.Module, meta: dict, seed: int) -> dict[str, np.ndarray]:
    """Every configured method's images for one model, as arrays for results/prototypes/{dataset}/{variant}/seed{seed}.npz.

    Keys: `{method}` float32 [K,3,H,W] in [0,1]; `{method}_logits` float32 [K,K] (the model's logits
    for each image, untransformed); `classes` (names); `methods`. Each method draws from its own
    seed (seed, crc32 of its name), so dropping a method leaves the others' images unchanged.
    """
    fv = cfg["featviz"]
    k, size = len(meta["classes"]), int(meta["image_size"])
    out = {"classes": np.array(meta["classes"]), "methods": np.array(fv["methods"])}
    for method in fv["methods"]:
        get(method)
        sub = int(np.random.SeedSequence([int(seed), zlib.crc32(method.encode())]).generate_state(1)[0])
        images = generate(model, k, method, size, sub, **fv["options"].get(method, {}))
        with torch.no_grad():
            logits = model.eval()(images)
        out[method] = images.float().cpu().numpy()
        out[f"{method}_logits"] = logits.float().cpu().numpy()
    return out


def draw_grid(arrays: dict[str, np.ndarray], path: str | Path, title: str = "", dpi: int = 150) -> Path:
    """PNG grid: one row per class, one column per method; each tile framed red if the model does not
    classify the image as its class."""
    from ..drawing import mosaic, plt  # matplotlib only when drawing
    from ..io import atomic_path
    methods, classes = [str(m) for m in arrays["methods"]], [str(c) for c in arrays["classes"]]
    tiles = [[_tile(arrays[m][c], arrays[f"{m}_logits"][c].argmax() != c) for m in methods] for c in range(len(classes))]
    fig = mosaic(tiles, methods, classes, title or "prototypes (rows: class; red frame: not classified as its class)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _tile(image: np.ndarray, wrong: bool) -> np.ndarray:
    from ..drawing import tile
    return tile(np.transpose(image, (1, 2, 0)), border="red" if wrong else None)
