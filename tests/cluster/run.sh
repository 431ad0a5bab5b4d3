#!/usr/bin/env bash
# Cluster harness (`make cluster-test`): the suite on a throwaway single-node SLURM cluster and a DVC
# remote behind a throwaway sshd, both on localhost (tests/cluster/). Needs root and Debian's
# slurm-wlm, munge and openssh-server (.ci/run installs them); installs nothing itself. Every daemon
# it starts is stopped again, on failure and Ctrl-C too: by the tests' fixtures, and by this trap
# (from the pids they recorded) if Python itself dies.
set -uo pipefail
cd "$(dirname "$0")/../.."
export XAIBENCH_CLUSTER_HARNESS=1
export XAIBENCH_CLUSTER_STATE="${XAIBENCH_CLUSTER_STATE:-$(mktemp -d /tmp/xaibench-cluster.XXXXXX)}"
export PATH="$PATH:/usr/sbin:/sbin"

cleanup() {
    if [ -n "${tests:-}" ] && kill -TERM -- "-$tests" 2>/dev/null; then  # what the tests left running (snakemake)
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$tests" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$tests" 2>/dev/null
    fi
    python tests/cluster/daemons.py stop "$XAIBENCH_CLUSTER_STATE/slurm"
    python tests/cluster/daemons.py stop "$XAIBENCH_CLUSTER_STATE/ssh"
    if grep -q "tests/cluster/daemons.py" /etc/slurm/slurm.conf 2>/dev/null; then  # ours: put the original back
        if [ -f "$XAIBENCH_CLUSTER_STATE/slurm/slurm.conf.orig" ]; then
            cp "$XAIBENCH_CLUSTER_STATE/slurm/slurm.conf.orig" /etc/slurm/slurm.conf
        else
            rm -f /etc/slurm/slurm.conf
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
setsid python -m pytest tests/cluster -p no:cacheprovider -q -s -rs "$@" &  # own process group, see cleanup
tests=$!
wait "$tests"
status=$?
[ -f "$XAIBENCH_CLUSTER_STATE/times.txt" ] && echo "cluster harness times: $(cat "$XAIBENCH_CLUSTER_STATE/times.txt")"
echo "cluster harness: $(( $(date +%s) - start )) s in all, exit $status (state and daemon logs: $XAIBENCH_CLUSTER_STATE)"
exit $status
