"""The learnability gate (xaibench.gate): its verdict, its place in results/summary.json and the job
log, and its marks in the tables and figures that show explanations, on a tiny real run."""
import copy
import json
import os

import pytest
import torch

from xaibench import cli, config, gate, paths
from xaibench.io import load_json


def _cfg(**gate_settings) -> dict:
    return config.validate({"gate": gate_settings})


def test_verdict_against_the_threshold_inclusive():
    cfg = _cfg(threshold=0.9)
    assert gate.learned({"variant": "lap", "nocue_accuracy": 0.9}, cfg)[0]
    passed, reason = gate.learned({"variant": "lap", "nocue_accuracy": 0.899, "test_accuracy": 0.99}, cfg)
    assert not passed and reason == "nocue accuracy 0.899 < gate.threshold 0.9"
    assert gate.learned({"variant": "lap", "val_accuracy": 0.95, "nocue_accuracy": 0.5}, _cfg(split="val"))[0]


def test_only_the_listed_variants_are_judged():
    cfg = _cfg(variants=["lap"])
    assert gate.learned({"variant": "standard", "nocue_accuracy": 0.1}, cfg) == (True, "standard is not gated (gate.variants)")
    assert not gate.learned({"variant": "lap", "nocue_accuracy": 0.1}, cfg)[0]
    with pytest.raises(config.ConfigError, match=r"gate.variants: \['lapp'\] are not training variants"):
        _cfg(variants=["lapp"])


def test_data_without_a_cue_is_judged_on_its_cue_free_test_split():
    cfg = _cfg()
    assert gate.learned({"variant": "standard", "test_accuracy": 0.9}, cfg) == \
        (True, "test accuracy 0.900 >= gate.threshold 0.85")
    # with a cue but no nocue split the gate cannot read a cue-free accuracy: it fails, saying why
    assert gate.learned({"variant": "standard", "test_accuracy": 0.9, "test_cue_agreeing_accuracy": 1.0}, cfg) == \
        (False, "no nocue accuracy in the model's summary")


