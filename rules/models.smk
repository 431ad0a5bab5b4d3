# train -> explain, and paper B's generated prototypes. Priorities (higher starts first among ready
# jobs): every model is trained before the jobs that only read models, so no training job is left to
# start near the end with its explain / measure chain behind it while a core idles; then the long
# generate and explain jobs before the measures.


rule train_model:
    priority: 2
    input:
        unpack(lambda w: steps.train_inputs(config, w.dataset, w.variant, w.seed)),
    output:
        kept([steps.model_file("{dataset}", "{variant}", "{seed}", name) for name in steps.MODEL_OUTPUTS]),
    params:
        settings=spec("train"),
        code=code_version("train", variant=lambda w: w.variant),
    threads: config["train"]["threads"]
    resources:
        gpu=0,
    log:
        str(paths.log("train", "{dataset}", "{variant}", "seed{seed}")),
    benchmark:
        str(paths.benchmark("train", "{dataset}", "{variant}", "seed{seed}"))
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
            data=str(paths.prepared("{dataset}") / "meta.json"),
            model=steps.model_file("{dataset}", variant, "{seed}"),
        output:
            kept(steps.explain_outputs(config, variant)),
        params:
            settings=spec("explain", variant=variant, methods=catalog.methods_for(config["explain"], variant)),
            code=code_version("explain", variant=variant, methods=catalog.methods_for(config["explain"], variant)),
            methods=" ".join(f"--method {m}" for m in catalog.methods_for(config["explain"], variant)),
            variant=variant,
        threads: 1
        log:
            str(paths.log("explain", "{dataset}", variant, "seed{seed}", "{split}")),
        benchmark:
            str(paths.benchmark("explain", "{dataset}", variant, "seed{seed}", "{split}"))
        shell:
            "xaibench explain --dataset {wildcards.dataset} --variant {params.variant} --seed {wildcards.seed}"
            " {params.methods} --split {wildcards.split} --threads {threads} --config {params.settings:q} > {log} 2>&1"


# Paper B: one image per class by every featviz method, for the models selected in `featviz`.
rule generate_prototypes:
    priority: 1
    input:
        data=str(paths.prepared("{dataset}") / "meta.json"),
        model=steps.model_file("{dataset}", "{variant}", "{seed}"),
    output:
        kept([str(paths.prototypes("{dataset}", "{variant}", "{seed}", ext)) for ext in ("npz", "png")]),
    params:
        settings=spec("generate"),
        code=code_version("generate", variant=lambda w: w.variant),
    threads: 1
    log:
        str(paths.log("generate", "{dataset}", "{variant}", "seed{seed}")),
    benchmark:
        str(paths.benchmark("generate", "{dataset}", "{variant}", "seed{seed}"))
    shell:
        "xaibench generate --dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --threads {threads} --config {params.settings:q} > {log} 2>&1"
