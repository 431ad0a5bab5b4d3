"""DVC round trip: repro, push to a remote, clone elsewhere, pull, re-stamp, and Snakemake has nothing to do."""
from __future__ import annotations

import shutil

import pytest

from .helpers import REPO, copy_workflow, jobs_of, run

pytestmark = pytest.mark.integration


def test_dvc_repro_push_clone_pull_restamp(tmp_path):
    origin = copy_workflow(tmp_path / "origin")
    remote = tmp_path / "remote"
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q", origin)
    run(["dvc", "remote", "add", "-d", "store", str(remote)], origin)
    shutil.copy(REPO / ".gitignore", origin / ".gitignore")  # the project's own ignore rules
    run("git add -A && git commit -qm workflow", origin)
    run(["dvc", "repro"], origin, timeout=900)
    assert (origin / "results/summary.json").is_file()
    shown = run(["dvc", "metrics", "show"], origin).stdout
    assert "accuracy/accuracy" in shown or "test" in shown
    run(["dvc", "push"], origin)
    run("git add -A && git commit -qm results", origin)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "results/models").exists() and not (clone / "data/prepared").exists()
    # the README's documented pull command
    venv = shutil.which("python").rsplit("/bin/", 1)[0]
    run(["make", "pull", f"VENV={venv}", "-o", f"{venv}/.installed"],
        clone, timeout=600)
    out = run(["snakemake", "-n"], clone)
    assert "Nothing to be done" in out.stdout + out.stderr
    shutil.rmtree(clone / "results/figures")
    out = run(["snakemake", "--cores", "2", "figures"], clone)
    assert set(jobs_of(out.stdout + out.stderr)) == {"draw_figures_1", "draw_figures_2", "figures"}
    assert (clone / "results/figures/shapes/accuracy.png").is_file()
