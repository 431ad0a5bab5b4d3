"""The claims step: the hierarchical bootstrap on data with a known answer, the gate, test validity,
the claims registry's contract, and the outputs (issue 23; docs/claims.md)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from xaibench import catalog, claims, config, paths, stats
from xaibench.cli import main
from xaibench.tidy import rows


# ---- the bootstrap ------------------------------------------------------------------------------

def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _simulate(n_sim, seeds, images, seed_sd, shift, paired, rng):
    """How often the 95% interval calls 'higher' supported, and how often it covers the true shift."""
    supported = covered = 0
    for i in range(n_sim):
        a, b = [], []
        for _ in range(seeds):
            if paired:  # two explainers on one model: shared per-image difficulty, a seed-level deviation
                base = rng.normal(0, 1, images)
                a.append(base + shift + rng.normal(0, seed_sd) + rng.normal(0, 1, images))
                b.append(base + rng.normal(0, 1, images))
            else:  # two variants: independent models, each with its own seed-level offset
                a.append(rng.normal(shift + rng.normal(0, seed_sd), 1, images))
                b.append(rng.normal(rng.normal(0, seed_sd), 1, images))
        r = stats.effect(a, b, paired=paired, reps=1000, seed=i)
        supported += stats.verdict(r["low"], r["high"], "higher") == "supported"
        covered += r["low"] <= shift <= r["high"]
    return supported, covered


def _lower_tail(k: int, n: int, p: float) -> float:
    return 1 - _upper_tail(k + 1, n, p)


@pytest.mark.parametrize("paired, seeds, images, seed_sd", [(True, 3, 40, 0.0), (False, 3, 40, 0.0), (True, 10, 30, 0.5)])
def test_bootstrap_null_calls_supported_at_about_the_nominal_rate(paired, seeds, images, seed_sd):
    """Under a true null the one-sided rate of 'supported' is not above 2.5% (binomial tail p > 0.001).
    With images as the only noise the two-level bootstrap is conservative (it counts image noise twice,
    docs/claims.md); where seeds dominate and there are enough of them it is nominal: not below either."""
    n_sim = 300
    supported, _ = _simulate(n_sim, seeds, images, seed_sd, 0.0, paired, np.random.default_rng(7))
    assert _upper_tail(supported, n_sim, 0.025) > 0.001, f"{supported}/{n_sim} false 'supported'"
    if seed_sd:
        assert _lower_tail(supported, n_sim, 0.025) > 0.001, f"only {supported}/{n_sim} 'supported'"


@pytest.mark.parametrize("paired", [True, False])
def test_bootstrap_finds_a_planted_shift_and_covers_it(paired):
    n_sim, shift = 100, 0.4
    supported, covered = _simulate(n_sim, 3, 150, 0.0, shift, paired, np.random.default_rng(11))
    assert supported >= 0.9 * n_sim  # a shift of 0.4 image-sd, 450 images per group: ~4 bootstrap SE
    assert covered >= 0.88 * n_sim   # 95% nominal; binomial sd over 100 runs ~2%


def test_bootstrap_variance_is_the_two_level_formula():
    """Var* of the mean of cluster means = (between-cluster plug-in variance + mean within-cluster
    plug-in variance / n) / S: the vectorised draw is the hierarchical bootstrap, no more, no less."""
    rng = np.random.default_rng(3)
    groups = [rng.normal(mu, sd, n) for mu, sd, n in ((0.0, 1.0, 30), (1.0, 2.0, 50), (3.0, 0.5, 20))]
    boot = stats.effect(groups, reps=40000, seed=1)["replicates"]
    means = np.array([g.mean() for g in groups])
    expected = (means.var() + np.mean([g.var() / len(g) for g in groups])) / len(groups)
    assert boot.var() == pytest.approx(expected, rel=0.03)
    assert boot.mean() == pytest.approx(means.mean(), abs=0.01)


def test_bootstrap_is_seeded():
    groups = [np.arange(10.0), np.arange(5.0) ** 2]
    one, two = stats.effect(groups, reps=500, seed=4), stats.effect(groups, reps=500, seed=4)
    assert one["replicates"].tobytes() == two["replicates"].tobytes()
    assert stats.effect(groups, reps=500, seed=5)["replicates"].tobytes() != one["replicates"].tobytes()


def test_verdict_rules():
    assert stats.verdict(0.1, 0.3, "higher") == "supported"
    assert stats.verdict(-0.3, -0.1, "higher") == "contradicted"
    assert stats.verdict(-0.1, 0.3, "lower") == "inconclusive"
    assert stats.verdict(-0.3, -0.1, "lower") == "supported"
    # non-inferiority: the interval must lie above -margin
    assert stats.verdict(-0.015, 0.01, "not_lower", margin=0.02) == "supported"
    assert stats.verdict(-0.3, -0.1, "not_lower", margin=0.02) == "contradicted"
    assert stats.verdict(-0.03, 0.01, "not_lower", margin=0.02) == "inconclusive"


# ---- the claims registry ------------------------------------------------------------------------

FEATVIZ_METHODS = config.schema()["properties"]["featviz"]["properties"]["methods"]["items"]["enum"]


@pytest.mark.parametrize("name", list(catalog.CLAIMS))
def test_claim_entry_contract(name):
    spec = catalog.CLAIMS[name]
    family = catalog.FAMILIES[spec["family"]]
    assert spec["metric"] in family["metrics"], f"{name}: {spec['metric']} is not a metric of {spec['family']}"
    assert spec["paper"] in "ABCDE" and spec["source"] and spec["statement"].endswith(".")
    assert spec["predicts"] in ("higher", "lower", "above_zero", "not_lower")
    assert (spec["b"] is None) == (spec["predicts"] == "above_zero")
    direction = catalog.direction(spec["family"], spec["metric"])
    if spec["predicts"] in ("higher", "lower"):  # "a beats b" in the metric's own direction
        assert spec["predicts"] == direction, f"{name}: predicts {spec['predicts']} but {spec['metric']} is {direction}"
    if spec["predicts"] == "not_lower":
        assert direction == "higher"
    methods = {"accuracy": {"model"}, "activations": set(FEATVIZ_METHODS)}.get(spec["family"], set(catalog.EXPLAINERS))
    for group in filter(None, (spec["a"], spec["b"])):
        assert group["variant"] in catalog.VARIANTS and group["method"] in methods
    assert spec["levels"] in ("all", "positive")


def test_registry_covers_the_five_papers():
    papers = [spec["paper"] for spec in catalog.CLAIMS.values()]
    assert len(papers) >= 14 and set(papers) == set("ABCDE")


# ---- claims on small tidy tables ----------------------------------------------------------------

def _write_family(family, parts):
    """parts: (variant, seed, method, split, metric, setting, values) -> the family's per-image parquet."""
    frames = []
    for variant, seed, method, split, metric, setting, values in parts:
        f = rows(method, split, metric, values, setting)
        f.insert(0, "dataset", "shapes"), f.insert(1, "variant", variant), f.insert(2, "seed", seed)
        frames.append(f)
    path = paths.metric_table("shapes", family, "parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)


def _write_models(nocue: dict):
    """nocue: {(variant, seed): accuracy}; test accuracy = nocue accuracy."""
    for (variant, seed), acc in nocue.items():
        out = paths.model_dir("shapes", variant, seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"variant": variant, "seed": seed, "nocue_accuracy": acc,
                                                      "test_accuracy": acc}))


