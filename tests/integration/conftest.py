"""Integration fixtures: the smoke pipeline, run for real once per session."""
import shutil

import pytest

from .helpers import REPO, copy_workflow, run, venv_make


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke preset run end to end once per session with the README's `make reproduce` (the
    whole DAG with Snakemake, then dvc commit) in a git + DVC repository whose results are pushed to a local
    remote and whose dvc.lock is committed, as the README asks. Shared by several tests; tests that
    change files here must leave the committed state alone or work on a clone."""
    root = copy_workflow(tmp_path_factory.mktemp("smoke") / "origin")
    run("git init -q && git config user.email t@t && git config user.name t && dvc init -q", root)
    run(["dvc", "remote", "add", "-d", "store", str(root.parent / "remote")], root)
    shutil.copy(REPO / ".gitignore", root / ".gitignore")  # the project's own ignore rules
    run("git add -A && git commit -qm workflow", root)
    out = run(venv_make("reproduce", "CORES=2"), root, timeout=900)
    run(["dvc", "push", "-q"], root)
    run("git add -A && git commit -qm results", root)
    return root, out


def pytest_itemcollected(item):
    """Under `pytest -n 2 --dist loadgroup` (make test): every test that reads the smoke run goes to
    one worker, so the session fixture runs once, and the other integration tests stay with their
    module (module-scoped runs, once too); unit tests fill the gaps on either worker. (Marked as each
    item is collected, before xdist names the groups; pytest 9.2 ignores them: envs/constraints.txt.)"""
    if "smoke_run" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group("smoke"))
    elif "/integration/" in str(item.path):
        item.add_marker(pytest.mark.xdist_group(item.path.stem))
