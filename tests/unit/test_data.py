import hashlib

import numpy as np
import pytest
from PIL import Image

from xaibench import config
from xaibench.data import prepare, read_meta, read_split


def _digest(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_shapes_same_seed_gives_identical_bytes(tmp_path, tiny_cfg):
    prepare("shapes", tiny_cfg["data"], tmp_path / "a")
    prepare("shapes", tiny_cfg["data"], tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    tiny_cfg["data"]["seed"] = 1
    prepare("shapes", tiny_cfg["data"], tmp_path / "c")
    assert _digest(tmp_path / "a")["train.npz"] != _digest(tmp_path / "c")["train.npz"]


def test_shapes_contract_and_cue(tmp_path):
    cfg = config.validate({"data": {"image_size": 32, "shapes": {"n_train": 400, "n_test": 400, "n_val": 8,
                                                                  "n_ood": 8, "n_pairs": 20, "cue_rate": 0.9}}})
    meta = prepare("shapes", cfg["data"], tmp_path)
    assert meta["splits"] == {"train": 400, "val": 8, "test": 400, "ood": 8, "pairs": 20}
    train, test = read_split(tmp_path, "train"), read_split(tmp_path, "test")
    assert train.images.shape == (400, 32, 32, 3) and train.images.dtype == np.uint8
    assert set(np.unique(train.masks)) <= {0, 255} and (train.masks > 0).mean() > 0.05
    agree_train = (train.extras["cue"] == train.labels).mean()
    agree_test = (test.extras["cue"] == test.labels).mean()
    assert 0.85 < agree_train < 0.95          # cue follows the class at cue_rate
    assert abs(agree_test - 0.25) < 0.08      # independent in test: chance for 4 classes
    pairs = read_split(tmp_path, "pairs")
    assert (pairs.labels != pairs.extras["labels2"]).all()
    assert not ((pairs.masks > 0) & (pairs.extras["masks2"] > 0)).any()
    assert (pairs.extras["masks2"] > 0).any(axis=(1, 2)).all()


def test_digits_masks_are_strokes(tmp_path):
    cfg = config.validate({"datasets": ["digits"], "data": {"image_size": 32}})
    meta = prepare("digits", cfg["data"], tmp_path)
    test = read_split(tmp_path, "test")
    assert meta["classes"] == [str(i) for i in range(10)] and sum(meta["splits"].values()) == 1797
    bright = test.images[..., 0] > 128
    assert (bright & (test.masks > 0)).sum() / bright.sum() > 0.8


def _tree(root, sizes=((20, 20),) * 3, classes=("cat", "dog"), masks=True):
    rng = np.random.default_rng(0)
    for c in classes:
        for i, (w, h) in enumerate(sizes):
            (root / "images" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / c / f"{i}.png")
            if masks:
                (root / "masks" / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray((rng.random((h, w)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / c / f"{i}.png")


def _folder_cfg(root, masks=True):
    return config.validate({"datasets": ["folder"], "data": {"image_size": 16, "folder": {
        "root": str(root / "images"), "masks": str(root / "masks") if masks else None,
        "val_fraction": 0.34, "test_fraction": 0.34}}})["data"]


def test_folder_reads_tree_with_masks(tmp_path):
    _tree(tmp_path)
    meta = prepare("folder", _folder_cfg(tmp_path), tmp_path / "out")
    assert meta["classes"] == ["cat", "dog"] and sum(meta["splits"].values()) == 6
    split = read_split(tmp_path / "out", "train")
    assert split.images.shape[1:] == (16, 16, 3) and split.masks.shape[1:] == (16, 16)
    assert read_meta(tmp_path / "out")["has_masks"]


@pytest.mark.parametrize("breakage, message", [
    ("missing", "image folder not found"),
    ("empty_class", "holds no images"),
    ("unreadable", "unreadable image"),
    ("mask_size", "mask is 10x10 but its image"),
    ("mask_missing", "mask missing"),
])
def test_folder_errors_name_the_file(tmp_path, breakage, message):
    _tree(tmp_path)
    cfg = _folder_cfg(tmp_path)
    if breakage == "missing":
        cfg["folder"]["root"] = str(tmp_path / "nope")
    elif breakage == "empty_class":
        (tmp_path / "images" / "bird").mkdir()
    elif breakage == "unreadable":
        (tmp_path / "images" / "cat" / "0.png").write_bytes(b"not a png")
    elif breakage == "mask_size":
        Image.new("L", (10, 10)).save(tmp_path / "masks" / "dog" / "1.png")
    elif breakage == "mask_missing":
        (tmp_path / "masks" / "dog" / "2.png").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        prepare("folder", cfg, tmp_path / "out")
    assert "tmp" in str(err.value) or "nope" in str(err.value)  # names a path
    assert not (tmp_path / "out" / "meta.json").exists()


def test_corrupt_split_file_is_named(tmp_path, tiny_cfg):
    prepare("shapes", tiny_cfg["data"], tmp_path)
    (tmp_path / "test.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"test.npz: corrupt"):
        read_split(tmp_path, "test")
