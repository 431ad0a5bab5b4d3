"""A tiny CUB-200-2011-shaped tree (the distributed layout, real JPEGs and PNG masks) for tests.

Each image encodes its own id so a test can tell which file a prepared image came from: outside
its bird box it is blue; inside, the left half of the box is (v, 255, 0) and the right half (v, 0, 0),
with v = 20 + 10 * id. Its segmentation marks the left half of the box (255), elsewhere 0.
Image ids interleave the classes, so label order is not id order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def colour_of(image_id: int) -> int:
    return 20 + 10 * image_id


def make_cub_tree(root: Path, per_class: int = 4, segmentations: bool = True, n_classes: int = 3) -> dict:
    """Write root/CUB_200_2011/... (+ root/segmentations/...); return {id: (class index, is_train, box)}."""
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    truth, lines = {}, {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    for n in range(per_class * n_classes):
        iid, k = n + 1, n % n_classes  # interleaved classes
        h, w = int(rng.integers(40, 60)), int(rng.integers(40, 60))
        bw, bh = 2 * int(rng.integers(8, w // 3)), int(rng.integers(10, h - 10))  # even width: halves
        x, y = int(rng.integers(1, w - bw)), int(rng.integers(1, h - bh))
        img = np.zeros((h, w, 3), np.uint8)
        img[...] = (0, 0, 255)
        img[y:y + bh, x:x + bw] = (colour_of(iid), 0, 0)
        img[y:y + bh, x:x + bw // 2, 1] = 255
        mask = np.zeros((h, w), np.uint8)
        mask[y:y + bh, x:x + bw // 2] = 255
        rel = f"{CLASS_NAMES[k]}/{CLASS_NAMES[k].split('.')[1]}_{iid:04d}.jpg"
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(base / "images" / rel, quality=100, subsampling=0)
        if segmentations:
            mpath = root / "segmentations" / Path(rel).with_suffix(".png")
            mpath.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mpath)
        is_train = (n // n_classes) % 2 == 0  # half of each class's images train, half test
        truth[iid] = (k, is_train, (x, y, bw, bh))
        lines["images"].append(f"{iid} {rel}")
        lines["image_class_labels"].append(f"{iid} {k + 1}")
        lines["train_test_split"].append(f"{iid} {int(is_train)}")
        lines["bounding_boxes"].append(f"{iid} {x}.0 {y}.0 {bw}.0 {bh}.0")
    lines["classes"] = [f"{k + 1} {name}" for k, name in enumerate(CLASS_NAMES[:n_classes])]
    for name, rows in lines.items():
        (base / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return truth
