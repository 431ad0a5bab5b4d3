"""Integration fixtures: the smoke pipeline, run for real once per session."""
import pytest

from .helpers import copy_workflow, run


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke preset run end to end through Snakemake once per session (shared by several tests)."""
    root = copy_workflow(tmp_path_factory.mktemp("smoke"))
    out = run(["snakemake", "--cores", "2"], root, timeout=900)
    return root, out
