"""`shapes`: the embedded default dataset, with ground truth for every explanation.

Seeded procedural RGB images: one shape (the class) at a random position, size, rotation and colour
on a textured background; the object mask is the ground-truth salience. Designed so a small CNN can
learn the shape (docs/results.md, "Calibrating the testbed"):

- the object lies anywhere the cue patch is not (no centre bias, never touching the border), so a
  fixed map cannot score well on localisation and a map of the cue never overlaps the mask;
- its radius (`scale`, fraction of the side) keeps it well inside the small CNN's receptive field
  (38 px at 64 px input: a diameter of at most ~0.5 of the side);
- its mean colour differs from the mean background colour by at least `min_contrast` (Euclidean
  distance in RGB, 0-1 units), measured on the written pixels.

The planted spurious cue is a square patch of side `cue_size` (fraction of the side; 0 = no patch)
in the top-left corner, coloured with the cue class's colour. The cue class equals the label with
probability `cue_rate` in train/val and is drawn uniformly (independent of the label) in test, ood
and pairs, so accuracy on cue-conflicting test images tells how much a model leans on the cue.
`nocue` holds the test images themselves without the patch (same random stream, the background
left unpainted there), so test and nocue differ only by the patch. Every split stores `cue`
(the patch's class, -1 where there is none) and `cue_box` [N,4] (y0, x0, y1, x1 of the patch in
pixels; all 0 where there is none). `ood` holds shapes of classes never trained on; `pairs` holds
two non-overlapping objects of different classes, each with its own mask.
"""
from __future__ import annotations

import numpy as np

from . import DATASETS

# Distinct, saturated cue colours (RGB 0-1), one per class index.
CUE_COLOURS = np.array([
    [1.0, 0.1, 0.1], [0.1, 0.4, 1.0], [1.0, 0.9, 0.0], [0.0, 0.85, 0.3],
    [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0],
])
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "ood": 3, "pairs": 4, "nocue": 2}  # nocue: test's own stream
EXTENT = 1.15  # every shape lies within EXTENT x its radius of its centre (the square's corners: 0.8·√2)
MAX_TRIES = 1000


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


def _place(rng, size: int, radii: list[float], cue_px: int) -> list[tuple[float, float]]:
    """Centres for objects of these radii: inside the image, off the cue patch, not touching each other."""
    for _ in range(MAX_TRIES):
        centres = []
        for radius in radii:
            reach = EXTENT * radius
            cx, cy = rng.uniform(reach, size - reach, 2)
            if cue_px and np.hypot(max(cx - cue_px, 0), max(cy - cue_px, 0)) <= reach + 1:
                break
            if any(np.hypot(cx - ox, cy - oy) <= reach + EXTENT * r + 1 for (ox, oy), r in zip(centres, radii)):
                break
            centres.append((cx, cy))
        else:
            return centres
    raise ValueError(f"shapes: no room for objects of radius {max(radii):.1f} px beside the cue patch "
                     f"({cue_px} px) in a {size} px image; lower `scale` or `cue_size`")


def _shape(rng, kind, yy, xx, cx, cy, radius) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi)
    du, dv = (xx - cx) / radius, (yy - cy) / radius
    return shape_mask(kind, du * np.cos(theta) + dv * np.sin(theta), -du * np.sin(theta) + dv * np.cos(theta))


def _paint(rng, img, objects: list[np.ndarray], background: np.ndarray, min_contrast: float) -> None:
    """Colour each object so its mean differs from the mean background colour by >= min_contrast."""
    bg_mean = img[background].mean(0)
    for m in objects:
        for _ in range(MAX_TRIES):
            pix = np.round(np.clip(rng.uniform(0, 1, 3) + rng.normal(0, 0.04, (m.sum(), 3)), 0, 1) * 255) / 255
            if np.linalg.norm(pix.mean(0) - bg_mean) >= min_contrast:
                break
        else:
            raise ValueError(f"shapes: min_contrast {min_contrast} unreachable on this background")
        img[m] = pix


def generate_split(cfg: dict, size: int, seed: int, split: str, n: int) -> dict[str, np.ndarray]:
    """Arrays of one split in the prepared format; the same (cfg, seed, split) gives the same bytes."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    classes, cue_rate = cfg["classes"], cfg["cue_rate"]
    k = len(classes)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    cue_px = int(round(cfg["cue_size"] * size)) if cfg["cue_size"] > 0 else 0
    if cfg["cue_size"] > 0 and cue_px < 2:
        raise ValueError(f"shapes: cue_size {cfg['cue_size']} gives a patch under 2 px at {size} px")
    lo, hi = cfg["scale"]
    if not 0 < lo <= hi:
        raise ValueError(f"shapes: scale must be [low, high] with 0 < low <= high, got {cfg['scale']}")
    paint_cue = cue_px > 0 and split != "nocue"
    two = split == "pairs"
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    labels = np.zeros(n, np.int64)
    cue = np.full(n, -1, np.int64)
    cue_box = np.zeros((n, 4), np.int64)
    masks2 = np.zeros((n, size, size), np.uint8) if two else None
    labels2 = np.zeros(n, np.int64) if two else None
    for i in range(n):
        img = _background(rng, size, yy, xx)
        if two:
            a, b = rng.choice(k, 2, replace=False)
            names, picks = classes, (a, b)
        else:
            names = cfg["ood_classes"] if split == "ood" else classes
            picks = (rng.integers(len(names)),)
        radii = [rng.uniform(lo, hi) * size * (0.8 if two else 1) for _ in picks]  # two need room side by side
        objects = [_shape(rng, names[c], yy, xx, cx, cy, r)
                   for c, r, (cx, cy) in zip(picks, radii, _place(rng, size, radii, cue_px))]
        background = ~np.any(objects, axis=0)
        background[:cue_px, :cue_px] = False
        _paint(rng, img, objects, background, cfg["min_contrast"])
        labels[i] = picks[0]
        if split in ("train", "val"):
            cue_class = labels[i] if rng.random() < cue_rate else (labels[i] + rng.integers(1, k)) % k
        else:
            cue_class = rng.integers(k)
        if paint_cue:
            img[:cue_px, :cue_px] = CUE_COLOURS[cue_class % len(CUE_COLOURS)]
            cue[i], cue_box[i] = cue_class, (0, 0, cue_px, cue_px)
        images[i] = np.round(img * 255).astype(np.uint8)
        masks[i] = objects[0] * 255
        if two:
            labels2[i], masks2[i] = picks[1], objects[1] * 255
    out = {"images": images, "labels": labels, "masks": masks, "cue": cue, "cue_box": cue_box}
    if two:
        out.update(labels2=labels2, masks2=masks2)
    return out


@DATASETS.register("shapes")
def prepare(cfg: dict, size: int, seed: int):
    """Yield (split, arrays) for every split, then return the dataset's meta."""
    counts = {s: cfg[f"n_{s}"] for s in ("train", "val", "test", "ood", "pairs")}
    counts["nocue"] = counts["test"]  # the test images without the patch
    for split, n in counts.items():
        if n > 0:
            yield split, generate_split(cfg, size, seed, split, n)
    return {"classes": cfg["classes"], "ood_classes": cfg["ood_classes"], "has_cue": cfg["cue_size"] > 0}
