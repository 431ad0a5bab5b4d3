"""`shapes`: the embedded default dataset, with ground truth for every explanation.

Seeded procedural RGB images: one shape (class) at random position, scale, rotation and colour
on a textured background. The object mask is the ground-truth salience. A coloured corner patch
(the planted spurious cue) shows the class's cue colour with probability `cue_rate` in train/val
and a uniformly random class's colour in test, so test accuracy on cue-conflicting images tells
how much a model leans on the cue. `ood` holds shapes of classes never trained on; `pairs` holds
two objects of different classes, each with its own mask.
"""
from __future__ import annotations

import numpy as np

from . import DATASETS

# Distinct, saturated cue colours (RGB 0-1), one per class index.
CUE_COLOURS = np.array([
    [1.0, 0.1, 0.1], [0.1, 0.4, 1.0], [1.0, 0.9, 0.0], [0.0, 0.85, 0.3],
    [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0],
])
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "ood": 3, "pairs": 4}


def shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-size shape in local coordinates (u, v); radius 1 = the shape's extent."""
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    if kind == "circle":
        return rho <= 1
    if kind == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8
    if kind == "diamond":
        return abs(u) + abs(v) <= 1
    if kind == "triangle":
        s3 = np.sqrt(3)
        return (v >= -0.5) & (v <= 1 + s3 * u) & (v <= 1 - s3 * u)
    if kind == "cross":
        return ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))
    if kind == "ring":
        return (rho <= 1) & (rho >= 0.55)
    if kind == "star":
        return rho <= 0.4 + 0.6 * (0.5 + 0.5 * np.cos(5 * phi)) ** 2
    if kind == "hexagon":
        return np.max([abs(u * np.cos(a) + v * np.sin(a)) for a in (0, np.pi / 3, 2 * np.pi / 3)], axis=0) <= 0.87
    raise ValueError(f"unknown shape '{kind}'")


def _background(rng: np.random.Generator, size: int, yy, xx) -> np.ndarray:
    base = rng.uniform(0.25, 0.75, 3)
    tex = np.zeros((size, size, 3))
    for _ in range(3):
        f = rng.uniform(1, 6, 2) * 2 * np.pi / size
        phase = rng.uniform(0, 2 * np.pi, 3)
        tex += np.sin(f[0] * xx[..., None] + f[1] * yy[..., None] + phase) * rng.uniform(0.03, 0.08)
    return np.clip(base + tex + rng.normal(0, 0.03, (size, size, 3)), 0, 1)


def _draw(rng, img, kind, size, yy, xx, radius, x_range):
    cx = rng.uniform(*x_range)
    cy = rng.uniform(radius, size - radius)
    theta = rng.uniform(0, 2 * np.pi)
    du, dv = (xx - cx) / radius, (yy - cy) / radius
    u = du * np.cos(theta) + dv * np.sin(theta)
    v = -du * np.sin(theta) + dv * np.cos(theta)
    m = shape_mask(kind, u, v)
    colour = rng.uniform(0, 1, 3)
    img[m] = np.clip(colour + rng.normal(0, 0.04, (m.sum(), 3)), 0, 1)
    return m


def generate_split(cfg: dict, size: int, seed: int, split: str, n: int) -> dict[str, np.ndarray]:
    """Arrays of one split in the prepared format; the same (cfg, seed, split) gives the same bytes."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    classes, cue_rate = cfg["classes"], cfg["cue_rate"]
    k = len(classes)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    cue_px = max(2, int(round(cfg["cue_size"] * size)))
    lo, hi = cfg["scale"]
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    labels = np.zeros(n, np.int64)
    cue = np.zeros(n, np.int64)
    masks2 = np.zeros((n, size, size), np.uint8) if split == "pairs" else None
    labels2 = np.zeros(n, np.int64) if split == "pairs" else None
    for i in range(n):
        img = _background(rng, size, yy, xx)
        if split == "pairs":
            a, b = rng.choice(k, 2, replace=False)
            radius = rng.uniform(lo, hi) * size * 0.55  # two objects side by side, not overlapping
            left = (radius, max(radius, size / 2 - radius))
            right = (min(size - radius, size / 2 + radius), size - radius)
            if rng.random() < 0.5:
                left, right = right, left
            m1 = _draw(rng, img, classes[a], size, yy, xx, radius, left)
            m2 = _draw(rng, img, classes[b], size, yy, xx, radius, right)
            m1 &= ~m2
            labels[i], labels2[i], masks2[i] = a, b, m2 * 255
        else:
            names = cfg["ood_classes"] if split == "ood" else classes
            labels[i] = rng.integers(len(names))
            radius = rng.uniform(lo, hi) * size
            m1 = _draw(rng, img, names[labels[i]], size, yy, xx, radius, (radius, size - radius))
        if split in ("train", "val"):
            agree = rng.random() < cue_rate
            cue[i] = labels[i] if agree else (labels[i] + rng.integers(1, k)) % k
        else:
            cue[i] = rng.integers(k)
        img[:cue_px, :cue_px] = CUE_COLOURS[cue[i] % len(CUE_COLOURS)]
        m1[:cue_px, :cue_px] = False
        if masks2 is not None:
            masks2[i, :cue_px, :cue_px] = 0
        images[i] = np.round(img * 255).astype(np.uint8)
        masks[i] = m1 * 255
    out = {"images": images, "labels": labels, "masks": masks, "cue": cue}
    if split == "pairs":
        out.update(labels2=labels2, masks2=masks2)
    return out


@DATASETS.register("shapes")
def prepare(cfg: dict, size: int, seed: int):
    """Yield (split, arrays) for every split, then return the dataset's meta."""
    counts = {s: cfg[f"n_{s}"] for s in ("train", "val", "test", "ood", "pairs")}
    for split, n in counts.items():
        if n > 0:
            yield split, generate_split(cfg, size, seed, split, n)
    return {"classes": cfg["classes"], "ood_classes": cfg["ood_classes"], "has_cue": True}
