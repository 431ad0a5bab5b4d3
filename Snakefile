# xaibench: train CNN classifiers several ways, explain them, score the explanations.
# The one DAG of the suite. Settings: params.yaml (+ --configfile presets/*.yaml).
# Run everything:        snakemake --cores all
# One phase:             snakemake --cores all prepare|train|explain|generate|measure|figures
# Report:                snakemake --report results/report.html

from snakemake.utils import min_version

min_version("9.17")  # 9.10-9.16 run more jobs at once than --cores allows (snakemake#3815)


configfile: "params.yaml"


report: "report/workflow.rst"


# Used only with --sdm conda; the default is the environment Snakemake runs in (make reproduce builds it).
conda: "envs/environment.yaml"


include: "rules/common.smk"
include: "rules/pipeline.smk"
include: "rules/claims.smk"


rule all:
    default_target: True
    input:
        rules.prepare.input,
        rules.train.input,
        rules.explain.input,
        rules.generate.input,
        rules.measure.input,
        rules.figures.input,
