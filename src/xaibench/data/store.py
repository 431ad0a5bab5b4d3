"""The prepared-split format every dataset is written in (docs/architecture.md, "Data contract").

`data/prepared/{dataset}/{split}.npz` holds `images` uint8 [N,H,W,3], `labels` int64 [N] and,
where the dataset has them, `masks` uint8 [N,H,W] (0-255, the region a human would point to)
and extras (`cue`, `labels2`, `masks2`). `meta.json` holds class names, image size and the
generator settings, so a model or explanation can check it was made from the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import load_json, load_npz, save_json, save_npz

if TYPE_CHECKING:
    import torch

REQUIRED = {"images": (np.uint8, 4), "labels": (np.int64, 1)}
OPTIONAL = {"masks": (np.uint8, 3), "masks2": (np.uint8, 3), "labels2": (np.int64, 1), "cue": (np.int64, 1),
            "cue_box": (np.int64, 2)}


@dataclass
class Split:
    """One prepared split, as numpy arrays, with torch views for the model."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    extras: dict | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, idx=slice(None)) -> "torch.Tensor":
        """Images as float [B,3,H,W] in [0,1] (models normalise internally)."""
        import torch  # lazily: reading data for figures needs no torch
        return torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float().div_(255)

    def mask_tensor(self, idx=slice(None), key: str = "masks") -> "torch.Tensor | None":
        import torch
        arr = self.masks if key == "masks" else (self.extras or {}).get(key)
        return None if arr is None else torch.from_numpy(arr[idx]).float().div_(255)


MASK_KEYS = ("masks", "masks2")


def binary_masks_to_255(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks given as booleans or as 0/1 integers become 0/255 uint8, the stored scale, so that
    training (mask / 255) and scoring (mask > 127) read the same region. 0-255 masks are kept."""
    out = dict(arrays)
    for key in MASK_KEYS:
        arr = out.get(key)
        if arr is None:
            continue
        if arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.integer) and arr.size and arr.max() <= 1
                                     and arr.min() >= 0):
            out[key] = arr.astype(np.uint8) * np.uint8(255)
    return out


def write_split(root: Path, split: str, arrays: dict[str, np.ndarray]) -> None:
    arrays = binary_masks_to_255(arrays)
    _check(f"{root}/{split}.npz", arrays)
    save_npz(root / f"{split}.npz", **arrays)


def write_meta(root: Path, meta: dict) -> None:
    save_json(root / "meta.json", meta)


def _check(where: str, arrays: dict) -> None:
    for key, (dtype, ndim) in {**REQUIRED, **OPTIONAL}.items():
        if key not in arrays:
            if key in REQUIRED:
                raise ValueError(f"{where}: missing array '{key}'")
            continue
        arr = arrays[key]
        if arr.dtype != dtype or arr.ndim != ndim:
            raise ValueError(f"{where}: '{key}' must be {np.dtype(dtype).name} with {ndim} dims, got {arr.dtype} {arr.shape}")
        if len(arr) != len(arrays["labels"]):
            raise ValueError(f"{where}: '{key}' has {len(arr)} rows but 'labels' has {len(arrays['labels'])}")
    if arrays["images"].shape[-1] != 3:
        raise ValueError(f"{where}: images must be RGB [N,H,W,3], got {arrays['images'].shape}")


def read_meta(root: str | Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `xaibench prepare` for this dataset first")
    return load_json(path)


def read_split(root: str | Path, split: str) -> Split:
    path = Path(root) / f"{split}.npz"
    arrays = binary_masks_to_255(load_npz(path))
    _check(str(path), arrays)
    extras = {k: v for k, v in arrays.items() if k not in ("images", "labels", "masks")}
    return Split(split, arrays["images"], arrays["labels"], arrays.get("masks"), extras)
