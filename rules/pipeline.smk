# prepare -> train -> explain -> measure -> aggregate -> figures. Each rule is one `xaibench` call
# with every setting it uses in `params` (so Snakemake reruns it when one changes).


# One prepare rule per dataset, because each dataset has its own list of split files; every file is
# a declared output, so deleting any one of them makes the next run regenerate it.
for name in DATASETS:

    rule:
        name:
            f"prepare_{name}"
        output:
            prepared_files(name),
        params:
            settings=prepare_settings(name),
        log:
            f"results/logs/prepare/{name}.log",
        benchmark:
            f"results/benchmarks/prepare/{name}.tsv"
        shell:
            f"xaibench prepare --dataset {name} --config {{params.settings:q}} > {{log}} 2>&1"


# Priorities (higher starts first among ready jobs): every model is trained before the jobs that only
# read models, so no training job is left to start near the end with its explain / measure chain
# behind it while a core idles; then the long generate and explain jobs before the measures.
rule train_model:
    priority: 2
    input:
        unpack(train_inputs),
    output:
        model="results/models/{dataset}/{variant}/seed{seed}/model.pt",
        history="results/models/{dataset}/{variant}/seed{seed}/history.csv",
        summary="results/models/{dataset}/{variant}/seed{seed}/summary.json",
    params:
        settings=train_settings,
    threads: config["train"]["threads"]
    resources:
        gpu=0,
    log:
        "results/logs/train/{dataset}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{variant}/seed{seed}.tsv"
    shell:
        "xaibench train --dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --threads {threads} --config {params.settings:q} > {log} 2>&1"


# One explanation job per model and split, writing every method that applies to the variant: a job
# costs a few seconds of start-up (torch import, model load) before any work, so methods share it.
for variant in VARIANTS:

    rule:
        name:
            f"explain_{variant}"
        priority: 1
        input:
            data="data/prepared/{dataset}/meta.json",
            model=f"results/models/{{dataset}}/{variant}/seed{{seed}}/model.pt",
        output:
            [f"results/explanations/{{dataset}}/{variant}/seed{{seed}}/{method}/{{split}}.npz"
             for method in catalog.methods_for(EXPLAIN, variant)],
        params:
            settings=explain_settings(variant),
            methods=" ".join(f"--method {m}" for m in catalog.methods_for(EXPLAIN, variant)),
            variant=variant,
        threads: 1
        log:
            f"results/logs/explain/{{dataset}}/{variant}/seed{{seed}}/{{split}}.log",
        benchmark:
            f"results/benchmarks/explain/{{dataset}}/{variant}/seed{{seed}}/{{split}}.tsv"
        shell:
            "xaibench explain --dataset {wildcards.dataset} --variant {params.variant} --seed {wildcards.seed}"
            " {params.methods} --split {wildcards.split} --threads {threads} --config {params.settings:q} > {log} 2>&1"


# Paper B: one image per class by every featviz method, for the models selected in `featviz`.
rule generate_prototypes:
    priority: 1
    input:
        data="data/prepared/{dataset}/meta.json",
        model="results/models/{dataset}/{variant}/seed{seed}/model.pt",
    output:
        npz="results/prototypes/{dataset}/{variant}/seed{seed}.npz",
        png="results/prototypes/{dataset}/{variant}/seed{seed}.png",
    params:
        settings=featviz_settings,
    threads: 1
    log:
        "results/logs/generate/{dataset}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/generate/{dataset}/{variant}/seed{seed}.tsv"
    shell:
        "xaibench generate --dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --threads {threads} --config {params.settings:q} > {log} 2>&1"


if MODEL_FAMILIES:

    rule measure_model:
        input:
            measure_inputs,
        output:
            expand("results/metrics/{{dataset}}/{family}/{{variant}}/seed{{seed}}.parquet", family=MODEL_FAMILIES),
        params:
            settings=measure_settings,
            families=" ".join(f"--family {f}" for f in MODEL_FAMILIES),
        threads: 1
        log:
            "results/logs/measure/{dataset}/{variant}/seed{seed}.log",
        benchmark:
            "results/benchmarks/measure/{dataset}/{variant}/seed{seed}.tsv"
        shell:
            "xaibench measure --dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed}"
            " {params.families} --threads {threads} --config {params.settings:q} > {log} 2>&1"


