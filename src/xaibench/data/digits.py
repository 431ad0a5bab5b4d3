"""`digits`: scikit-learn's bundled handwritten digits (real data that ships with the package).

8x8 grey digits upsampled (bilinear) to the image size and repeated to RGB; the human-salience
mask is the stroke: pixels whose original intensity (0-16) is at least `stroke_threshold`.
"""
from __future__ import annotations

import numpy as np

from . import DATASETS


@DATASETS.register("digits")
def prepare(cfg: dict, size: int, seed: int):
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] / 16.0
    up = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    stroke = F.interpolate((x >= cfg["stroke_threshold"] / 16.0).float(), size=(size, size), mode="nearest")[:, 0]
    images = (up.clamp(0, 1) * 255).round().to(torch.uint8)[..., None].repeat(1, 1, 1, 3).numpy()
    masks = (stroke * 255).to(torch.uint8).numpy()
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(order) * cfg["test_fraction"])
    n_val = int(len(order) * cfg["val_fraction"])
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    for split, idx in parts.items():
        idx = np.sort(idx)
        yield split, {"images": images[idx], "labels": labels[idx], "masks": masks[idx]}
    return {"classes": [str(c) for c in digits.target_names], "has_cue": False}