def test_changing_the_gate_does_not_change_what_a_model_is():
    """The gate is read where it is used: no model's config (the train step's trigger) depends on it."""
    from xaibench.training.fit import model_config
    meta = {"classes": ["a", "b"], "image_size": 32, "dataset": "shapes", "content_sha256": "x"}
    for variant in ("standard", "lap", "protopnet"):
        assert model_config(_cfg(threshold=0.1), meta, variant, 0) == model_config(_cfg(threshold=0.99), meta, variant, 0)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny shapes data; two standard models trained 2 epochs (far from learned), explained by Grad-CAM,
    measured (accuracy, localization) and aggregated, all through the CLI as the pipeline runs it."""
    from tests.conftest import TINY
    from xaibench.data import prepare
    root = tmp_path_factory.mktemp("gate")
    cwd = os.getcwd()
    os.chdir(root)
    torch.set_num_threads(1)
    cfg = config.validate(copy.deepcopy(TINY))
    cfg["train"]["variants"] = ["standard"]
    cfg["explain"]["methods"] = ["gradcam"]
    cfg["metrics"]["families"] = ["accuracy", "localization"]
    cfg["figures"]["formats"] = ["png"]
    prepare("shapes", cfg["data"], paths.prepared("shapes"))
    js = json.dumps(cfg)
    try:
        for seed in (0, 1):
            for step in (["train"], ["explain", "--method", "gradcam", "--split", "test"],
                         ["measure", "--family", "accuracy", "--family", "localization"]):
                assert cli.main([*step, "--dataset", "shapes", "--variant", "standard", "--seed", str(seed),
                                 "--config", js]) == 0
        units = [str(paths.measure_unit("shapes", f, "standard", f"seed{s}")) for f in ("accuracy", "localization")
                 for s in (0, 1)]
        assert cli.main(["aggregate", "--dataset", "shapes", *units, "--config", js]) == 0
        yield cfg
    finally:
        os.chdir(cwd)


def _nocue(seed: int) -> float:
    return load_json(paths.model_dir("shapes", "standard", seed) / "summary.json")["nocue_accuracy"]


def test_a_model_below_the_threshold_is_marked_in_summary_log_and_table(project, capsys):
    from xaibench import figures
    high = max(_nocue(0), _nocue(1)) + 1e-3  # above both tiny models: both must fail
    assert high <= 1
    cfg = copy.deepcopy(project) | {"gate": {"split": "nocue", "threshold": high, "variants": None}}
    summary = ["summary", "--out", "summary.json", "--detail", "detail.json", "--claims", "claims.csv"]
    assert cli.main(["claims", "--compute", "--out", "claims.csv", "--validity", "validity.csv",
                     "--config", json.dumps(cfg)]) == 0
    assert cli.main([*summary, "--config", json.dumps(cfg)]) == 0
    verdicts = load_json("detail.json")["shapes"]["standard"]["gate"]  # each model's verdict
    assert {k: v["passed"] for k, v in verdicts.items()} == {"seed0": False, "seed1": False}
    log = capsys.readouterr().out
    assert f"warning: shapes/standard/seed0 fails the learnability gate: nocue accuracy {_nocue(0):.3f} <" in log
    figures.draw(cfg, "shapes", ["localization"])
    table = (paths.tables("shapes") / "localization.md").read_text()
    assert "| test | relevance_mass | standard† | gradcam |" in table
    assert f"standard seed 1: nocue accuracy {_nocue(1):.3f} < gate.threshold" in table

    # the same files under a threshold both models pass: no mark, no warning, nothing retrained
    model_bytes = (paths.model_dir("shapes", "standard", 0) / "model.pt").read_bytes()
    cfg["gate"]["threshold"] = min(_nocue(0), _nocue(1))
    assert cli.main([*summary, "--config", json.dumps(cfg)]) == 0
    assert all(v["passed"] for v in load_json("detail.json")["shapes"]["standard"]["gate"].values())
    assert "warning" not in capsys.readouterr().out
    figures.draw(cfg, "shapes", ["localization"])
    table = (paths.tables("shapes") / "localization.md").read_text()
    assert "†" not in table and "Every model shown passed the learnability gate" in table
    assert (paths.model_dir("shapes", "standard", 0) / "model.pt").read_bytes() == model_bytes


def test_bars_of_a_failed_variant_are_hatched_and_its_legend_marked():
    import pandas as pd

    from xaibench.figures import HATCH, plt, seed_points
    data = pd.DataFrame({"method": ["gradcam"] * 4, "variant": ["standard", "standard", "lap", "lap"],
                         "seed": [0, 1, 0, 1], "value": [0.3, 0.4, 0.1, 0.2]})
    fig, ax = plt.subplots()
    seed_points(ax, data, "method", "value", "variant", hue_order=["standard", "lap"], failed={"lap": {0: "why"}})
    standard, lap = ax.containers
    assert [b.get_hatch() for b in lap.patches] == [HATCH] and [b.get_hatch() for b in standard.patches] == [None]
    legend = ax.legend()  # drawn later, as the figures do: still marked
    assert [t.get_text() for t in legend.get_texts()] == ["standard", "lap†"]
    assert [h.get_hatch() for h in legend.legend_handles] == [None, HATCH]
    plt.close(fig)


def test_a_table_footnote_names_only_the_variants_it_shows():
    failed = {"lap": {0: "nocue accuracy 0.6 < gate.threshold 0.85"}, "protopnet": {2: "nocue accuracy 0.8 < gate.threshold 0.85"}}
    note = gate.footnote(failed, ["protopnet", "protopnet_comp"])
    assert "protopnet seed 2" in note and "lap" not in note
    assert gate.footnote(failed, ["standard"]) == gate.footnote({})
    assert "lap seed 0" in gate.footnote(failed)
