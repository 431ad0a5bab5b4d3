"""`folder`: any ImageFolder tree (`root/<class>/<image>`), with an optional parallel mask tree.

Masks live at `masks/<class>/<same file stem>.png` (the CYBORG human-annotation layout and the
CUB segmentation layout both fit). Images are resized to the image size (bilinear), masks with
nearest-neighbour. The split into train/val/test is a seeded stratified permutation.

Any bit depth and mode reads correctly (our choices, so every file means the same thing):
- 16-bit images and masks are scaled from 0-65535 to 0-255 (not clipped); palette images are
  looked up; transparent pixels are composited onto black (alpha x colour), like a mask's outside.
- A mask's value is its grey level; colour and palette masks take the brightest channel, so a
  mask drawn in any colour counts. Masks stored as 0/1 (any integer depth) or as 1-bit images are
  read as 0/255, so training (which scales masks to 0-1) and scoring (which thresholds at 127) see
  the same region.
- 32-bit float images are refused (their range is unknown): save them as 8- or 16-bit PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import DATASETS

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


DEEP = ("I;16", "I;16B", "I;16L", "I")  # 16-bit greyscale (Pillow opens 16-bit PNGs as I;16 or I)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's damaged-file errors
        raise ValueError(f"{path}: unreadable image ({exc}); restore it or remove it from the dataset") from None


def _layers(im: Image.Image, path: Path) -> np.ndarray:
    """float [H,W,C] in 0-255 (C = 1 or 3), transparency composited onto black."""
    if im.mode == "F":
        raise ValueError(f"{path}: 32-bit float image (range unknown); save it as an 8- or 16-bit PNG")
    if im.mode in DEEP:
        return np.asarray(im, dtype=np.float64)[..., None] * (255 / 65535)
    if im.mode == "1":
        return np.asarray(im, dtype=np.float64)[..., None] * 255
    if im.mode in ("LA", "RGBA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        return rgba[..., :3] * (rgba[..., 3:] / 255)
    if im.mode == "L":
        return np.asarray(im, dtype=np.float64)[..., None]
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def read_image(path: Path) -> Image.Image:
    """An image file as 8-bit RGB (see the module docstring for modes and bit depths)."""
    im = _open(path)
    arr = _layers(im, path)
    return Image.fromarray(np.round(np.broadcast_to(arr, arr.shape[:2] + (3,))).astype(np.uint8))


def read_mask(path: Path) -> Image.Image:
    """A mask file as 8-bit greyscale 0-255; 0/1 masks (any depth) become 0/255."""
    im = _open(path)
    if im.mode in DEEP and np.asarray(im).max() <= 1:
        arr = np.asarray(im, dtype=np.float64) * 255
    else:
        arr = _layers(im, path).max(axis=-1)
        if arr.max() <= 1:
            arr = arr * 255
    return Image.fromarray(np.round(arr).astype(np.uint8))


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
        img = read_image(path)
        images[i] = np.asarray(img.resize((size, size), Image.BILINEAR))
        if mask_root is not None:
            rel = path.relative_to(root)
            mpath = _find_mask(mask_root, rel)
            if mpath is None:
                raise FileNotFoundError(f"{mask_root / rel.with_suffix('.png')}: mask missing for image {path}")
            mask = read_mask(mpath)
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
