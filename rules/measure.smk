# measure -> aggregate -> summary. Every per-model family of one model runs in one job (a job costs a
# few seconds of start-up before any work); families spanning seeds (stability) run once per variant.
if MODEL_FAMILIES:

    rule measure_model:
        input:
            lambda w: steps.measure_inputs(config, w.dataset, w.variant, seed=w.seed),
        output:
            kept(steps.measure_outputs(config)),
        params:
            settings=spec("measure", families=MODEL_FAMILIES),
            code=code_version("measure", variant=lambda w: w.variant, families=MODEL_FAMILIES),
            families=" ".join(f"--family {f}" for f in MODEL_FAMILIES),
        threads: 1
        log:
            str(paths.log("measure", "{dataset}", "{variant}", "seed{seed}")),
        benchmark:
            str(paths.benchmark("measure", "{dataset}", "{variant}", "seed{seed}"))
        shell:
            "xaibench measure --dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed}"
            " {params.families} --threads {threads} --config {params.settings:q} > {log} 2>&1"


rule measure_variant:
    input:
        lambda w: steps.measure_inputs(config, w.dataset, w.variant, family=w.family),
    output:
        kept(str(paths.measure_unit("{dataset}", "{family}", "{variant}", "seeds"))),
    wildcard_constraints:
        family="|".join(VARIANT_FAMILIES or ["none"]),
    params:
        settings=spec("measure"),
        code=code_version("measure", variant=lambda w: w.variant, families=lambda w: [w.family]),
    threads: 1
    log:
        str(paths.log("measure", "{dataset}", "{family}", "{variant}", "seeds")),
    benchmark:
        str(paths.benchmark("measure", "{dataset}", "{family}", "{variant}", "seeds"))
    shell:
        "xaibench measure --dataset {wildcards.dataset} --family {wildcards.family} --variant {wildcards.variant}"
        " --threads {threads} --config {params.settings:q} > {log} 2>&1"


rule aggregate:
    input:
        lambda w: steps.units(config, w.dataset),
    output:
        tables=kept([str(paths.metric_table("{dataset}", f)) for f in config["metrics"]["families"]]),
        rows=kept([str(paths.metric_table("{dataset}", f, "parquet")) for f in config["metrics"]["families"]]),
    params:
        settings=spec("aggregate"),
        code=code_version("aggregate"),
        families=" ".join(f"--family {f}" for f in config["metrics"]["families"]),
    log:
        str(paths.log("aggregate", "{dataset}")),
    benchmark:
        str(paths.benchmark("aggregate", "{dataset}"))
    shell:
        "xaibench aggregate --dataset {wildcards.dataset} {params.families} --config {params.settings:q} {input:q} > {log} 2>&1"


rule summary:
    input:
        [f for d in DATASETS for f in steps.units(config, d) + steps.metric_tables(config, d)],
        [steps.model_file(d, v, s, "summary.json") for d in DATASETS for v, s in steps.models(config)],
        claims=str(paths.CLAIMS),
    output:
        headline=kept(str(paths.SUMMARY)),
        detail=kept(str(paths.METRICS_SUMMARY)),
    params:
        settings=spec("summary"),
        code=code_version("summary"),
    log:
        str(paths.log("summary")),
    benchmark:
        str(paths.benchmark("summary"))
    shell:
        "xaibench summary --config {params.settings:q} --claims {input.claims:q} --out {output.headline:q}"
        " --detail {output.detail:q} > {log} 2>&1"
