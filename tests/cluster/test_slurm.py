"""The suite on a real SLURM cluster: a throwaway single-node cluster on localhost (munged, slurmctld,
slurmd) runs the smoke preset through `snakemake --profile profiles/slurm`, with the profile's GPU
switch off (this cluster has no GPUs). Every job must go through sbatch and the metric CSVs must
equal those of a local run of the same preset; a job failing on the cluster must fail the run and
name the rule's log."""
from __future__ import annotations

import re
import time
from collections import Counter

import pytest
import yaml

from tests.integration.helpers import copy_workflow, jobs_of, run

from . import daemons
from .conftest import metric_tables

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(state_dir):
    absent = daemons.missing(daemons.SLURM_BINARIES)
    if absent:
        pytest.skip(f"no SLURM here (missing: {', '.join(absent)}); apt-get install slurm-wlm munge")
    with daemons.slurm_cluster(state_dir / "slurm") as state:
        yield state
    # the context has stopped what it started
    for name in ("slurmctld", "slurmd"):
        assert not daemons._pids_named(name), f"{name} still running after the harness stopped it"


def slurm_copy(dest):
    """A scratch copy of the workflow whose SLURM profile has the GPU switch off."""
    root = copy_workflow(dest)
    profile = root / "profiles/slurm/config.yaml"
    text = profile.read_text()
    assert "&gpu 1" in text, "the profile's GPU switch moved; update the harness"
    profile.write_text(text.replace("&gpu 1", "&gpu 0"))
    return root


def slurm_logs(root) -> Counter:
    """SLURM job logs per rule (.snakemake/slurm_logs/rule_<name>/.../<jobid>.log)."""
    logs = (root / ".snakemake/slurm_logs").rglob("*.log")
    return Counter(p.relative_to(root / ".snakemake/slurm_logs").parts[0].removeprefix("rule_") for p in logs)


def test_smoke_preset_runs_through_sbatch_with_the_local_results(cluster, local_run, tmp_path):
    local, local_seconds = local_run
    root = slurm_copy(tmp_path / "wf")
    start = time.monotonic()
    out = run(["snakemake", "--profile", "profiles/slurm", "--slurm-keep-successful-logs"], root, timeout=1800)
    seconds = time.monotonic() - start
    text = out.stdout + out.stderr
    jobs = {rule: n for rule, n in jobs_of(text).items() if rule != "all"}  # `all` only collects (local)
    print(f"\nwall time, smoke preset: SLURM {seconds:.0f} s ({sum(jobs.values())} sbatch jobs), "
          f"local `snakemake --cores 2` {local_seconds:.0f} s")
    with open(cluster.parent / "times.txt", "a") as f:
        f.write(f"slurm_seconds={seconds:.1f} local_seconds={local_seconds:.1f} jobs={sum(jobs.values())}\n")

    # every job that runs a command was an sbatch submission with its own SLURM job log
    assert jobs and slurm_logs(root) == Counter(jobs)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", text)
    assert len(set(submitted)) == sum(jobs.values())

    # the same numbers as on one machine
    assert metric_tables(root) == metric_tables(local)
    assert "Nothing to be done" in run(["snakemake", "-n", "--profile", "profiles/slurm"], root).stdout


def test_a_job_failing_on_the_cluster_fails_the_run_naming_its_log(cluster, tmp_path):
    root = slurm_copy(tmp_path / "wf")
    missing = tmp_path / "no-such-images"
    bad = {"datasets": ["folder"], "data": {"folder": {"root": str(missing / "images"), "masks": str(missing / "masks")}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = run(["snakemake", "prepare", "--profile", "profiles/slurm", "--configfile", str(tmp_path / "bad.yaml")],
              root, check=False, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Error in rule prepare_folder" in text and "results/logs/prepare/folder.log" in text
    assert f"{missing}/masks: mask folder not found" in (root / "results/logs/prepare/folder.log").read_text()
    assert slurm_logs(root) == Counter({"prepare_folder": 1})  # it failed as a SLURM job, whose log is kept
