"""Paper D families (perturbation, segmentation, perclass) on tiny real data and a trained model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from xaibench import catalog, config, explain, metrics, paths
from xaibench.data import prepare, read_split
from xaibench.data.store import load_npz, write_split
from xaibench.io import load_explanation
from xaibench.metrics.localization import relevance_mass
from xaibench.metrics.perturbation import auc, perturbation_curves
from xaibench.metrics.segmentation import segmentation_scores
from xaibench.training.fit import load_model, train

from tests.conftest import TINY

METHODS = ["gradcam", "agf", "gxi"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny data (test image 0 with an empty mask), one trained model, saved test maps."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("agf_families")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = config.validate(copy.deepcopy(TINY))
        cfg["train"]["epochs"] = 1
        cfg["explain"]["methods"] = list(METHODS)
        prepared = paths.prepared("shapes")
        prepare("shapes", cfg["data"], prepared)
        arrays = dict(load_npz(prepared / "test.npz"))
        arrays["masks"][0] = 0
        write_split(prepared, "test", arrays)
        out = paths.model_dir("shapes", "standard", 0)
        train(cfg, prepared, "standard", 0, out, "cpu")
        model, _ = load_model(out / "model.pt")
        split = read_split(prepared, "test")
        for method in METHODS:
            arrays = explain.explain_split(model, split, method, "predicted", 32, "cpu")
            explain.save(paths.explanation("shapes", "standard", 0, method, "test"), arrays)
        yield cfg, model.eval(), split


def _ctx(cfg, **metric_settings):
    cfg = copy.deepcopy(cfg)
    for family, values in metric_settings.items():
        cfg["metrics"][family].update(values)
    return metrics.Context(cfg, "shapes", "standard", [0])


def _values(frame, **where):
    sel = np.ones(len(frame), bool)
    for k, v in where.items():
        sel &= (frame[k] == v).to_numpy()
    return frame[sel].sort_values("image")["value"].to_numpy()


def test_families_are_catalogued_with_directions():
    for family in ("perturbation", "segmentation", "perclass"):
        assert catalog.FAMILIES[family]["applies_to"] == "plain_layers"
        assert callable(metrics.FAMILIES.get(family))
    assert catalog.direction("perturbation", "positive_auc") == "lower"
    assert catalog.direction("perturbation", "negative_auc") == "higher"
    assert catalog.direction("perclass", "mass_on_other") == "lower"
    # lap models lack plain layers: no rows
    frame = metrics.run("segmentation", metrics.Context(config.validate(copy.deepcopy(TINY)), "shapes", "lap", [0]))
    assert frame.empty


def test_perturbation_rows_label_maps_and_auc(project):
    cfg, model, split = project
    frame = metrics.run("perturbation", _ctx(cfg, perturbation={"max_images": 20}))
    assert set(frame.method) == {*METHODS, "baseline_random", "baseline_oracle"}
    assert set(frame.setting) == {"predicted", "label"}
    for method in set(frame.method):
        for kind in ("predicted", "label"):
            curve = np.stack([_values(frame, method=method, metric="positive_accuracy", setting=kind, level=p)
                              for p in cfg["metrics"]["perturbation"]["fractions"]], 1)
            assert curve.shape == (20, 9)
            area = _values(frame, method=method, metric="positive_auc", setting=kind)
            np.testing.assert_allclose(area, auc(cfg["metrics"]["perturbation"]["fractions"], torch.tensor(curve)).numpy(),
                                       atol=1e-6)
    # true-class maps: the saved map where the prediction is right, a recomputed one elsewhere
    x, labels = split.tensors(slice(0, 20)), torch.from_numpy(split.labels[:20])
    maps = explain.maps_for(model, x, labels, "agf")
    pcfg = cfg["metrics"]["perturbation"]
    want = perturbation_curves(model, x, labels, maps, order="negative", baseline=pcfg["baseline"], seed=0,
                               blur_sigma=pcfg["blur_sigma"]).float()
    got = np.stack([_values(frame, method="agf", metric="negative_accuracy", setting="label", level=p)
                    for p in cfg["metrics"]["perturbation"]["fractions"]], 1)
    preds = model(x).argmax(1)
    wrong = (preds != labels).numpy()
    assert wrong.any() and (~wrong).any()
    np.testing.assert_array_equal(got[wrong], want.numpy()[wrong])
    # right predictions: label maps are the saved ones, identical rows in both settings
    pred_rows = np.stack([_values(frame, method="agf", metric="negative_accuracy", setting="predicted", level=p)
                          for p in cfg["metrics"]["perturbation"]["fractions"]], 1)
    np.testing.assert_array_equal(got[~wrong], pred_rows[~wrong])


def test_perturbation_fill_settings_reach_the_curves(project):
    cfg, model, split = project
    fill = {"baseline": "road", "road_noise": 0.3}
    ctx = _ctx(cfg, perturbation={"max_images": 6, **fill})
    ctx.cfg["metrics"]["methods"]["perturbation"] = []            # reference lines only
    frame = metrics.run("perturbation", ctx)
    x, labels = split.tensors(slice(0, 6)), torch.from_numpy(split.labels[:6])
    oracle = torch.from_numpy(split.masks[:6] > 127).float()
    want = perturbation_curves(model, x, labels, oracle, order="positive", seed=0, **fill).float()
    got = np.stack([_values(frame, method="baseline_oracle", metric="positive_accuracy", setting="predicted", level=p)
                    for p in cfg["metrics"]["perturbation"]["fractions"]], 1)
    np.testing.assert_array_equal(got, want.numpy())


def test_segmentation_oracle_nan_and_agf_threshold(project):
    cfg, _, split = project
    frame = metrics.run("segmentation", _ctx(cfg))
    assert set(frame.method) == {*METHODS, "baseline_random", "baseline_oracle", "baseline_uniform"}
    for metric in ("pixel_accuracy", "miou", "map", "map_continuous"):
        oracle = _values(frame, method="baseline_oracle", metric=metric)
        assert np.isnan(oracle[0]) and np.allclose(oracle[1:], 1.0), metric
        for method in set(frame.method):
            assert np.isnan(_values(frame, method=method, metric=metric)[0])  # empty mask -> NaN everywhere
    chance = _values(frame, method="baseline_random", metric="pixel_accuracy")[1:]
    assert 0.4 < chance.mean() < 0.6
    masks = torch.from_numpy(split.masks) > 127
    for method, threshold in (("agf", "zero"), ("gradcam", "mean"), ("gxi", "mean")):
        maps = torch.from_numpy(load_explanation(paths.explanation("shapes", "standard", 0, method, "test"))["maps"]).float()
        want = segmentation_scores(maps[1:], masks[1:], threshold)["miou"].numpy()
        np.testing.assert_allclose(_values(frame, method=method, metric="miou")[1:], want, rtol=1e-5)


def test_perclass_oracle_chance_and_second_class_maps(project):
    cfg, model, _ = project
    frame = metrics.run("perclass", _ctx(cfg))
    pairs = read_split(paths.prepared("shapes"), "pairs")
    n = len(pairs)
    assert set(frame.method) == {*METHODS, "baseline_random", "baseline_oracle"} and set(frame.split) == {"pairs"}
    for kind in ("top", "second"):
        assert np.allclose(_values(frame, method="baseline_oracle", metric="mass_on_explained", setting=kind), 1)
        assert np.allclose(_values(frame, method="baseline_oracle", metric="mass_on_other", setting=kind), 0)
        assert np.allclose(_values(frame, method="baseline_oracle", metric="object_preference", setting=kind), 1)
        pref = _values(frame, method="baseline_random", metric="object_preference", setting=kind)
        assert len(pref) == n and 0.2 < np.nanmean(pref) < 0.8
    # the second class's map is the explainer's map of that class, scored on that class's object
    x = pairs.tensors()
    a, b = torch.from_numpy(pairs.labels), torch.from_numpy(pairs.extras["labels2"])
    ma, mb = torch.from_numpy(pairs.masks) > 127, torch.from_numpy(pairs.extras["masks2"]) > 127
    with torch.no_grad():
        z = model(x)
    a_top = z.gather(1, a[:, None])[:, 0] >= z.gather(1, b[:, None])[:, 0]
    second = torch.where(a_top, b, a)
    own = torch.where(a_top[:, None, None], mb, ma)
    maps = explain.maps_for(model, x, second, "agf")
    np.testing.assert_allclose(_values(frame, method="agf", metric="mass_on_explained", setting="second"),
                               relevance_mass(maps.clamp_min(0), own).numpy(), rtol=1e-4, atol=1e-6)


def test_methods_setting_restricts_a_family(project):
    cfg, _, _ = project
    cfg = copy.deepcopy(cfg)
    cfg["metrics"]["methods"] = {"segmentation": ["gradcam"]}
    frame = metrics.run("segmentation", metrics.Context(cfg, "shapes", "standard", [0]))
    assert set(frame.method) == {"gradcam", "baseline_random", "baseline_oracle", "baseline_uniform"}
    assert metrics.Context(cfg, "shapes", "standard", [0]).methods == METHODS  # no family: all


def test_agf_options_pass_through_explain_settings():
    assert explain.check_options("agf", {"precision": "model"}) == {"precision": "model"}
    with pytest.raises(ValueError, match="steps"):
        explain.check_options("gxi", {"steps": 3})

