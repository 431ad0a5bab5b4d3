"""Throwaway daemons for the cluster harness, on localhost: a single-node SLURM cluster (munged,
slurmctld, slurmd; recipe: shared/research/slurm_local.md) and an sshd with its own port, host key
and user key. Each is a child process started here and stopped here by its pid, also when the
harness fails; every pid is also written to `<state>/pids` so tests/cluster/run.sh can stop them
from its trap if Python itself dies. Installs nothing: needs root and Debian's slurm-wlm, munge and
openssh-server (.ci/run installs them)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")  # the default path: batch jobs do not see SLURM_CONF
SLURM_BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
SSH_BINARIES = ("sshd", "ssh", "ssh-keygen")


def missing(binaries) -> list[str]:
    """The named programs not on PATH (or /usr/sbin), plus 'root' when not running as root."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    absent = [b for b in binaries if shutil.which(b, path=path) is None]
    return absent + ([] if os.geteuid() == 0 else ["root"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


def _pids_named(name: str) -> set[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _wait(what: str, check, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


class Daemons:
    """Child daemons stopped in reverse start order; pids recorded in `state/pids`."""

    def __init__(self, state: Path):
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], **popen) -> subprocess.Popen:
        log = open(self.state / f"{name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
        self.children.append((name, proc))
        with open(self.state / "pids", "a") as f:
            f.write(f"{proc.pid} {Path(cmd[0]).name}\n")
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.children.clear()


def stop_recorded(state: Path) -> list[str]:
    """Stop every daemon listed in state/pids that still runs under the recorded name (the backstop
    of tests/cluster/run.sh's trap); returns what it had to stop."""
    stopped = []
    pids = state / "pids"
    for line in (pids.read_text().splitlines() if pids.exists() else []):
        pid, name = int(line.split()[0]), line.split()[1]
        comm = Path(f"/proc/{pid}/comm")
        if comm.exists() and comm.read_text().strip() == name[:15] and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append(f"{name} {pid}")
    deadline = time.monotonic() + 10
    for line in (pids.read_text().splitlines() if pids.exists() else []):
        pid = int(line.split()[0])
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return stopped


def slurm_conf(state: Path, cpus: int, memory_mb: int) -> str:
    """A one-node cluster on this host. The node declares at least `cpus` CPUs (config_overrides lets a
    small CI machine accept the profile's 4-CPU training jobs; nothing is pinned: TaskPlugin none)."""
    host = socket.gethostname().split(".")[0]
    return f"""# written by tests/cluster/daemons.py for a throwaway test cluster; the original is restored after
ClusterName=xaibenchtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _munge_works() -> bool:
    out = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
    return "STATUS:" in out.stdout and "Success" in out.stdout


@contextlib.contextmanager
def slurm_cluster(state: Path, cpus: int = 4, memory_mb: int = 32000):
    """Start munged (unless one already answers), slurmctld and slurmd; yield when the node is idle;
    then cancel every job, stop what was started here and put /etc/slurm/slurm.conf back."""
    absent = missing(SLURM_BINARIES)
    if absent:
        raise RuntimeError(f"cannot start a test cluster, missing: {', '.join(absent)}")
    for name in ("slurmctld", "slurmd"):
        if _pids_named(name):
            raise RuntimeError(f"a {name} is already running on this machine; the harness needs its own cluster")
    state = state.resolve()
    daemons = Daemons(state)
    backup = state / "slurm.conf.orig"
    had_conf = SLURM_CONF.exists()
    steps_before = _pids_named("slurmstepd")
    try:
        if not _munge_works():
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["mungekey", "--create"], check=True)
            for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
                Path(d).mkdir(parents=True, exist_ok=True)
            subprocess.run(["chown", "-R", "munge:munge", "/etc/munge", "/var/log/munge", "/var/lib/munge",
                            "/run/munge"], check=True)
            daemons.start("munged", [shutil.which("munged", path="/usr/sbin:/sbin"), "--foreground"],
                          user="munge", group="munge")
            _wait("munged", _munge_works, 20, state / "munged.out")
        if had_conf:
            shutil.copy2(SLURM_CONF, backup)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(state, max(cpus, os.cpu_count() or 1), memory_mb))
        for d in ("state", "spool"):
            (state / d).mkdir(exist_ok=True)
        daemons.start("slurmctld", ["slurmctld", "-D", "-i"])
        daemons.start("slurmd", ["slurmd", "-D"])

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() == "idle"

        _wait("the SLURM node (sinfo: idle)", idle, 60, state / "slurmd.log")
        yield state
    finally:
        if any(name == "slurmctld" for name, _ in daemons.children):
            jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
            if jobs:
                subprocess.run(["scancel", *jobs], capture_output=True)
                _wait_quietly(lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(), 20)
        daemons.stop()
        for pid in _pids_named("slurmstepd") - steps_before:  # job steps of ours that outlived slurmd
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if had_conf and backup.exists():
            shutil.copy2(backup, SLURM_CONF)
        elif not had_conf:
            SLURM_CONF.unlink(missing_ok=True)


def _wait_quietly(check, timeout: float) -> None:
    with contextlib.suppress(RuntimeError):
        _wait("", check, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def sshd(state: Path):
    """An sshd on 127.0.0.1 with a port, host key and authorised user key of its own (all in `state`);
    yields (port, user, user_key, known_hosts)."""
    absent = missing(SSH_BINARIES)
    if absent:
        raise RuntimeError(f"cannot start a test sshd, missing: {', '.join(absent)}")
    state = state.resolve()
    daemons = Daemons(state)
    created_run = not Path("/run/sshd").exists()  # the privilege separation directory sshd insists on
    try:
        for key in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(state / key)], check=True)
        shutil.copy(state / "user_key.pub", state / "authorized_keys")
        port, user = free_port(), "root"
        (state / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {state}/host_key
PidFile {state}/sshd.pid
AuthorizedKeysFile {state}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
        host_pub = (state / "host_key.pub").read_text().split()
        (state / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        daemons.start("sshd", [shutil.which("sshd", path="/usr/sbin:/sbin"), "-D", "-e", "-f", str(state / "sshd_config")])
        ssh = ["ssh", "-i", str(state / "user_key"), "-p", str(port), "-o", f"UserKnownHostsFile={state}/known_hosts",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{user}@127.0.0.1", "true"]
        _wait("sshd", lambda: subprocess.run(ssh, capture_output=True).returncode == 0, 20, state / "sshd.out")
        yield port, user, state / "user_key", state / "known_hosts"
    finally:
        daemons.stop()
        if created_run:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()


if __name__ == "__main__":  # python tests/cluster/daemons.py stop STATE_DIR   (run.sh's trap)
    if len(sys.argv) == 3 and sys.argv[1] == "stop":
        for line in stop_recorded(Path(sys.argv[2])):
            print(f"cluster harness: stopped leftover {line}")
    else:
        sys.exit("usage: daemons.py stop STATE_DIR")
