"""The `cub` adapter on a tiny CUB-shaped tree: crop to the box, labels and split from the files,
masks present or absent, every missing or broken file named."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaibench import config
from xaibench.data import prepare, read_meta, read_split
from xaibench.data.cub import crop_box

from ..cub_tree import CLASS_NAMES, colour_of, make_cub_tree
from .test_faults import assert_one_line, params_file, run_cli

SIZE = 16


def _cfg(root, **cub):
    cub = {"root": str(root), "val_fraction": 0.5, **cub}  # 2 official training images per class here
    return config.validate({"datasets": ["cub"], "data": {"image_size": SIZE, "cub": cub},
                            "train": {"variants": ["standard"]}, "metrics": {"families": ["accuracy"]}})["data"]


def _identify(image: np.ndarray) -> int:
    """The image id a prepared image was made from (its red level, see tests/cub_tree.py)."""
    v = np.median(image[..., 0])
    return int(round((v - 20) / 10))


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "raw", make_cub_tree(tmp_path / "raw")


def test_crop_keeps_exactly_the_box_and_its_mask(tree, tmp_path):
    root, truth = tree
    meta = prepare("cub", _cfg(root), tmp_path / "out")
    assert meta["has_masks"] and meta["classes"] == list(CLASS_NAMES)
    left, right = slice(1, SIZE // 2 - 1), slice(SIZE // 2 + 1, SIZE - 1)  # away from the halves' border
    for split in ("train", "val", "test"):
        data = read_split(tmp_path / "out", split)
        assert data.images.shape[1:] == (SIZE, SIZE, 3) and data.masks.shape[1:] == (SIZE, SIZE)
        for img, mask in zip(data.images.astype(int), data.masks):
            assert img[..., 2].max() < 40  # no pixel from outside the box (blue there)
            assert img[:, left, 1].min() > 215 and img[:, right, 1].max() < 40  # left half green, right not
            assert (mask[:, :SIZE // 2] == 255).all() and (mask[:, SIZE // 2:] == 0).all()  # mask moved with it


def test_without_crop_the_whole_image_is_kept(tree, tmp_path):
    root, _ = tree
    prepare("cub", _cfg(root, crop=False), tmp_path / "out")
    images = read_split(tmp_path / "out", "test").images.astype(int)
    assert ((images[..., 2] > 200) & (images[..., 0] < 40)).any(axis=(1, 2)).all()  # the blue surround is there


def test_labels_and_splits_follow_the_files(tree, tmp_path):
    root, truth = tree
    prepare("cub", _cfg(root), tmp_path / "out")
    seen = {}
    for split in ("train", "val", "test"):
        data = read_split(tmp_path / "out", split)
        ids = [_identify(img) for img in data.images]
        assert ids == sorted(ids)  # image id order
        for iid, label in zip(ids, data.labels):
            assert label == truth[iid][0], (split, iid)
            seen[iid] = split
    assert set(seen) == set(truth)
    assert {i for i, s in seen.items() if s == "test"} == {i for i, t in truth.items() if not t[1]}
    for k in range(3):  # val: half of each class's official training images, seeded
        train_k = [i for i, t in truth.items() if t[1] and t[0] == k]
        assert sum(seen[i] == "val" for i in train_k) == round(len(train_k) * 0.5)
    again = prepare("cub", _cfg(root), tmp_path / "again")
    assert again["content_sha256"] == read_meta(tmp_path / "out")["content_sha256"]
    other = prepare("cub", config.deep_merge(_cfg(root), {"seed": 1}), tmp_path / "other")
    assert other["splits"] == again["splits"]  # same sizes; which training images go to val depends on the seed


def test_first_classes_only(tree, tmp_path):
    root, truth = tree
    meta = prepare("cub", _cfg(root, num_classes=2), tmp_path / "out")
    assert meta["classes"] == list(CLASS_NAMES[:2])
    assert sum(meta["splits"].values()) == sum(t[0] < 2 for t in truth.values())
    assert set(read_split(tmp_path / "out", "test").labels) == {0, 1}


def test_segmentations_are_optional(tmp_path):
    root = tmp_path / "raw"
    make_cub_tree(root, segmentations=False)
    meta = prepare("cub", _cfg(root), tmp_path / "out")
    assert not meta["has_masks"] and read_split(tmp_path / "out", "train").masks is None
    with pytest.raises(ValueError, match=f"cub: {root / 'segmentations'} not found"):
        prepare("cub", _cfg(root, masks=True), tmp_path / "out2")
    make_cub_tree(tmp_path / "seg")  # present but switched off
    assert not prepare("cub", _cfg(tmp_path / "seg", masks=False), tmp_path / "out3")["has_masks"]


def test_crop_box_rounds_corners_and_clips():
    assert crop_box(("1.4", "2.6", "10.2", "5.0"), 20, 20) == (1, 3, 12, 8)  # corners 11.6 -> 12, 7.6 -> 8
    assert crop_box((-3.0, 15.0, 30.0, 10.0), 20, 18) == (0, 15, 20, 18)


@pytest.mark.parametrize("name", ["images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt",
                                  "bounding_boxes.txt"])
def test_missing_metadata_file_is_named(tree, tmp_path, name):
    root, _ = tree
    (root / "CUB_200_2011" / name).unlink()
    with pytest.raises(ValueError, match=f"^cub: {root}/CUB_200_2011/{name} not found$"):
        prepare("cub", _cfg(root), tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def _first_image(root):
    return sorted((root / "CUB_200_2011/images").rglob("*.jpg"))[0]


BREAKAGES = {
    "no_root": (lambda root: None, "CUB_200_2011 not found"),
    "image_missing": (lambda root: _first_image(root).unlink(), "_0001.jpg not found"),
    "image_garbage": (lambda root: _first_image(root).write_bytes(b"not a jpeg"), "_0001.jpg: unreadable image"),
    "mask_missing": (lambda root: next((root / "segmentations").rglob("*_0001.png")).unlink(), "_0001.png not found"),
    "mask_size": (lambda root: Image.new("L", (7, 7)).save(next((root / "segmentations").rglob("*_0001.png"))),
                  "mask is 7x7 but its image"),
    "bad_line": (lambda root: (root / "CUB_200_2011/bounding_boxes.txt").write_text("1 2 3\n"),
                 "bounding_boxes.txt line 1: expected '<id> x y width height'"),
    "id_without_box": (lambda root: (root / "CUB_200_2011/bounding_boxes.txt").write_text("1 1 1 5 5\n"),
                       "bounding_boxes.txt has no line for image 2"),
    "empty_box": (lambda root: (root / "CUB_200_2011/bounding_boxes.txt").write_text(
        "".join(f"{i} {'500 500' if i == 1 else '1 1'} 5 5\n" for i in range(1, 13))), "box ['500', '500', '5', '5'] of image 1"),
    "unknown_class": (lambda root: (root / "CUB_200_2011/classes.txt").write_text("1 a\n2 b\n"),
                      "image 3 has class 3"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_broken_tree_fails_naming_the_file(tmp_path, case):
    root = tmp_path / "raw"
    if case != "no_root":
        make_cub_tree(root)
    breaking, message = BREAKAGES[case]
    breaking(root)
    with pytest.raises(ValueError, match="^cub: ") as err:
        prepare("cub", _cfg(root), tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_cli_prints_the_missing_file_in_one_line(tmp_path, capsys, monkeypatch):
    make_cub_tree(tmp_path / "raw")
    (tmp_path / "raw/CUB_200_2011/train_test_split.txt").unlink()
    monkeypatch.chdir(tmp_path)
    params = params_file(tmp_path, datasets=["cub"], data={"cub": {"root": "raw"}}, train={"variants": ["standard"]})
    assert_one_line(*run_cli(["prepare", "--dataset", "cub", "--params", params], capsys),
                    "cub: raw/CUB_200_2011/train_test_split.txt not found")


def test_salience_without_masks_is_refused_at_parse_time():
    with pytest.raises(config.ConfigError, match="data.cub.masks is false"):
        config.validate({"datasets": ["cub"], "data": {"cub": {"masks": False}}})
