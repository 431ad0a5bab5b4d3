"""Fault trials of issue 21 that need a real Snakemake (and DVC) run; the unit-level cases are in
tests/unit/test_fault_trials.py. Kept few and tiny: two reuse the session's smoke run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from xaibench import catalog, config, figures, speed

from ..unit.test_fault_trials import tree
from .helpers import copy_workflow, jobs_of, run

pytestmark = pytest.mark.integration

FIGURE_INPUTS = ["data/prepared", "results/metrics", "results/explanations", "results/models", "results/prototypes",
                 "results/claims.csv", "results/validity.csv", "results/leaderboard"]


def test_every_figure_redraws_bit_identical(smoke_run, tmp_path, monkeypatch):
    """Every figure and table the smoke run drew (every catalogued figure its settings allow), drawn
    again in another process from a copy of its inputs, is the same bytes: nothing random (the seed
    dots' jitter), nothing dated (PNG/PDF metadata), in any of the run's formats."""
    root, _ = smoke_run
    for name in FIGURE_INPUTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    cfg = config.load(root / "params.yaml")
    names = figures.wanted(cfg)
    assert len(names) >= len(catalog.FIGURES) - 1  # the smoke preset draws all but what needs other data
    figures.draw(cfg, "shapes", names)
    for folder in ("results/figures/shapes", "results/tables/shapes"):
        drawn = tree(tmp_path / folder)
        assert drawn and drawn == tree(root / folder), folder


def test_added_image_reruns_prepare_and_what_depends_on_it(tmp_path):
    """A folder dataset run, then one image (and its mask) added: `snakemake -n` plans prepare and
    the training after it, `dvc status` reports the prepare stage's data/raw changed, and the rerun
    prepares the new image (meta.json counts it). Before issue 21: "Nothing to be done"."""
    root = copy_workflow(tmp_path / "wf", preset=None)
    raw = root / "data/raw/folder"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(6):
            for tree_, shape in (("images", (20, 20, 3)), ("masks", (20, 20))):
                (raw / tree_ / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(raw / tree_ / cls / f"{i}.png")
    cfg = config.read_yaml(root / "params.yaml")
    cfg["datasets"] = ["folder"]
    cfg["data"].update(image_size=32, folder={"val_fraction": 0.25, "test_fraction": 0.25})
    cfg["train"].update(variants=["standard"], seeds=[0], epochs=1, width=4, batch_size=8)
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run(["snakemake", "--cores", "1", "train"], root)
    run("git init -q && dvc init -q && dvc commit -q --force prepare", root)
    assert "Nothing to be done" in run(["snakemake", "-n", "train"], root).stdout
    assert "up to date" in run(["dvc", "status", "prepare"], root).stdout
    before = tree(root / "results/models")

    shutil.copy(raw / "images/cat/0.png", raw / "images/cat/new.png")
    shutil.copy(raw / "masks/cat/0.png", raw / "masks/cat/new.png")
    jobs = jobs_of(run(["snakemake", "-n", "train"], root).stdout)
    assert jobs["prepare_folder"] == 1 and jobs["train_model"] == 1
    status = run(["dvc", "status", "prepare"], root).stdout
    assert "data/raw" in status and "modified" in status
    assert tree(root / "results/models") == before  # planning touched nothing
    run(["snakemake", "--cores", "1", "prepare"], root)
    meta = json.loads((root / "data/prepared/folder/meta.json").read_text())
    assert sum(meta["splits"].values()) == 13


def test_bench_leaves_every_dvc_stage_as_it_was(smoke_run):
    """`make bench`'s last step draws its speed figure through Snakemake; it now writes under
    results/bench/, which no stage owns, so `dvc status` is what it was (the figures stage used to
    turn `modified`)."""
    root, _ = smoke_run
    before = run(["dvc", "status", "--json"], root).stdout
    times = speed.interleaved({"ours": lambda: sum(range(1000)), "floor": lambda: None}, reps=2)
    speed.write_csv([speed.compare("sum vs nothing", "ours", times, "floor", limit=1e9)], root / "results/bench/speed.csv")
    try:
        run(["snakemake", "results/bench/speed.png", "--cores", "1"], root)
        assert (root / "results/bench/speed.png").is_file()
        assert json.loads(run(["dvc", "status", "--json"], root).stdout) == json.loads(before)
    finally:
        shutil.rmtree(root / "results/bench")