@pytest.fixture
def project(tiny_project, tiny_cfg):
    cfg = config.validate({**tiny_cfg, "train": {**tiny_cfg["train"], "seeds": [0, 1, 2],
                                                 "variants": ["standard", "lap"]},
                           "claims": {"replicates": 500}})
    return cfg


def _claim(cfg, name, families):
    cfg = {**cfg, "metrics": {**cfg["metrics"], "families": families}}
    return claims.assess(claims.Run(cfg, "shapes"), name, catalog.CLAIMS[name])


def _deletion(rng, n=40):
    """LAP's own map clearly better (lower deletion AUC) than Grad-CAM on every seed."""
    return [("lap", s, m, "test", "deletion_auc", "", rng.normal(mu, 0.05, n))
            for s in (0, 1, 2) for m, mu in (("lap", 0.2), ("gradcam", 0.3))]


def test_claim_on_models_below_the_gate_is_untestable(project):
    _write_family("deletion", _deletion(np.random.default_rng(0)))
    _write_models({("lap", s): 0.4 for s in (0, 1, 2)} | {("standard", s): 0.95 for s in (0, 1, 2)})
    row = _claim(project, "C.lap_vs_gradcam", ["deletion"])
    assert row["verdict"] == claims.UNTESTABLE and "model did not learn the task" in row["reason"]
    # the same effect on models that learned it is supported, on all three seeds
    _write_models({("lap", s): 0.9 for s in (0, 1, 2)})
    row = _claim(project, "C.lap_vs_gradcam", ["deletion"])
    assert row["verdict"] == "supported" and (row["seeds_agreeing"], row["n_seeds"]) == (3, 3)
    assert row["ci_high"] < 0 and row["effect"] == pytest.approx(-0.1, abs=0.02)


