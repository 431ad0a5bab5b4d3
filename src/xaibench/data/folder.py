"""`folder`: any ImageFolder tree (`root/<class>/<image>`), with an optional parallel mask tree.

Masks live at `masks/<class>/<same file stem>.png` (the CYBORG human-annotation layout and the
CUB segmentation layout both fit). Images are resized to the image size (bilinear), masks with
nearest-neighbour. The split into train/val/test is a seeded stratified permutation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import DATASETS

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: unreadable image ({exc})") from None


def _find_mask(mask_root: Path, rel: Path) -> Path | None:
    for ext in (".png", rel.suffix):
        cand = mask_root / rel.with_suffix(ext)
        if cand.is_file():
            return cand
    return None


def scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found; expected {root}/<class>/<image>.png "
                                "(place your data there or `dvc pull` it)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root}: needs at least 2 class folders, found {len(classes)}")
    items = []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise ValueError(f"{root / name}: class folder holds no images ({', '.join(sorted(EXTENSIONS))})")
        items += [(f, k) for f in files]
    return classes, items


@DATASETS.register("folder")
def prepare(cfg: dict, size: int, seed: int):
    root = Path(cfg["root"])
    mask_root = Path(cfg["masks"]) if cfg["masks"] else None
    if mask_root is not None and not mask_root.is_dir():
        raise FileNotFoundError(f"{mask_root}: mask folder not found (set data.folder.masks: null if there are none)")
    classes, items = scan(root)
    images = np.zeros((len(items), size, size, 3), np.uint8)
    masks = np.zeros((len(items), size, size), np.uint8) if mask_root else None
    labels = np.array([k for _, k in items], np.int64)
    for i, (path, _) in enumerate(items):
        img = _open(path, "RGB")
        images[i] = np.asarray(img.resize((size, size), Image.BILINEAR))
        if mask_root is not None:
            rel = path.relative_to(root)
            mpath = _find_mask(mask_root, rel)
            if mpath is None:
                raise FileNotFoundError(f"{mask_root / rel.with_suffix('.png')}: mask missing for image {path}")
            mask = _open(mpath, "L")
            if mask.size != img.size:
                raise ValueError(f"{mpath}: mask is {mask.size[0]}x{mask.size[1]} but its image {path} is "
                                 f"{img.size[0]}x{img.size[1]}")
            masks[i] = np.asarray(mask.resize((size, size), Image.NEAREST))
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for k in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_test = int(round(len(idx) * cfg["test_fraction"]))
        n_val = int(round(len(idx) * cfg["val_fraction"]))
        parts["test"] += list(idx[:n_test])
        parts["val"] += list(idx[n_test:n_test + n_val])
        parts["train"] += list(idx[n_test + n_val:])
    for split, idx in parts.items():
        if not idx:
            raise ValueError(f"{root}: too few images for a non-empty '{split}' split; add images or change the fractions")
        idx = np.sort(np.array(idx))
        arrays = {"images": images[idx], "labels": labels[idx]}
        if masks is not None:
            arrays["masks"] = masks[idx]
        yield split, arrays
    return {"classes": classes, "has_cue": False}
