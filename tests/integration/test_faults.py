"""Fault cases at the pipeline level (issue 10), on the session's smoke run: deleted outputs are
regenerated, a killed run recovers with the plain command. Fast cases: tests/unit/test_faults.py."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from .helpers import jobs_of, run

pytestmark = pytest.mark.integration


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deleted_split_is_regenerated_byte_identical(smoke_run):
    """A plain run would regenerate it and (Snakemake cannot know the bytes come out the same)
    everything downstream; the phase target regenerates it alone, and since the bytes and meta.json
    are identical, nothing downstream is stale afterwards."""
    root, _ = smoke_run
    split = root / "data/prepared/shapes/test.npz"
    before = sha(split)
    split.unlink()
    assert "prepare_shapes" in jobs_of(run(["snakemake", "-n"], root).stdout)
    out = run(["snakemake", "--cores", "2", "prepare"], root)
    assert set(jobs_of(out.stdout + out.stderr)) == {"prepare_shapes", "prepare"}
    assert sha(split) == before
    assert "Nothing to be done" in run(["snakemake", "-n"], root).stdout


def test_deleted_model_is_planned_for_retraining(smoke_run):
    root, _ = smoke_run
    model = root / "results/models/shapes/salience/seed1/model.pt"
    aside = model.with_name("aside.pt")
    model.rename(aside)
    try:
        jobs = jobs_of(run(["snakemake", "-n"], root).stdout)
        assert jobs["train_model"] == 1 and "prepare_shapes" not in jobs
    finally:
        aside.rename(model)
    assert "Nothing to be done" in run(["snakemake", "-n"], root).stdout


def test_killed_run_recovers_with_the_plain_command(smoke_run):
    """SIGKILL mid-job leaves a lock and an incomplete output; the README's plain command recovers
    (profiles/default sets rerun-incomplete; rules/common.smk drops the dead run's locks)."""
    root, _ = smoke_run
    proc = subprocess.Popen(["snakemake", "--cores", "1", "--forcerun", "timing", "figures"], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    incomplete = root / ".snakemake/incomplete"
    deadline = time.time() + 120
    while time.time() < deadline and not (incomplete.is_dir() and any(incomplete.iterdir())):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((root / ".snakemake/locks").glob("*.lock")), "the killed run should have left its lock"
    out = run(["snakemake", "--cores", "2", "figures"], root)
    assert set(jobs_of(out.stdout + out.stderr)) == {"timing", "figures"}  # the killed job, nothing upstream
    assert not any((root / ".snakemake/locks").glob("*.lock"))
    assert "Nothing to be done" in run(["snakemake", "-n"], root).stdout


def _state(root) -> dict[str, str]:
    """Hash of every computed file (data and results; job logs and timings excepted)."""
    files = [p for top in ("data/prepared", "results") for p in (root / top).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): sha(p) for p in files
            if not str(p.relative_to(root)).startswith(("results/logs", "results/benchmarks"))}


BAD_SETTINGS = {  # overlay -> what the one line must name
    "device: cuda\n": "device: 'cuda' requested but not available",
    "explain:\n  options:\n    gradcam: {foo: 1}\n": "explain.options.gradcam.foo: not an option",
    "explain:\n  options:\n    ig: {internal_batch_size: many}\n": "explain.options.ig.internal_batch_size: 'many' should be an integer",
    "data:\n  image_size: 16\n": "stability needs maps of at least 3x3",
    "train:\n  seeds: [0, 1, 1]\n": "train.seeds: [0, 1, 1] has non-unique elements",
}


@pytest.mark.parametrize("overlay", list(BAD_SETTINGS))
def test_a_bad_setting_after_a_finished_run_touches_nothing(smoke_run, tmp_path, overlay):
    """Every setting a step would refuse is refused when the workflow loads, in one line naming the key,
    before Snakemake deletes any output of a job it would rerun."""
    root, _ = smoke_run
    if overlay.startswith("device") and __import__("torch").cuda.is_available():
        pytest.skip("CUDA is available here")
    before = _state(root)
    (tmp_path / "bad.yaml").write_text(overlay)
    out = run(["snakemake", "--cores", "2", "--configfile", str(tmp_path / "bad.yaml")], root, check=False)
    assert out.returncode != 0
    assert BAD_SETTINGS[overlay] in out.stderr
    assert _state(root) == before


def test_a_job_failing_at_run_time_keeps_its_previous_outputs(smoke_run, tmp_path):
    """What only the run can find (here a damaged checkpoint): the jobs that read it fail, and the
    outputs they had written before survive byte-identical (Snakemake's `update` backs them up and
    restores them instead of deleting them first)."""
    root = tmp_path / "copy"
    shutil.copytree(smoke_run[0], root, symlinks=True)
    before = _state(root)
    model = root / "results/models/shapes/standard/seed0/model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    out = run(["snakemake", "--cores", "2", "--keep-going", "explain"], root, check=False)
    assert out.returncode != 0 and "explain_standard" in out.stdout + out.stderr
    log = (root / "results/logs/explain/shapes/standard/seed0/test.log").read_text().strip().splitlines()
    assert "model.pt: corrupt or not a" in log[-1] and "checkpoint" in log[-1]
    after = _state(root)
    assert {k: v for k, v in after.items() if not k.endswith("seed0/model.pt")} == \
           {k: v for k, v in before.items() if not k.endswith("seed0/model.pt")}


def test_a_preset_run_and_dvc_repro_keep_apart(tmp_path):
    """A preset names its run (`run: smoke`): its data lives in runs/smoke/, so `dvc repro` of the default
    run leaves it byte-identical and the preset's next run finds nothing to do (they overwrote each other)."""
    from .helpers import copy_workflow
    root = copy_workflow(tmp_path / "wf")  # params.yaml: the smoke sizes as this copy's default run (fast)
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q && git add -A"
        " && git commit -qm wf", root)
    smoke = ["--configfile", "presets/smoke.yaml"]
    run(["snakemake", "--cores", "2", "prepare", *smoke], root)
    mine = {str(p): sha(p) for p in (root / "runs/smoke/data/prepared").rglob("*") if p.is_file()}
    assert mine and not (root / "data/prepared").exists()
    run(["dvc", "repro", "prepare"], root, timeout=900)
    assert (root / "data/prepared/shapes/meta.json").is_file()  # the default run's own data
    assert {str(p): sha(p) for p in (root / "runs/smoke/data/prepared").rglob("*") if p.is_file()} == mine
    assert "Nothing to be done" in run(["snakemake", "-n", "prepare", *smoke], root).stdout