def test_gate_excludes_failing_seeds_or_the_whole_claim(project):
    _write_family("deletion", _deletion(np.random.default_rng(1)))
    _write_models({("lap", 0): 0.5, ("lap", 1): 0.9, ("lap", 2): 0.3})
    row = _claim(project, "C.lap_vs_gradcam", ["deletion"])
    assert row["n_seeds"] == 1 and row["per_seed"].startswith("1:") and "excluded lap seed 0" in row["reason"]
    strict = {**project, "claims": {**project["claims"], "failed_models": "untestable"}}
    assert _claim(strict, "C.lap_vs_gradcam", ["deletion"])["verdict"] == claims.UNTESTABLE


def test_accuracy_claim_is_judged_on_the_accuracy_even_below_the_gate(project):
    n = 48  # the tiny nocue split: accuracies are shares of its images
    acc = {("lap", s): k / n for s, k in enumerate((24, 42, 16))} | {("standard", s): 46 / n for s in (0, 1, 2)}
    _write_models(acc)
    _write_family("accuracy", [(v, s, "model", "nocue", "accuracy", "", [a]) for (v, s), a in acc.items()])
    row = _claim(project, "C.lap_keeps_accuracy", ["accuracy"])
    assert row["verdict"] == "contradicted" and "non-inferiority margin 0.02" in row["reason"]
    assert row["effect"] == pytest.approx((24 + 42 + 16) / 3 / n - 46 / n)
    assert row["ci_high"] < -0.02 and (row["seeds_agreeing"], row["n_seeds"]) == (0, 3)


def _segmentation(rng, uniform, n=40):
    parts = []
    for s in (0, 1, 2):
        parts += [("standard", s, "agf", "test", "miou", "", rng.normal(0.45, 0.05, n)),
                  ("standard", s, "gradcam", "test", "miou", "", rng.normal(0.40, 0.05, n)),
                  ("standard", s, "baseline_oracle", "test", "miou", "", np.ones(n)),
                  ("standard", s, "baseline_random", "test", "miou", "", rng.normal(0.30, 0.05, n)),
                  ("standard", s, "baseline_uniform", "test", "miou", "", np.full(n, uniform))]
    return parts


def test_metric_a_uniform_map_wins_is_uninformative(project):
    _write_models({("standard", s): 0.95 for s in (0, 1, 2)})
    _write_family("segmentation", _segmentation(np.random.default_rng(2), uniform=0.47))
    row = _claim(project, "D.segmentation_miou", ["segmentation"])
    assert row["validity"] == "uninformative on this data" and row["verdict"] == claims.UNTESTABLE
    assert "baseline_uniform" in row["reason"] and row["discrimination_low"] > 0  # its oracle does beat chance
    assert row["effect"] == pytest.approx(0.05, abs=0.02)  # the effect is still reported
    # a uniform map below the best explainer leaves the test informative, and the claim is judged
    _write_family("segmentation", _segmentation(np.random.default_rng(2), uniform=0.2))
    row = _claim(project, "D.segmentation_miou", ["segmentation"])
    assert row["validity"] == "informative" and row["verdict"] == "supported"


