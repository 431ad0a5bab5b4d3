"""Cluster harness fixtures: real daemons on localhost (tests/cluster/daemons.py) and one local smoke
run to compare against. These tests start daemons as root, so `make test` skips them; they run with
`make cluster-test` (tests/cluster/run.sh sets XAIBENCH_CLUSTER_HARNESS=1)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.integration.helpers import REPO, copy_workflow, run


def pytest_collection_modifyitems(config, items):
    if os.environ.get("XAIBENCH_CLUSTER_HARNESS") == "1":
        return
    skip = pytest.mark.skip(reason="cluster harness: starts SLURM/sshd daemons as root; run `make cluster-test`")
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def state_dir():
    """Where the daemons keep config, keys, logs and pids (run.sh's trap reads the pids from here)."""
    path = os.environ.get("XAIBENCH_CLUSTER_STATE")
    if not path:
        pytest.skip("XAIBENCH_CLUSTER_STATE not set; run `make cluster-test`")
    os.makedirs(path, exist_ok=True)
    return __import__("pathlib").Path(path)


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The smoke preset run locally with plain `snakemake --cores 2` (timed) in a git + DVC repository;
    then `dvc repro` records the results in dvc.lock (each stage's Snakemake call finds nothing to do,
    as the README says) and everything is committed, ready to push."""
    root = copy_workflow(tmp_path_factory.mktemp("local") / "origin")
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q", root)
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    run("git add -A && git commit -qm workflow", root)
    start = time.monotonic()
    run(["snakemake", "--cores", "2"], root, timeout=900)
    seconds = time.monotonic() - start
    run(["dvc", "repro", "-q"], root, timeout=600)
    run("git add -A && git commit -qm results", root)
    return root, seconds


def metric_tables(root) -> dict[str, bytes]:
    """Every metric CSV of a run, by name, as bytes."""
    tables = {p.name: p.read_bytes() for p in (root / "results/metrics/shapes").glob("*.csv")}
    assert tables, f"no metric CSVs under {root}/results/metrics/shapes"
    return tables
