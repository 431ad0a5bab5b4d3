"""Contracts every catalog entry keeps (the timm pattern: tests parametrised over the registry), and
the step specs' contract: a step reads only what it declares, and the CLI rebuilds the very slice its rule passed."""
import dataclasses
import inspect
import json

import pytest
import torch

from xaibench import catalog, config, steps
from xaibench.cli import main

META = {"classes": ["a", "b", "c", "d"], "image_size": 32, "dataset": "shapes", "content_sha256": "0"}


def _model(variant: str, cfg: dict):
    from xaibench.training.fit import build, model_config
    torch.manual_seed(0)
    return build(model_config(cfg, META, variant, 0)).eval()


def _variant_providing(need):
    return next(v for v, e in catalog.VARIANTS.items() if need is None or need in e.get("provides", []))


@pytest.mark.parametrize("method", list(catalog.EXPLAINERS))
def test_explainer_options_in_the_catalog_are_its_signature(method):
    """The catalog's options (what settings are checked against before any job) are exactly the
    function's keyword options with the same defaults."""
    from xaibench import explain
    fn = explain.get(method)
    if method == "agf":
        from xaibench.explain.agf import Options
        actual = {f.name: f.default for f in dataclasses.fields(Options)}
    else:
        actual = {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    assert catalog.EXPLAINERS[method]["options"] == actual


@pytest.mark.parametrize("method", list(catalog.FEATVIZ))
def test_featviz_options_in_the_catalog_are_its_signature(method):
    from xaibench.featviz import methods
    fn = methods.get(method)
    actual = {n: list(p.default) if isinstance(p.default, tuple) else p.default
              for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    assert catalog.FEATVIZ[method]["options"] == actual


@pytest.mark.parametrize("method", list(catalog.EXPLAINERS))
def test_explainer_batch_contract(method, tiny_cfg):
    """Any explainer on a model that provides what it needs: a batch in, one finite map per image out,
    on a grid no finer than the input, the same maps on a second call."""
    from xaibench import explain
    model = _model(_variant_providing(catalog.EXPLAINERS[method].get("needs")), tiny_cfg)
    images, targets = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 3])
    options = {"steps": 4} if method == "ig" else {"samples": 4} if method == "smoothgrad" else {}
    maps = explain.get(method)(model, images, targets, **options).detach()
    assert maps.ndim == 3 and maps.shape[0] == 3 and max(maps.shape[1:]) <= 32
    assert torch.isfinite(maps).all()
    assert torch.equal(maps, explain.get(method)(model, images, targets, **options).detach())


@pytest.mark.parametrize("family", list(catalog.FAMILIES))
def test_family_declares_scope_needs_and_directions(family):
    from xaibench import metrics
    spec = catalog.FAMILIES[family]
    assert spec["scope"] in ("model", "variant")
    assert set(spec["needs"]) <= {"models", "explanations", "generated_images"}
    assert spec["metrics"] and set(spec["metrics"].values()) <= {"higher", "lower", "none"}
    assert callable(metrics.FAMILIES.get(family))
    assert catalog.headline(family)["metric"] in spec["metrics"]  # its leaderboard column (raises if malformed)


def test_every_variant_name_gets_a_stable_colour():
    """Figures colour by variant: a name outside the built-in palette (a user's variant) gets a colour
    too, the same one every time, distinct from the built-in ones."""
    from xaibench.figures import colour, palette
    built_in = {v: colour(v) for v in catalog.VARIANTS}
    assert colour("my_new_variant") == colour("my_new_variant")
    assert colour("my_new_variant") not in built_in.values()
    assert set(palette(["standard", "my_new_variant"])) == {"standard", "my_new_variant"}
    run = palette(["standard", "mine_sd", "mine_ts"])  # their names hash to the same spare colour
    assert colour("mine_sd") == colour("mine_ts") and len(set(run.values())) == 3  # within a run: all apart
    assert colour("mine_ts", ["mine_sd"]) == run["mine_ts"]


# ---- step specs -----------------------------------------------------------------------------------

def _jobs(cfg):
    """One job of every step, with the keyword arguments its rule gives the spec."""
    variant = "lap"
    yield "prepare", {"dataset": "shapes"}
    for v in cfg["train"]["variants"]:
        yield "train", {"variant": v}
        yield "explain", {"variant": v, "methods": catalog.methods_for(cfg["explain"], v)}
        yield "generate", {"variant": v}
        yield "measure", {"variant": v, "seed": 0, "families": steps.model_families(cfg)}
    yield "measure", {"variant": variant, "family": "stability"}
    yield "aggregate", {}
    yield "claims", {}
    yield "leaderboard", {"dataset": "shapes"}
    yield "summary", {}
    yield "figures", {"dataset": "shapes"}


@pytest.fixture
def full_cfg():
    return config.load("params.yaml")


