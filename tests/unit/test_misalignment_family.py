"""The `misalignment` family (paper A) on a tiny trained ProtoPNet: tidy rows, directions, analytic zero."""
import copy

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from xaibench import catalog, config, metrics, paths
from xaibench.data import prepare
from xaibench.training import protopnet as tp

torch.set_num_threads(1)
PCFG = {"backbone": "scratch", "prototypes_per_class": 2, "prototype_dim": 8, "epochs": 2, "warm_epochs": 1, "push_start": 5,
        "last_layer_epochs": 1, "batch_size": 32, "seeds": [0]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("mis")
    cfg = copy.deepcopy(TINY)
    cfg["train"]["protopnet"] = dict(PCFG)
    cfg["metrics"] = {"misalignment": {"iters": 3, "step": 0.15, "max_images": 20, "batch_size": 8}}
    cfg = config.validate(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        prepare("shapes", cfg["data"], paths.prepared("shapes"))
        tp.train(cfg, paths.prepared("shapes"), "protopnet", 0, paths.model_dir("shapes", "protopnet", 0), device="cpu")
    return root, cfg


def _run(project, monkeypatch, variant="protopnet", **settings):
    root, cfg = project
    monkeypatch.chdir(root)
    cfg = copy.deepcopy(cfg)
    cfg["metrics"]["misalignment"].update(settings)
    return metrics.run("misalignment", metrics.Context(cfg, "shapes", variant, [0]))


def test_rows_and_directions(project, monkeypatch):
    frame = _run(project, monkeypatch)
    assert set(frame.setting) == {"noise", "pgd"} and set(frame.method) == {"proto"} and set(frame.split) == {"test"}
    assert set(frame.metric) == {"PAC", "PRC", "PLC", "AC", "accuracy_before", "accuracy_after"}
    assert (frame.groupby(["setting", "metric"]).size() == 20).all()  # max_images, across 3 batches of 8
    for metric in ("PAC", "PRC", "PLC", "AC"):
        assert catalog.direction("misalignment", metric) == "lower"
    wide = frame.pivot_table(index=["setting", "image"], columns="metric", values="value")
    np.testing.assert_allclose(wide.AC, wide.accuracy_before - wide.accuracy_after)
    assert ((wide.PLC >= 0) & (wide.PLC <= 100)).all()
    mean = frame.groupby(["setting", "metric"]).value.mean()
    assert mean[("pgd", "PAC")] > mean[("noise", "PAC")]  # a real attack lowers the activation more
    again = _run(project, monkeypatch)
    assert frame.equals(again)  # seeded by batch position


def test_zero_strength_scores_zero(project, monkeypatch):
    frame = _run(project, monkeypatch, eps=0.0)
    for metric in ("PAC", "PRC", "PLC", "AC"):
        assert (frame[frame.metric == metric].value == 0).all(), metric


def test_only_for_prototype_models(project, monkeypatch):
    frame = _run(project, monkeypatch, variant="standard")  # no `prototype_layer` capability: no rows, no model read
    assert frame.empty


def test_seed_subset_is_checked():
    cfg = copy.deepcopy(TINY)
    cfg["train"]["protopnet"] = {"seeds": [0, 5]}
    with pytest.raises(config.ConfigError, match=r"train.protopnet.seeds: seeds \[5\] are not in train.seeds"):
        config.validate(cfg)
    cfg["train"]["protopnet"] = {"seeds": [1]}
    assert catalog.seeds_for(config.validate(cfg), "protopnet_comp") == [1]
