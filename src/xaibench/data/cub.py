"""`cub`: CUB-200-2011 read as distributed, cropped to the bird boxes as paper A does.

Paper A (research/misalignment.md §1, §5) follows the ProtoPNet recipe (cfchen-duke/ProtoPNet
README.txt): crop every image to its `bounding_boxes.txt` box, split with `train_test_split.txt`,
resize to 224x224 (torchvision `Resize((224, 224))`: both sides, aspect ratio not kept). Neither
repository ships the crop code, so the pixel rounding is ours: the box corners (x, y) and
(x + w, y + h) are rounded to whole pixels, as PIL's `crop` does with the float boxes the common
crop scripts pass it, and clipped to the image (`crop_box`).

Layout under `data.cub.root` (nothing is downloaded; docs/protopnet.md says where to get it):
    CUB_200_2011/{images,image_class_labels,classes,train_test_split,bounding_boxes}.txt
    CUB_200_2011/images/<class dir>/<file>.jpg
    segmentations/<class dir>/<file>.png   optional, a separate download (also accepted inside
                                           CUB_200_2011/); used as the `masks` of the data contract
Masks are cropped and resized with their image (nearest neighbour) and kept at their grey levels,
read like `folder`'s masks (any mode or bit depth; scoring thresholds at 127, training scales to 0-1).
They are what localisation metrics and mask-trained variants compare maps with; paper A's variants
and its benchmark do not use them.

Splits: `test` = the official test images; `val` = a seeded per-class `val_fraction` of the
official training images (the reference has no validation set and trains on all 5,994); `train` =
the rest. Labels are 0-based in classes.txt order; `num_classes` keeps the first N classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import read_text
from . import DATASETS
from .folder import read_image, read_mask

FILES = {"images.txt": ("path",), "image_class_labels.txt": ("class",), "classes.txt": ("name",),
         "train_test_split.txt": ("is_train",), "bounding_boxes.txt": ("x", "y", "width", "height")}
MASK_DIRS = ("segmentations", "CUB_200_2011/segmentations")  # under root, in this order


def _table(path: Path) -> dict[int, list[str]]:
    """id -> the other fields of a CUB metadata file (`<id> <field> ...` per line)."""
    if not path.is_file():
        raise ValueError(f"cub: {path} not found")
    width = len(FILES[path.name])
    rows = {}
    for n, line in enumerate(read_text(path, fix="restore it from the CUB-200-2011 archive").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != width + 1 or not parts[0].isdigit():
            raise ValueError(f"cub: {path} line {n}: expected '<id> {' '.join(FILES[path.name])}', got {line!r}")
        rows[int(parts[0])] = parts[1:]
    if not rows:
        raise ValueError(f"cub: {path} is empty")
    return rows


def crop_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) in pixels -> (left, top, right, bottom), corners rounded, clipped to the image."""
    x, y, w, h = (float(v) for v in box)
    left, top = min(max(round(x), 0), width), min(max(round(y), 0), height)
    right, bottom = min(max(round(x + w), 0), width), min(max(round(y + h), 0), height)
    return left, top, right, bottom


def read_metadata(base: Path, num_classes: int | None):
    """Class names and, per kept image id (ascending): relative path, label, official split, box."""
    tables = {name: _table(base / name) for name in FILES}
    class_ids = sorted(tables["classes.txt"])[:num_classes]
    label_of = {cid: k for k, cid in enumerate(class_ids)}
    names = [tables["classes.txt"][cid][0] for cid in class_ids]
    items = []
    for iid in sorted(tables["images.txt"]):
        for name in FILES:
            if name != "classes.txt" and iid not in tables[name]:
                raise ValueError(f"cub: {base / name} has no line for image {iid} ({tables['images.txt'][iid][0]})")
        cid = int(tables["image_class_labels.txt"][iid][0])
        if cid not in tables["classes.txt"]:
            raise ValueError(f"cub: {base / 'image_class_labels.txt'}: image {iid} has class {cid}, "
                             f"which {base / 'classes.txt'} does not list")
        if cid in label_of:
            items.append((iid, tables["images.txt"][iid][0], label_of[cid],
                          tables["train_test_split.txt"][iid][0] == "1", tables["bounding_boxes.txt"][iid]))
    return names, items


