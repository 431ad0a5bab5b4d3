"""Cached stages shared through a DVC remote on a server: a throwaway sshd on localhost (own port,
host key and user key) holds an SSH remote; the local smoke run's stages are pushed to it, a fresh
clone pulls them with `make pull` (the README's command) and then has nothing to do, with the same
metric CSVs. The README's "Sharing results" lines, run for real."""
from __future__ import annotations

import pytest

from tests.integration.helpers import run, venv_make

from . import daemons
from .conftest import metric_tables

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(state_dir):
    absent = daemons.missing(daemons.SSH_BINARIES)
    if absent:
        pytest.skip(f"no sshd here (missing: {', '.join(absent)}); apt-get install openssh-server")
    pytest.importorskip("dvc_ssh", reason="the ssh extra: pip install -e '.[ssh]'")
    with daemons.sshd(state_dir / "ssh") as (port, user, key, known_hosts):
        proc_pids = [int(line.split()[0]) for line in (state_dir / "ssh/pids").read_text().splitlines()]
        yield port, user, key, known_hosts
    assert not any(daemons._alive(pid) for pid in proc_pids), "sshd still running after the harness stopped it"


def as_user(home, cmd):
    """`cmd` with HOME at a folder whose .ssh/known_hosts knows the server (as after a first `ssh`)."""
    return ["env", f"HOME={home}", *cmd]


def test_stages_pushed_to_an_ssh_remote_pull_into_a_fresh_clone(server, local_run, tmp_path):
    port, user, key, known_hosts = server
    origin, _ = local_run
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/known_hosts").write_text(known_hosts.read_text())
    store = tmp_path / "server-store"  # the folder on the "server"

    # the README's lines: the remote (committed) and the user's own key (.dvc/config.local, not committed)
    run(["dvc", "remote", "add", "-d", "lab", f"ssh://{user}@127.0.0.1:{port}{store}"], origin)
    run(["dvc", "remote", "modify", "--local", "lab", "keyfile", str(key)], origin)
    run("git add .dvc/config && git commit -qm 'DVC remote on the lab server'", origin)
    run(as_user(home, ["dvc", "push", "-q"]), origin, timeout=600)
    assert sum(1 for p in store.rglob("*") if p.is_file()) > 10  # the stages are on the server

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "results").exists() and not (clone / "data/prepared").exists()
    run(["dvc", "remote", "modify", "--local", "lab", "keyfile", str(key)], clone)
    out = run(as_user(home, venv_make("pull")), clone, timeout=600)  # dvc pull, check, re-stamp, snakemake -n
    assert "Nothing to be done" in out.stdout
    assert "Nothing to be done" in run(["snakemake", "-n"], clone).stdout
    assert metric_tables(clone) == metric_tables(origin)
