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
    assert meta["splits"] == {"train": 400, "val": 8, "test": 400, "ood": 8, "pairs": 20, "nocue": 400}
    train, test = read_split(tmp_path, "train"), read_split(tmp_path, "test")
    assert train.images.shape == (400, 32, 32, 3) and train.images.dtype == np.uint8
    assert set(np.unique(train.masks)) <= {0, 255} and (train.masks > 0).mean() > 0.03
    agree_train = (train.extras["cue"] == train.labels).mean()
    agree_test = (test.extras["cue"] == test.labels).mean()
    assert 0.85 < agree_train < 0.95          # cue follows the class at cue_rate
    assert abs(agree_test - 0.25) < 0.08      # independent in test: chance for 4 classes
    pairs = read_split(tmp_path, "pairs")
    assert (pairs.labels != pairs.extras["labels2"]).all()
    assert not ((pairs.masks > 0) & (pairs.extras["masks2"] > 0)).any()
    assert (pairs.extras["masks2"] > 0).any(axis=(1, 2)).all()


@pytest.fixture(scope="module")
def shapes_64(tmp_path_factory):
    """The default generator at 64 px (default scale, contrast and cue), a few hundred images."""
    root = tmp_path_factory.mktemp("shapes64")
    cfg = config.validate({"data": {"shapes": {"n_train": 300, "n_val": 4, "n_test": 200, "n_ood": 20, "n_pairs": 60}}})
    prepare("shapes", cfg["data"], root)
    return root, cfg["data"]["shapes"]


def test_shapes_objects_never_touch_the_cue_patch_or_the_border(shapes_64):
    root, cfg = shapes_64
    side = round(cfg["cue_size"] * 64)
    for name in ("train", "test", "ood", "pairs", "nocue"):
        split = read_split(root, name)
        objects = split.masks > 0
        if "masks2" in split.extras:
            objects |= split.extras["masks2"] > 0
        assert not objects[:, :side + 1, :side + 1].any(), name     # never on the patch (1 px margin)
        assert not objects[:, [0, -1]].any() and not objects[:, :, [0, -1]].any(), name  # never on the border
        assert objects.any(axis=(1, 2)).all(), name
        if name != "nocue":
            assert (split.extras["cue_box"] == [0, 0, side, side]).all()
            patch = split.images[:, :side, :side].reshape(len(split), -1, 3)
            assert (patch == patch[:, :1]).all()                       # one flat colour per patch


def test_shapes_have_no_centre_bias(shapes_64):
    test = read_split(shapes_64[0], "test")
    assert (test.masks[:, 32, 32] > 0).mean() < 0.3                  # was ~0.98 with centred objects
    ys, xs = np.nonzero(test.masks.any(axis=0))
    assert xs.min() < 16 and xs.max() > 48 and ys.min() < 16 and ys.max() > 48


def test_shapes_contrast_at_least_the_minimum(shapes_64):
    root, cfg = shapes_64
    side = round(cfg["cue_size"] * 64)
    for name in ("train", "pairs"):
        split = read_split(root, name)
        img = split.images / 255.0
        objs = [split.masks > 0] + ([split.extras["masks2"] > 0] if name == "pairs" else [])
        background = ~np.any(objs, axis=0)
        background[:, :side, :side] = False
        for m in objs:
            for i in range(len(split)):
                gap = np.linalg.norm(img[i][m[i]].mean(0) - img[i][background[i]].mean(0))
                assert gap >= cfg["min_contrast"] - 0.005, (name, i, gap)


def test_nocue_is_test_without_the_patch(shapes_64):
    root, cfg = shapes_64
    side = round(cfg["cue_size"] * 64)
    test, nocue = read_split(root, "test"), read_split(root, "nocue")
    assert (nocue.extras["cue"] == -1).all() and not nocue.extras["cue_box"].any()
    np.testing.assert_array_equal(nocue.labels, test.labels)
    np.testing.assert_array_equal(nocue.masks, test.masks)
    outside = np.ones((64, 64), bool)
    outside[:side, :side] = False
    np.testing.assert_array_equal(nocue.images[:, outside], test.images[:, outside])
    patch = nocue.images[:, :side, :side].reshape(len(nocue), -1, 3)
    assert (patch != patch[:, :1]).any(axis=(1, 2)).all()              # textured background, no flat patch


def test_shapes_cue_size_zero_means_no_patch(tmp_path):
    cfg = config.validate({"data": {"image_size": 32, "shapes": {"n_train": 16, "n_val": 4, "n_test": 8,
                                                                  "n_ood": 0, "n_pairs": 0, "cue_size": 0}}})
    meta = prepare("shapes", cfg["data"], tmp_path)
    train = read_split(tmp_path, "train")
    assert not meta["has_cue"] and (train.extras["cue"] == -1).all() and not train.extras["cue_box"].any()


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
        "val_fraction": 0.34, "test_fraction": 0.34}}, "metrics": {"families": ["accuracy"]}})["data"]


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