def _mask_root(root: Path, masks) -> Path | None:
    found = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if masks is True and found is None:
        raise ValueError(f"cub: {root / MASK_DIRS[0]} not found (data.cub.masks: true needs the segmentations; "
                         "set it to auto or false to run without)")
    return found if masks else None


def _read(reader, path: Path) -> Image.Image:
    """folder's readers (any mode and bit depth; unreadable files named), errors prefixed `cub:`."""
    try:
        return reader(path)
    except ValueError as exc:
        raise ValueError(f"cub: {exc}") from None


def _load(base: Path, mask_root: Path | None, items, size: int, crop: bool) -> dict[str, np.ndarray]:
    images = np.zeros((len(items), size, size, 3), np.uint8)
    masks = np.zeros((len(items), size, size), np.uint8) if mask_root else None
    for i, (iid, rel, _, _, box) in enumerate(items):
        path = base / "images" / rel
        if not path.is_file():
            raise ValueError(f"cub: {path} not found (image {iid} of {base / 'images.txt'})")
        img = _read(read_image, path)
        region = crop_box(box, *img.size) if crop else (0, 0, *img.size)
        if region[2] <= region[0] or region[3] <= region[1]:
            raise ValueError(f"cub: {base / 'bounding_boxes.txt'}: box {box} of image {iid} ({rel}) is empty "
                             f"inside its {img.size[0]}x{img.size[1]} image")
        images[i] = np.asarray(img.crop(region).resize((size, size), Image.BILINEAR))
        if masks is not None:
            mpath = mask_root / Path(rel).with_suffix(".png")
            if not mpath.is_file():
                raise ValueError(f"cub: {mpath} not found (segmentation of image {iid}; "
                                 "set data.cub.masks: false to run without masks)")
            mask = _read(read_mask, mpath)
            if mask.size != img.size:
                raise ValueError(f"cub: {mpath}: mask is {mask.size[0]}x{mask.size[1]} but its image {path} is "
                                 f"{img.size[0]}x{img.size[1]}")
            masks[i] = np.asarray(mask.crop(region).resize((size, size), Image.NEAREST))
    arrays = {"images": images, "labels": np.array([it[2] for it in items], np.int64)}
    if masks is not None:
        arrays["masks"] = masks
    return arrays


@DATASETS.register("cub")
def prepare(cfg: dict, size: int, seed: int):
    root = Path(cfg["root"])
    base = root / "CUB_200_2011"
    if not base.is_dir():
        raise ValueError(f"cub: {base} not found; place the unpacked CUB_200_2011 folder under data.cub.root "
                         "(docs/protopnet.md, 'Getting CUB-200-2011')")
    names, items = read_metadata(base, cfg["num_classes"])
    if len(names) < 2:
        raise ValueError(f"cub: {base / 'classes.txt'} lists {len(names)} class(es); at least 2 are needed")
    mask_root = _mask_root(root, cfg["masks"])
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": [it for it in items if not it[3]]}
    for k in range(len(names)):
        pool = [it for it in items if it[3] and it[2] == k]
        order = rng.permutation(len(pool))
        n_val = int(round(len(pool) * cfg["val_fraction"]))
        parts["val"] += [pool[j] for j in order[:n_val]]
        parts["train"] += [pool[j] for j in order[n_val:]]
    for split, chosen in parts.items():
        if not chosen:
            raise ValueError(f"cub: {base}: no images for the '{split}' split "
                             "(check train_test_split.txt, data.cub.num_classes and data.cub.val_fraction)")
        chosen.sort(key=lambda it: it[0])  # image id order, whatever the permutation
        yield split, _load(base, mask_root, chosen, size, cfg["crop"])
    return {"classes": names, "has_cue": False}
