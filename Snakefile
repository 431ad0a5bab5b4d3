# xaibench: train CNN classifiers several ways, explain them, score the explanations.
# The one DAG of the suite. Settings: params.yaml (+ --configfile presets/*.yaml).
# Run everything:        snakemake --cores all
# One phase:             snakemake --cores all prepare|train|explain|generate|measure|figures
# Report:                snakemake --report results/report.html
#
# Each rule's settings, seeds and files come from its step spec (src/xaibench/steps.py); the rule
# files hold the phases: data.smk (prepare), models.smk (train, explain, generate), measure.smk
# (measure, aggregate, summary), figures.smk (figures, timing); common.smk the helpers.

from pathlib import Path

from snakemake.utils import min_version

min_version("9.17")  # 9.10-9.16 run more jobs at once than --cores allows (snakemake#3815)


configfile: str(Path(workflow.basedir) / "params.yaml")  # absolute: a named run works in runs/<run>/


# The whole configuration is checked before any job runs (and before any output is touched): the
# schema, the relations between keys, explainer and featviz options, the device, map sizes.
from xaibench import config as _settings
from xaibench.plugins import PluginError

try:
    _settings.validate(config)
except _settings.ConfigError as exc:
    raise WorkflowError(f"invalid settings (params.yaml / --configfile): {exc}")
except PluginError as exc:  # an installed plugin (xaibench.plugins) fails to load or clashes
    raise WorkflowError(str(exc))

# Runs are kept apart: a named run (a preset's `run:`) lives in runs/<run>/ with its own data,
# results and Snakemake records; the default run keeps the paths DVC tracks.
from xaibench.paths import run_dir as _run_dir

if config["run"] != "default":

    workdir: str(_run_dir(config["run"]))

    config.update(_settings.rebase_inputs(config, _run_dir(config["run"])))  # data/raw/... seen from there


report: "report/workflow.rst"


# Used only with --sdm conda; the default is the environment Snakemake runs in (make reproduce builds it).
conda: "envs/environment.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/measure.smk"
include: "rules/claims.smk"
include: "rules/figures.smk"
include: "rules/leaderboard.smk"


# Phase targets (what dvc.yaml's stages call). Each names every file of its phase, not only the last
# ones, so that a deleted intermediate file (a split, a model.pt) is regenerated.
rule prepare:
    input:
        PHASES["prepare"],


rule train:
    input:
        PHASES["train"],


rule explain:
    input:
        PHASES["explain"],


rule generate:
    input:
        PHASES["generate"],


rule measure:
    input:
        PHASES["measure"],


rule figures:
    input:
        PHASES["figures"],
        rules.timing.output,
        rules.speed_figure.output if Path(SPEED_CSV).is_file() else [],


rule all:
    default_target: True
    input:
        rules.prepare.input,
        rules.train.input,
        rules.explain.input,
        rules.generate.input,
        rules.measure.input,
        rules.figures.input,
