"""DVC and Snakemake agree: `make reproduce` leaves a dvc.lock that describes the results; a fresh
clone that ran `make pull` has honest provenance (a changed setting reruns exactly its jobs); every
stage depends on the schema and the modules it runs; `dvc exp run -S` reruns only the stages the
setting touches. All on the session's smoke run (tests/integration/conftest.py)."""
from __future__ import annotations

import shutil

import pytest
import yaml

from xaibench import catalog, config

from .helpers import copy_workflow, jobs_of, run, venv_make  # noqa: F401

pytestmark = pytest.mark.integration


def stale_stages(root) -> set[str]:
    """Stage names `dvc status` reports as changed."""
    out = run(["dvc", "status"], root).stdout
    return {line[:-1] for line in out.splitlines() if line.endswith(":") and not line[0].isspace()}


def test_reproduce_leaves_dvc_lock_describing_the_results(smoke_run):
    root, _ = smoke_run
    assert (root / "dvc.lock").is_file() and (root / "results/report.html").is_file()
    assert stale_stages(root) == set()
    assert "Nothing to be done" in run(["snakemake", "-n"], root).stdout
    assert "accuracy" in run(["dvc", "metrics", "show"], root).stdout


def test_pulled_clone_reruns_what_a_change_touches(smoke_run, tmp_path):
    origin, _ = smoke_run
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "results/models").exists() and not (clone / "data/prepared").exists()
    pulled = run(venv_make("pull"), clone, timeout=600)  # the README's pull command, ending in `snakemake -n`
    assert "Nothing to be done" in pulled.stdout + pulled.stderr
    assert stale_stages(clone) == set()
    cfg = config.load(clone / "params.yaml")
    n_models = sum(len(catalog.seeds_for(cfg, v)) for v in cfg["train"]["variants"])

    # a changed setting: every model retrains (the pulled jobs carry their params records) ...
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["train"]["epochs"] += 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    jobs = jobs_of(run(["snakemake", "-n"], clone).stdout)
    assert jobs["train_model"] == n_models and "prepare_shapes" not in jobs
    # ... and DVC agrees on which phases changed
    assert stale_stages(clone) == {"train", "explain", "generate", "measure", "figures"}  # all that read `train`
    run("git checkout -q params.yaml", clone)

    # a changed default in the schema: every stage depends on it; Snakemake reruns the jobs using it
    schema = clone / "src/xaibench/params.schema.yaml"
    text = schema.read_text()
    assert "enum: [mean, blur], default: mean" in text
    schema.write_text(text.replace("enum: [mean, blur], default: mean", "enum: [mean, blur], default: blur"))
    assert stale_stages(clone) == {"prepare", "train", "explain", "generate", "measure", "figures"}
    jobs = jobs_of(run("PYTHONPATH=src snakemake -n", clone).stdout)  # the clone's own library
    assert jobs["measure_model"] == n_models and "train_model" not in jobs
    assert not [job for job in jobs if job.startswith("explain_")]
    run("git checkout -q src/xaibench/params.schema.yaml", clone)

    # a changed helper module: only the stages that run it, and in them every job (the rules' `code`
    # param hashes the modules of their stage); restoring its bytes (a new mtime) reruns nothing
    tidy = clone / "src/xaibench/tidy.py"
    tidy.write_text(tidy.read_text() + "\n# changed\n")
    assert stale_stages(clone) == {"measure", "figures"}  # figures read tidy tables with it
    jobs = jobs_of(run("PYTHONPATH=src snakemake -n", clone).stdout)
    assert jobs["measure_model"] == n_models and "draw_figures_1" in jobs and "aggregate" in jobs
    assert "train_model" not in jobs and not [job for job in jobs if job.startswith(("explain_", "generate"))]
    run("git checkout -q src/xaibench/tidy.py", clone)
    assert stale_stages(clone) == set()
    assert "Nothing to be done" in run("PYTHONPATH=src snakemake -n", clone).stdout

    # plugin source kept under plugins/ (plugins/README.md): DVC sees its change in every stage
    (clone / "plugins/mine").mkdir()
    (clone / "plugins/mine/explainers.py").write_text("# my explainer\n")
    assert stale_stages(clone) == {"prepare", "train", "explain", "generate", "measure", "figures"}
    shutil.rmtree(clone / "plugins/mine")
    assert stale_stages(clone) == set()

    # a DVC experiment on one setting reruns only the stage (and the jobs) it touches: the figures,
    # redrawn from the pulled metrics without a model
    shutil.rmtree(clone / "results/figures")
    out = run(["dvc", "exp", "run", "-S", "figures.gallery_images=2"], clone, timeout=600)
    text = out.stdout + out.stderr
    assert "Running stage 'figures'" in text
    for stage in ("prepare", "train", "explain", "generate", "measure"):
        assert f"Running stage '{stage}'" not in text, stage
    assert set(jobs_of(text)) == {"draw_figures_1", "draw_figures_2", "timing", "figures"}
    assert (clone / "results/figures/shapes/accuracy.png").is_file()
    assert (clone / "results/figures/timing.png").is_file()  # where the time went, from the pulled benchmark files
