# Two commands do all the setup on a fresh machine:
#   make reproduce   create .venv, install, run the whole default reproduction, build the report
#   make test        create .venv, install with test extras, run the test suite
# Other targets: figures (redraw from existing metrics), pull (fetch cached stages from the DVC
# remote and re-stamp them so Snakemake does not rerun), smoke (CI-sized run), lint.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1 torchvision==0.29.1
CORES  ?= all
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: reproduce test figures pull smoke lint clean-results

$(VENV)/.installed: pyproject.toml envs/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c envs/constraints.txt -e ".[test,slurm]"
	touch $@

reproduce: $(VENV)/.installed
	snakemake --cores $(CORES)
	snakemake --report results/report.html

test: $(VENV)/.installed
	python -m pytest

figures: $(VENV)/.installed
	snakemake --cores $(CORES) figures

pull: $(VENV)/.installed
	dvc pull
	snakemake --cores 1 --touch
	snakemake -n

smoke: $(VENV)/.installed
	snakemake --cores $(CORES) --configfile presets/smoke.yaml

lint: $(VENV)/.installed
	snakemake --lint

clean-results:
	rm -rf results .snakemake