def test_the_cli_rebuilds_the_slice_its_rule_passed(full_cfg):
    """A job's CLI parses the rule's JSON (filling every other key with its default) and takes its
    spec's slice again: it must be the slice the rule passed, so no default sneaks in."""
    for step, job in _jobs(full_cfg):
        passed = steps.settings(step, full_cfg, **job)
        rebuilt = steps.settings(step, config.from_json(steps.as_json(passed)), **job)
        assert json.loads(steps.as_json(rebuilt)) == json.loads(steps.as_json(passed)), (step, job)


def test_reading_an_undeclared_setting_fails_at_once(full_cfg):
    cfg = steps.settings("train", full_cfg, variant="standard")
    assert cfg["train"]["lr"] == full_cfg["train"]["lr"]
    with pytest.raises(steps.UndeclaredSetting, match=r"step 'train' reads setting 'explain'"):
        cfg["explain"]
    with pytest.raises(steps.UndeclaredSetting, match=r"'train.lap'"):
        cfg["train"].get("lap")  # standard's models are not defined by LAP's settings
    with pytest.raises(steps.UndeclaredSetting, match=r"'train.seeds'"):
        cfg["train"]["seeds"]  # which seeds run is not part of what a model is


def test_a_setting_enters_exactly_the_jobs_that_read_it(full_cfg):
    """Changing a LAP setting changes the params of LAP's jobs and of no `standard` job; adding a seed
    changes no per-model job (so the params trigger reruns exactly what the change affects)."""
    changed = config.deep_merge(full_cfg, {"train": {"lap": {"beta_init": 3.0}, "seeds": [0, 1, 2, 3]}})
    for step, job in _jobs(full_cfg):
        before, after = (steps.as_json(steps.settings(step, c, **job)) for c in (full_cfg, changed))
        lap_job = job.get("variant") in ("lap", "lap_plugin") or step in ("figures", "summary", "claims", "leaderboard")
        per_model = "seed" in job or step in ("train", "explain", "generate", "prepare")
        if not lap_job and per_model:
            assert before == after, (step, job)
        if step == "train" and job["variant"] == "lap":
            assert before != after


def test_a_hand_run_measure_takes_the_seeds_the_dag_gives(tmp_path, monkeypatch, capsys):
    """`xaibench measure --family stability --variant lap_plugin` by hand on the smoke preset: the DAG
    never runs it (lap_plugin has one seed there), so the step refuses in one line instead of asking for
    seeds that were never trained."""
    import shutil
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    for name in ("params.yaml", "presets"):
        (shutil.copytree if (repo / name).is_dir() else shutil.copy)(repo / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "every.yaml").write_text("metrics: {variants: {stability: [standard, lap_plugin]}}\n")
    cfg = config.load("params.yaml", ["presets/smoke.yaml", "every.yaml"])
    assert steps.seeds(cfg, "lap_plugin") == [0] and steps.seeds(cfg, "standard") == [0, 1]
    rc = main(["measure", "--dataset", "shapes", "--family", "stability", "--variant", "lap_plugin",
               "--preset", "presets/smoke.yaml", "--preset", "every.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "stability compares training runs; lap_plugin is trained for seeds [0] only" in err[0]


def test_dvc_stage_params_cover_what_their_steps_read(full_cfg):
    """A DVC stage's `params` sections hold every settings section its steps' specs read, so `dvc status`
    sees each setting change that Snakemake's params trigger sees."""
    import yaml
    from pathlib import Path
    stages = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    of_stage = {"measure": ("measure", "aggregate", "claims", "leaderboard", "summary")}
    for step, job in _jobs(full_cfg):
        stage = next(s for s in stages if step in of_stage.get(s, (s,)))
        sections = {k.split(".")[0] for k in steps.keys(step, full_cfg, **job)}
        assert sections <= set(stages[stage].get("params", [])), (step, sections - set(stages[stage]["params"]))


TABLE_ONLY = [n for n, e in catalog.FIGURES.items() if set(e["needs"]) <= set(catalog.FAMILIES) and e["needs"]]


@pytest.mark.parametrize("name", TABLE_ONLY)
def test_a_figure_with_nothing_to_draw_says_so(name, tiny_project, tiny_cfg):
    """Every figure drawn from tidy tables, given tables without rows (e.g. a family that scores no
    configured variant): NotApplicable with its reason (the job then writes a placeholder), no crash."""
    import pandas as pd
    from xaibench import figures, paths
    from xaibench.tidy import COLUMNS
    for family in catalog.FAMILIES:
        path = paths.metric_table("shapes", family)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(columns=COLUMNS).to_csv(path, index=False)  # what `aggregate` writes for a family without rows
        pd.DataFrame(columns=COLUMNS).to_parquet(paths.metric_table("shapes", family, "parquet"), index=False)
    with pytest.raises(figures.NotApplicable) as why:
        figures.FIGURES.get(name)(tiny_cfg, "shapes")
    assert str(why.value).strip()
