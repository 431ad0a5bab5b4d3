"""Paper B wired into the pipeline: the `generate` step, the `activations` family, the featviz settings."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench import catalog, cli, config, metrics, paths
from xaibench.io import load_npz

FAST = {"prototype": {"steps": 25, "baseline_steps": 15}, "fourier_fv": {"steps": 25}, "pixel_ascent": {"steps": 25}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny prepared shapes data, one trained standard model, and its generated images (via the CLI)."""
    import copy
    import os

    from tests.conftest import TINY
    from xaibench.data import prepare
    root = tmp_path_factory.mktemp("wire_b")
    cwd = os.getcwd()
    os.chdir(root)
    torch.set_num_threads(1)
    cfg = config.validate(copy.deepcopy(TINY) | {"featviz": {"options": FAST}})
    cfg["train"]["variants"] = ["standard", "salience"]
    prepare("shapes", cfg["data"], paths.prepared("shapes"))
    try:
        assert cli.main(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "0",
                         "--config", json.dumps(cfg)]) == 0
        assert cli.main(["generate", "--dataset", "shapes", "--variant", "standard", "--seed", "0",
                         "--config", json.dumps(cfg)]) == 0
        yield root, cfg
    finally:
        os.chdir(cwd)


def test_generate_step_writes_npz_and_grid(project):
    root, cfg = project
    arrays = load_npz(root / paths.prototypes("shapes", "standard", 0))
    k = len(cfg["data"]["shapes"]["classes"])
    assert list(arrays["methods"]) == cfg["featviz"]["methods"]
    for m in cfg["featviz"]["methods"]:
        assert arrays[m].shape == (k, 3, 32, 32) and arrays[m].min() >= 0 and arrays[m].max() <= 1
        assert arrays[f"{m}_logits"].shape == (k, k)
    png = Image.open(root / paths.prototypes("shapes", "standard", 0, "png"))
    assert png.size[0] > 200 and png.size[1] > 200


def test_activations_family_rows(project):
    root, cfg = project
    ctx = metrics.Context(cfg, "shapes", "standard", [0])
    frame = metrics.run("activations", ctx)
    k, n_test = len(cfg["data"]["shapes"]["classes"]), cfg["data"]["shapes"]["n_test"]
    assert set(frame.metric) == set(catalog.FAMILIES["activations"]["metrics"])
    assert set(frame.method) == set(cfg["featviz"]["methods"]) | {"natural"}
    layers = sorted(set(frame[frame.metric == "spearman"].setting))
    assert len(layers) == 5 and "logits" in layers  # small_cnn: 4 conv blocks + logits
    nat = frame[frame.method == "natural"]
    # natural images, leave-one-out: every test image once per layer, no cue or classified rows
    assert len(nat[nat.metric == "spearman"]) == n_test * len(layers)
    assert set(nat.metric) == {"spearman", "l1", "share_spearman", "share_l1"}
    for m in cfg["featviz"]["methods"]:
        rows = frame[frame.method == m]
        assert len(rows[rows.metric == "spearman"]) == k * len(layers)
        assert len(rows[rows.metric == "cue_colour_strength"]) == k
        assert rows[rows.metric == "classified"].value.isin([0, 1]).all()
    shares = frame[frame.metric.str.startswith("share_")].value
    assert shares.between(0, 1).all()
    # at the median natural image, natural images beat the reference on about half the layers
    assert 0.3 < nat[nat.metric == "share_spearman"].value.mean() < 0.7
    # natural images are closer in rank to their class mean than unrelated activations would be (> 0)
    assert nat[(nat.metric == "spearman") & (nat.setting != "logits")].value.mean() > 0


def test_unselected_model_writes_no_rows(project):
    _, cfg = project
    other = dict(cfg, featviz=dict(cfg["featviz"], variants=["salience"]))
    frame = metrics.run("activations", metrics.Context(other, "shapes", "standard", [0]))
    assert frame.empty and "value" in frame.columns


def test_featviz_selection_and_settings_errors():
    cfg = config.validate({"train": {"variants": ["standard", "lap"], "seeds": [0, 1]}, "featviz": {"seeds": [1]}})
    assert catalog.featviz_models(cfg) == [("standard", 1)]  # salience is not trained: skipped
    with pytest.raises(config.ConfigError, match=r"featviz.seeds: \[5\] not in train.seeds"):
        config.validate({"featviz": {"seeds": [5]}})
    with pytest.raises(config.ConfigError, match="featviz.options.prototype"):
        config.validate({"featviz": {"options": {"prototype": {"stepz": 3}}}})


def test_generate_refuses_a_missing_model_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["generate", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--config", "{}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xaibench generate: error:" in err[0]


def test_max_natural_limits_the_reference_not_the_class_means(project):
    _, cfg = project
    full = metrics.run("activations", metrics.Context(cfg, "shapes", "standard", [0]))
    few_cfg = dict(cfg, metrics=dict(cfg["metrics"], activations=dict(cfg["metrics"]["activations"], max_natural=20)))
    few = metrics.run("activations", metrics.Context(few_cfg, "shapes", "standard", [0]))
    nat = few[(few.method == "natural") & (few.metric == "spearman")]
    assert len(nat) == 20 * nat.setting.nunique()
    gen = lambda f: f[(f.method == "prototype") & (f.metric.isin(["spearman", "l1"]))].value.to_numpy()  # noqa: E731
    np.testing.assert_allclose(gen(few), gen(full))  # generated images still compared with all-image class means
    first = full[(full.method == "natural") & (full.metric == "spearman") & (full.image < 20)]
    np.testing.assert_allclose(np.sort(nat.value.to_numpy()), np.sort(first.value.to_numpy()), rtol=1e-5)