def test_metric_whose_oracle_does_not_beat_chance_is_uninformative(project):
    _write_models({("standard", s): 0.95 for s in (0, 1, 2)})
    rng = np.random.default_rng(3)
    parts = [("standard", s, m, "test", "positive_auc", "predicted", rng.normal(mu, 0.01, 40))
             for s in (0, 1, 2) for m, mu in (("agf", 0.20), ("gradcam", 0.19), ("baseline_oracle", 0.233),
                                               ("baseline_random", 0.233))]
    _write_family("perturbation", parts)
    run = claims.Run({**project, "metrics": {**project["metrics"], "families": ["perturbation"]}}, "shapes")
    table = claims.validity_table(run)
    assert table.validity.tolist() == ["uninformative on this data"] and "oracle does not beat chance" in table.reason[0]
    row = claims.assess(run, "D.positive_perturbation", catalog.CLAIMS["D.positive_perturbation"])
    assert row["verdict"] == claims.UNTESTABLE and "oracle does not beat chance" in row["reason"]


def test_claims_step_outputs(project, capsys):
    """--compute writes the same bytes twice, prints a table within 100 columns, pastes it into a document."""
    _write_models({(v, s): 0.95 for v in ("standard", "lap") for s in (0, 1, 2)})
    _write_family("deletion", _deletion(np.random.default_rng(4)))
    settings = json.dumps({**project, "metrics": {**project["metrics"], "families": ["deletion"]}})
    doc = paths.RESULTS.parent / "doc.md"
    doc.write_text("# x\n<!-- claims:start -->\nold\n<!-- claims:end -->\ntail\n")
    assert main(["claims", "--compute", "--config", settings, "--into", str(doc)]) == 0
    first = (paths.RESULTS / "claims.csv").read_bytes()
    assert main(["claims", "--compute", "--config", settings]) == 0
    assert (paths.RESULTS / "claims.csv").read_bytes() == first
    table = pd.read_csv(paths.RESULTS / "claims.csv", keep_default_na=False, na_values=[""])
    assert len(table) == len(catalog.CLAIMS) and set(table.verdict) <= set(claims.VERDICTS)
    assert table.set_index("claim").loc["C.lap_vs_gradcam", "verdict"] == "supported"
    printed = capsys.readouterr().out
    assert max(map(len, printed.splitlines())) <= 100 and "C.lap_vs_gradcam" in printed
    text = doc.read_text()
    assert "old" not in text and text.endswith("<!-- claims:end -->\ntail\n") and "| C.lap_vs_gradcam (C) |" in text
    # the figure step: its table (the report opens with it) has one row per claim
    from xaibench.figures import draw
    draw({**project, "figures": {**project["figures"], "formats": ["png"]}}, "shapes", ["claims"])
    shown = pd.read_csv(paths.tables("shapes") / "claims.csv")
    assert len(shown) == len(catalog.CLAIMS) and (paths.figures("shapes") / "claims.png").is_file()
    assert "| C.lap_vs_gradcam (C) |" in (paths.tables("shapes") / "claims.md").read_text()


def test_claims_without_a_table_is_one_line(tiny_project, capsys):
    code = main(["claims", "--out", "results/none.csv", "--config", json.dumps({})])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "results/none.csv" in err[0]


def test_headline_summary_has_verdicts_effects_and_accuracies(project):
    _write_models({("standard", s): a for s, a in enumerate((0.95, 0.93, 0.9))} |
                  {("lap", s): a for s, a in enumerate((0.5, 0.88, 0.3))})
    _write_family("deletion", _deletion(np.random.default_rng(5)))
    cfg = {**project, "metrics": {**project["metrics"], "families": ["deletion"]}}
    table, _ = claims.compute(cfg)
    head = claims.headline(cfg, table)["shapes"]
    assert sum(head["verdicts"].values()) == len(catalog.CLAIMS) == len(head["claims"])
    assert head["claims"]["C.lap_vs_gradcam"]["verdict"] == "supported"  # on seed 1, the one LAP model that learned
    assert head["claims"]["E.stability"] == {"effect": None, "verdict": claims.UNTESTABLE}
    assert head["variants"]["lap"] == {"test_accuracy": round((0.5 + 0.88 + 0.3) / 3, 4),
                                       "nocue_accuracy": round((0.5 + 0.88 + 0.3) / 3, 4), "models": 3, "learned": 1}
