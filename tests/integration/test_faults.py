"""Fault cases at the pipeline level (issue 10), on the session's smoke run: deleted outputs are
regenerated, a killed run recovers with the plain command. Fast cases: tests/unit/test_faults.py."""
from __future__ import annotations

import hashlib
import os
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