rule measure_variant:
    input:
        measure_inputs,
    output:
        "results/metrics/{dataset}/{family}/{variant}/seeds.parquet",
    wildcard_constraints:
        family="|".join(VARIANT_FAMILIES or ["none"]),
    params:
        settings=measure_settings,
    threads: 1
    log:
        "results/logs/measure/{dataset}/{family}/{variant}/seeds.log",
    benchmark:
        "results/benchmarks/measure/{dataset}/{family}/{variant}/seeds.tsv"
    shell:
        "xaibench measure --dataset {wildcards.dataset} --family {wildcards.family} --variant {wildcards.variant}"
        " --threads {threads} --config {params.settings:q} > {log} 2>&1"


rule aggregate:
    input:
        family_units,
    output:
        tables=expand("results/metrics/{{dataset}}/{family}.csv", family=FAMILIES),
        rows=expand("results/metrics/{{dataset}}/{family}.parquet", family=FAMILIES),
    log:
        "results/logs/aggregate/{dataset}.log",
    benchmark:
        "results/benchmarks/aggregate/{dataset}.tsv"
    shell:
        "xaibench aggregate --dataset {wildcards.dataset} {input:q} > {log} 2>&1"


rule summary:
    input:
        metric_tables(),
        [str(paths.model_dir(d, v, s) / "summary.json") for d in DATASETS for v, s in models()],
        claims="results/claims.csv",
    output:
        headline="results/summary.json",
        detail="results/metrics_summary.json",
    params:
        settings=as_json(datasets=DATASETS, metrics={"families": FAMILIES}, gate=config["gate"],
                         train={"variants": VARIANTS, "seeds": SEEDS, **variant_seeds()}),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    shell:
        "xaibench summary --config {params.settings:q} --claims {input.claims:q} --out {output.headline:q}"
        " --detail {output.detail:q} > {log} 2>&1"


# Figures are drawn by two jobs per dataset (the figure list split in alternation), so redrawing
# them all from existing metrics uses both cores.
for part, names in enumerate(FIGURE_PARTS, start=1):

    rule:
        name:
            f"draw_figures_{part}"
        input:
            figure_inputs(names),
        output:
            shown=[
                report(
                    f"results/figures/{{dataset}}/{name}.{FORMATS[0]}",
                    caption=f"../report/captions/{name}.rst",
                    category="{dataset}",
                    labels={"dataset": "{dataset}", "figure": name},
                )
                for name in names
            ],
            other=[f"results/figures/{{dataset}}/{name}.{ext}" for name in names for ext in FORMATS[1:]],
            tables=[f"results/tables/{{dataset}}/{name}.{ext}" for name in names if name in TABLES for ext in ("md", "csv")],
        params:
            settings=figure_settings,
            only=" ".join(f"--only {name}" for name in names),
        log:
            f"results/logs/figures/{{dataset}}/part{part}.log",
        benchmark:
            f"results/benchmarks/figures/{{dataset}}/part{part}.tsv"
        shell:
            "xaibench figures --dataset {wildcards.dataset} {params.only} --config {params.settings:q} > {log} 2>&1"


# Where the time went: every job's benchmark file as per-phase / per-rule sums and a timeline. It
# runs after every figure (their files are its input), so only its own job is missing from it.
rule timing:
    input:
        figure_files(),
        "results/summary.json",
    output:
        report("results/figures/timing.png", caption="../report/captions/timing.rst", category="run",
               labels={"figure": "timing"}),
    log:
        "results/logs/figures/timing.log",
    shell:
        "python -m xaibench.figures.timing --benchmarks results/benchmarks --timing {output:q} > {log} 2>&1"


# `make bench` writes results/benchmarks/speed.csv; when it exists, the report shows it too.
SPEED_CSV = "results/benchmarks/speed.csv"


rule speed_figure:
    input:
        SPEED_CSV,
    output:
        report("results/figures/speed.png", caption="../report/captions/speed.rst", category="run",
               labels={"figure": "speed"}),
    log:
        "results/logs/figures/speed.log",
    shell:
        "python -m xaibench.figures.timing --speed {input:q} {output:q} > {log} 2>&1"


# Phase targets (what dvc.yaml's stages call). Each names every file of its phase, not only the
# last ones, so that a deleted intermediate file (a split, a model.pt) is regenerated: Snakemake
# only rebuilds a missing file that a job it runs asks for.
rule prepare:
    input:
        [f for d in DATASETS for f in prepared_files(d)],


rule train:
    input:
        model_files(),


rule explain:
    input:
        explanation_files(),


rule generate:
    input:
        prototype_files(),


rule measure:
    input:
        metric_tables(),
        "results/summary.json",


rule figures:
    input:
        figure_files(),
        rules.timing.output,
        rules.speed_figure.output if Path(SPEED_CSV).is_file() else [],
