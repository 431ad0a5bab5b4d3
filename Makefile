# Two commands do all the setup on a fresh machine:
#   make reproduce   create .venv, install, run the whole default reproduction, build the report
#   make test        create .venv, install with test extras, run the test suite
# Other targets: figures (redraw from existing metrics), claims-docs (paste the run's claims table into
# docs/results.md), pull (fetch cached stages from the DVC
# remote and re-stamp them so Snakemake does not rerun), smoke (CI-sized run), lint,
# bench (speed against floors and peers, cost growth: results/bench/{speed,growth}.csv, < 5 min),
# cluster-test (as root, with slurm-wlm, munge, openssh-server installed: the smoke run on a throwaway
# SLURM cluster and a DVC remote behind a throwaway sshd on localhost; tests/cluster/run.sh).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1 torchvision==0.29.1
CORES  ?= all
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: reproduce test figures pull smoke lint bench clean-results cluster-test claims-docs

$(VENV)/.installed: pyproject.toml envs/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c envs/constraints.txt -e ".[test,slurm,ssh]"
	touch $@

# Snakemake runs the one DAG at full parallelism (phase by phase, `dvc repro` left a core idle at each
# phase's tail: ~7% of the run); then `dvc commit` records every phase's deps, params and outputs in
# dvc.lock, as `dvc repro` would after running each phase's (now no-op) Snakemake call. Commit
# dvc.lock afterwards (git add dvc.lock && git commit); `dvc exp run -S key=value` reruns only the
# stages the setting touches.
reproduce: $(VENV)/.installed
	snakemake --cores $(CORES)
	dvc commit --force --quiet
	snakemake --report results/report.html

test: $(VENV)/.installed
	python -m pytest -n 2 --dist loadgroup  # two workers; the tests sharing the smoke run stay on one (tests/integration/conftest.py)

figures: $(VENV)/.installed
	snakemake --cores $(CORES) figures

# The claims table of the last run (results/claims.csv) pasted between the claims markers of docs/results.md.
claims-docs: $(VENV)/.installed
	xaibench claims --into docs/results.md

# Pulled files carry fresh timestamps and no Snakemake provenance. Once `dvc status` confirms they
# are the results of this checkout's settings and code, every job is re-stamped in DAG order with
# its params and code records (--touch --forceall), so a later change reruns exactly what it would
# on the machine that computed them.
pull: $(VENV)/.installed
	dvc pull
	@dvc status --quiet || { dvc status; echo "make pull: the pulled results were made with other settings or code than this checkout (above); nothing re-stamped: run dvc repro"; exit 1; }
	snakemake --cores 1 --touch --forceall --quiet
	snakemake -n

smoke: $(VENV)/.installed
	snakemake --cores $(CORES) --configfile presets/smoke.yaml

# results/bench/speed.csv: every explainer / metric / the training epoch / the loader / job start-up against its floor
# and peers (benchmarks/speed.py); growth.csv: time and peak memory as images and seeds double;
# all three and the speed figure go to results/bench/ (no DVC stage's output, so `dvc status` stays
# clean; the report shows the figure once speed.csv exists).
# BENCH_RUNS: the benchmark files of a default run, for the start-up share (default: this checkout's).
BENCH_RUNS ?= results/benchmarks
bench: $(VENV)/.installed
	nice python benchmarks/speed.py --runs $(BENCH_RUNS)
	nice python benchmarks/growth.py
	snakemake results/bench/speed.png --cores 1

lint: $(VENV)/.installed
	snakemake --lint

cluster-test: $(VENV)/.installed
	bash tests/cluster/run.sh

clean-results:
	rm -rf results .snakemake
