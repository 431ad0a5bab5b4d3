"""The leaderboard (docs/leaderboard.md): chance→oracle scaling on the reference maps themselves, ranks
with ties, marks, the outputs and the comparison of two runs."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from xaibench import catalog, config, explain, metrics, paths
from xaibench import leaderboard as lb
from xaibench.cli import main
from xaibench.data import prepare, read_split
from xaibench.training.fit import load_model, train

from ..conftest import TINY

METHODS = ["gradcam", "sobel", "random", "constant"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two tiny trained models, their saved maps and the real localization family's per-image rows."""
    root = tmp_path_factory.mktemp("leaderboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = copy.deepcopy(TINY)
        cfg["train"] = {**cfg["train"], "variants": ["standard"], "epochs": 2}
        cfg["explain"] = {**cfg["explain"], "methods": METHODS}
        cfg["metrics"] = {"families": ["localization"]}
        cfg["leaderboard"] = {"replicates": 300}
        cfg = config.validate(cfg)
        prepare("shapes", cfg["data"], paths.prepared("shapes"))
        split = read_split(paths.prepared("shapes"), "test")
        frames = []
        for seed in (0, 1):
            out = paths.model_dir("shapes", "standard", seed)
            train(cfg, paths.prepared("shapes"), "standard", seed, out, "cpu")
            model, _ = load_model(out / "model.pt")
            for method in METHODS:
                arrays = explain.explain_split(model, split, method, "predicted", 32, "cpu")
                explain.save(paths.explanation("shapes", "standard", seed, method, "test"), arrays)
            frames.append(metrics.run("localization", metrics.Context(cfg, "shapes", "standard", [seed])))
        paths.metric_table("shapes", "localization").parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_parquet(paths.metric_table("shapes", "localization", "parquet"))
        yield cfg, lb.compute(cfg, "shapes")


def _cell(cells, variant, method, metric="relevance_mass"):
    return cells[(cells.variant == variant) & (cells.method == method) & (cells.metric == metric)].iloc[0]


def test_scaling_gives_zero_and_one_on_the_reference_maps_themselves(project):
    _, cells = project
    chance, oracle = _cell(cells, lb.POOLED, "baseline_random"), _cell(cells, lb.POOLED, "baseline_oracle")
    assert chance.scale == oracle.scale == "chance→oracle"
    assert chance.score == pytest.approx(0, abs=1e-9) and oracle.score == pytest.approx(1, abs=1e-9)
    assert oracle.score_low == pytest.approx(1) and oracle.score_high == pytest.approx(1)  # the mask: 1 on every image
    # the random control is the same line as the family's own chance map; constant = the uniform baseline
    assert abs(_cell(cells, "standard", "random").score) < 0.1
    assert _cell(cells, "standard", "constant").value == pytest.approx(_cell(cells, lb.POOLED, "baseline_uniform").value)
    # scaled values are the raw ones mapped linearly per model
    grad = _cell(cells, "standard", "gradcam")
    assert (grad.score > 0) == (grad.value > chance.value) and grad["rank"] == "1"


def test_only_explainers_are_ranked_and_every_row_is_marked(project):
    _, cells = project
    assert set(cells[cells["rank"] != ""].kind) == {"explainer"}
    assert set(cells.kind) == {"explainer", "control", "reference"}
    assert set(cells[cells.kind != "reference"].gate) <= {"passed", "1/2 failed", "2/2 failed"}
    assert set(cells[cells.kind != "reference"].randomisation) == {"not tested"}  # family not in this run
    assert cells.validity.str.startswith(("informative", "uninformative", "no reference lines")).all()
    assert cells.config_hash.nunique() == 1 and len(cells.config_hash.iloc[0]) == 12


def test_the_report_table_renders_without_markup_warnings(project, tmp_path):
    """The report shows results/tables/{dataset}/leaderboard.csv as a reST csv-table: reference lines
    in italics, and no cell docutils reads as broken markup (it warned once per control row)."""
    import io

    from docutils.core import publish_doctree

    from xaibench.figures.leaderboard import display
    _, cells = project
    table = display(cells)
    table.to_csv(tmp_path / "board.csv", index=False)
    warnings = io.StringIO()
    tree = publish_doctree(f".. csv-table:: board\n   :file: {tmp_path / 'board.csv'}\n   :header-rows: 1\n",
                           settings_overrides={"warning_stream": warnings, "file_insertion_enabled": True})
    assert warnings.getvalue() == "", warnings.getvalue()
    italic = {node.astext() for node in tree.findall(lambda n: n.tagname == "emphasis")}
    assert italic == {p.strip("*") for p in table.pair if p.startswith("*")} and "standard / sobel" in " ".join(italic)


def _cells(values, lows, highs, kind="explainer"):
    return pd.DataFrame({"value": values, "value_low": lows, "value_high": highs, "score": np.nan,
                         "score_low": np.nan, "score_high": np.nan, "scale": "raw", "kind": kind})


def test_ranks_tie_where_intervals_overlap_and_follow_the_direction():
    cells = _cells([0.85, 0.8, 0.15, 0.5], [0.8, 0.7, 0.1, 0.45], [0.9, 0.85, 0.2, 0.55])
    assert lb.ranks(cells, "higher").tolist() == ["1=", "1=", "4", "3"]
    assert lb.ranks(cells, "lower").tolist() == ["3=", "3=", "1", "2"]
    assert lb.ranks(cells, "none").tolist() == [""] * 4
    cells.loc[3, "kind"] = "control"  # a reference line is shown, not ranked, and does not push others down
    assert lb.ranks(cells, "higher").tolist() == ["1=", "1=", "3", ""]


def test_randomisation_check_passes_below_the_threshold_only():
    cells = pd.DataFrame({"family": "randomisation", "kind": "explainer", "variant": "v", "method": ["a", "b", "c"],
                          "value_high": [0.3, 0.7, np.nan]})
    assert lb.randomisation_marks(cells, 0.5) == {("v", "a"): "passed", ("v", "b"): "failed", ("v", "c"): "n/a"}


def test_step_writes_the_same_bytes_prints_within_100_columns_and_compares(project, capsys):
    cfg, cells = project
    settings = json.dumps(cfg)
    assert main(["leaderboard", "--compute", "--config", settings]) == 0
    first = paths.leaderboard("shapes").read_bytes()
    assert main(["leaderboard", "--compute", "--config", settings]) == 0
    assert paths.leaderboard("shapes").read_bytes() == first
    printed = capsys.readouterr().out
    assert max(map(len, printed.splitlines())) <= 100 and "standard / gradcam" in printed
    ranked = [line for line in printed.splitlines() if " / " in line and not line.startswith("*")]
    assert ranked and all(line.split()[-1].startswith("#") for line in ranked)  # no rank cut off
    assert "| standard / gradcam" in paths.leaderboard("shapes", "md").read_text()
    table = lb.read(paths.leaderboard("shapes"))
    assert list(table.columns) == lb.COLUMNS and table.setting.eq("").all() and "1" in set(table["rank"])
    other = paths.RESULTS / "other.csv"
    table.assign(value=table.value + 0.5, score=table.score + 0.5, config_hash="0" * 12).to_csv(other, index=False)
    assert main(["leaderboard", "--compare", str(paths.leaderboard("shapes")), str(other), "--config", settings]) == 0
    text = capsys.readouterr().out
    assert f"config {'0' * 12}" in text and "+0.5" in text and max(map(len, text.splitlines())) <= 100


def test_headline_of_a_family_without_one_is_its_first_ranked_metric(monkeypatch):
    monkeypatch.setitem(catalog.FAMILIES, "toy", {"metrics": {"spread": "none", "peak": "higher"}})
    assert catalog.headline("toy") == {"metric": "peak", "split": "test", "setting": "", "levels": "all"}
    monkeypatch.setitem(catalog.FAMILIES, "toy", {"metrics": {"peak": "higher"}, "headline": "peak:colour=red"})
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        catalog.headline("toy")
