"""The real Snakemake pipeline on the smoke preset: outputs, tidy tables, no-op rerun, figures only."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from PIL import Image

from xaibench import catalog, config, steps
from xaibench.figures import wanted
from xaibench.tidy import COLUMNS

from ..cub_tree import CLASS_NAMES, make_cub_tree
from .helpers import REPO, copy_workflow, jobs_of, run

pytestmark = pytest.mark.integration


def test_smoke_run_writes_every_output_with_tidy_tables(smoke_run):
    root, out = smoke_run
    cfg = config.load(root / "params.yaml")
    for variant in cfg["train"]["variants"]:
        for seed in catalog.seeds_for(cfg, variant):
            for name in ("model.pt", "history.csv", "summary.json"):
                assert (root / f"results/models/shapes/{variant}/seed{seed}/{name}").is_file()
            for method in catalog.methods_for(cfg["explain"], variant):
                assert (root / f"results/explanations/shapes/{variant}/seed{seed}/{method}/test.npz").is_file()
    for family in cfg["metrics"]["families"]:
        table = pd.read_csv(root / f"results/metrics/shapes/{family}.csv")
        assert list(table.columns) == COLUMNS, family
        assert len(table) > 0 and table.value.notna().any()
        spec = catalog.FAMILIES[family]
        assert set(table.metric) <= set(spec["metrics"]), f"{family} writes metrics its catalog entry does not declare"
        expected = {v for v in cfg["train"]["variants"] if catalog.scores(cfg, family, v)}
        if "generated_images" in spec["needs"]:  # paper B: rows only for the models featviz selects
            expected &= {v for v, _ in catalog.featviz_models(cfg)}
        assert set(table.variant) == expected, family
    for variant, seed in catalog.featviz_models(cfg):
        for ext in ("npz", "png"):
            assert (root / f"results/prototypes/shapes/{variant}/seed{seed}.{ext}").is_file()
    figures = list((root / "results/figures/shapes").glob("*.png"))
    assert {f.stem for f in figures} == set(wanted(cfg))
    assert all(Image.open(f).size[0] > 300 for f in figures)
    for name in wanted(cfg):
        assert (REPO / f"report/captions/{name}.rst").is_file(), f"figure {name} has no report caption"
    assert (root / "results/summary.json").is_file()
    assert list((root / "results/benchmarks/train").rglob("*.tsv"))  # Snakemake's per-job time and memory
    log = (root / "results/logs/train/shapes/standard/seed0.log").read_text()
    epochs = [line for line in log.splitlines() if " epoch " in line]  # one line per epoch, no bar redraws
    assert "\r" not in log and len(epochs) == cfg["train"]["epochs"] and "val_acc" in epochs[-1]


def test_smoke_run_has_paper_a(smoke_run):
    """ProtoPNet variants go through every step: misalignment rows for both perturbations, the table and
    both figures, and the other families scored on their gradcam and proto maps."""
    root, _ = smoke_run
    mis = pd.read_csv(root / "results/metrics/shapes/misalignment.csv")
    assert set(mis.variant) == {"protopnet", "protopnet_comp"} and set(mis.setting) == {"noise", "pgd"}
    assert set(mis.metric) >= {"PAC", "PRC", "PLC", "AC"}
    table = (root / "results/tables/shapes/misalignment.md").read_text()  # † marks models under the learnability gate
    assert "| protopnet_comp | pgd |" in table or "| protopnet_comp† | pgd |" in table
    assert (root / "results/figures/shapes/protopnet_gallery.png").is_file()
    deletion = pd.read_csv(root / "results/metrics/shapes/deletion.csv")
    assert {("protopnet", "gradcam"), ("protopnet", "proto")} <= set(zip(deletion.variant, deletion.method))
    acc = pd.read_csv(root / "results/metrics/shapes/accuracy.csv")
    assert {"protopnet", "protopnet_comp"} <= set(acc[acc.metric == "accuracy"].variant)


def test_noop_rerun_has_nothing_to_do(smoke_run):
    root, _ = smoke_run
    out = run(["snakemake", "-n"], root)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_report_builds(smoke_run):
    root, _ = smoke_run
    run(["snakemake", "--report", "results/report.html"], root)
    html = (root / "results/report.html").read_text(errors="ignore")
    caption = (REPO / "report/captions/accuracy.rst").read_text().split()
    assert " ".join(caption[:6]) in html


def test_changed_setting_reruns_only_what_depends_on_it(smoke_run, tmp_path):
    root, _ = smoke_run
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["figures"]["dpi"] = 72
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = run(["snakemake", "-n", "--configfile", str(tmp_path / "p.yaml")], root)
    assert set(jobs_of(out.stdout + out.stderr)) == {"draw_figures_1", "draw_figures_2", "timing", "all"}  # nothing upstream


def test_featviz_option_regenerates_only_paper_b(smoke_run, tmp_path):
    root, _ = smoke_run
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["featviz"]["options"]["prototype"]["steps"] += 1
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = run(["snakemake", "-n", "--configfile", str(tmp_path / "p.yaml")], root)
    jobs = jobs_of(out.stdout + out.stderr)
    selected = len(catalog.featviz_models(config.validate(params)))
    assert jobs["generate_prototypes"] == selected and jobs["measure_model"] == selected  # only the selected models
    assert "train_model" not in jobs and not any(j.startswith("explain") for j in jobs)


def test_bad_settings_fail_at_parse_time_naming_the_key(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: -1\n")
    out = run(["snakemake", "-n", "--configfile", str(tmp_path / "bad.yaml")], root, check=False)
    assert out.returncode != 0
    assert "train.epochs" in out.stderr + out.stdout


def test_slurm_profile_lists_the_same_jobs_with_gpu_for_training(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    root = copy_workflow(tmp_path / "wf")
    local = run(["snakemake", "-n", "--cores", "2"], root)
    slurm = run(["snakemake", "-n", "--profile", "profiles/slurm"], root)
    assert jobs_of(slurm.stdout + slurm.stderr) == jobs_of(local.stdout + local.stderr)
    blocks = (slurm.stdout + slurm.stderr).split("\n\n")
    for rule in ("rule train_model", "rule explain_"):  # every explain_{variant} rule too
        gpu_blocks = [b for b in blocks if rule in b]
        assert gpu_blocks and all("gpu=1" in b for b in gpu_blocks), rule
    # the profile's one GPU switch (`gpu: &gpu 1`) turns every GPU request off for a cluster without GPUs
    profile = root / "profiles/slurm/config.yaml"
    profile.write_text(profile.read_text().replace("&gpu 1", "&gpu 0"))
    cpu = run(["snakemake", "-n", "--profile", "profiles/slurm"], root)
    assert "gpu=1" not in cpu.stdout + cpu.stderr and "gpu=0" in cpu.stdout + cpu.stderr


def test_paper_preset_dry_runs_on_a_folder_dataset(tmp_path):
    rng = __import__("numpy").random.default_rng(0)
    for cls in ("real", "synthetic"):
        for i in range(6):
            for tree in ("images", "masks"):
                d = tmp_path / "raw" / tree / cls
                d.mkdir(parents=True, exist_ok=True)
                shape = (40, 40, 3) if tree == "images" else (40, 40)
                Image.fromarray(rng.integers(0, 255, shape, dtype="uint8")).save(d / f"{i}.png")
    root = copy_workflow(tmp_path / "wf", preset="presets/paper.yaml")
    override = tmp_path / "data.yaml"
    override.write_text(yaml.safe_dump({"data": {"folder": {"root": str(tmp_path / "raw/images"),
                                                            "masks": str(tmp_path / "raw/masks")}}}))
    out = run(["snakemake", "-n", "--configfile", str(override)], root)
    jobs = jobs_of(out.stdout + out.stderr)
    cfg = config.load(root / "params.yaml")
    assert jobs["train_model"] == len(steps.models(cfg))
    assert cfg["datasets"] == ["folder"] and jobs["prepare_folder"] == 1


def test_paper_a_preset_plans_protopnet_on_a_cub_tree(tmp_path):
    """The documented paper A command (paper.yaml + paper_a.yaml) on a tiny CUB-shaped tree: the plan
    trains standard, protopnet and protopnet_comp on `cub` with resnet34, and `prepare` really reads the tree."""
    make_cub_tree(tmp_path / "raw")
    root = copy_workflow(tmp_path / "wf", preset=None)
    override = tmp_path / "data.yaml"
    override.write_text(yaml.safe_dump({"data": {"cub": {"root": str(tmp_path / "raw"), "val_fraction": 0.5}}}))
    presets = ["--configfile", "presets/paper.yaml", "presets/paper_a.yaml", str(override)]
    out = run(["snakemake", "-n", "-p", *presets], root)
    text = out.stdout + out.stderr
    jobs = jobs_of(text)
    cfg = config.load(root / "params.yaml", [root / "presets/paper.yaml", root / "presets/paper_a.yaml", override])
    assert cfg["datasets"] == ["cub"] and cfg["train"]["arch"] == "resnet34"
    assert jobs["prepare_cub"] == 1 and "prepare_folder" not in jobs
    assert jobs["train_model"] == len(steps.models(cfg))
    protos = [m for m in steps.models(cfg) if m[0].startswith("protopnet")]
    assert protos and jobs["explain_protopnet"] + jobs["explain_protopnet_comp"] == len(protos)
    trains = [line for line in text.splitlines() if "xaibench train" in line and "--variant protopnet" in line]
    assert len(trains) == len(protos) and all("--dataset cub" in t and '"arch": "resnet34"' in t for t in trains)
    run(["snakemake", "--cores", "1", "prepare", *presets], root)
    meta = json.loads((root / "runs/paper_a/data/prepared/cub/meta.json").read_text())  # a named run's own folder
    assert meta["classes"] == list(CLASS_NAMES) and meta["image_size"] == 224 and meta["has_masks"]
    assert meta["splits"] == {"train": 3, "val": 3, "test": 6}


def test_figure_jobs_see_every_setting_they_print_and_only_configured_formats(tmp_path):
    """Latent bugs of the extension-points issue: the deletion baseline (printed by lap_faithfulness)
    reached no figure job, and `formats: [pdf]` still declared a png the job never wrote."""
    root = copy_workflow(tmp_path / "wf")
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({"metrics": {"deletion": {"baseline": "blur"}},
                                                     "figures": {"formats": ["pdf"]}}))
    out = run(["snakemake", "-n", "-p", "figures", "--configfile", str(tmp_path / "o.yaml")], root)
    text = out.stdout + out.stderr
    draw = [line for line in text.splitlines() if "xaibench figures" in line]
    assert draw and all('"baseline": "blur"' in line for line in draw)
    assert ".pdf" in text and "results/figures/shapes/accuracy.png" not in text
