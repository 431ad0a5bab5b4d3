# Verdicts on the papers' claims (catalog.CLAIMS; docs/claims.md): after aggregate, read by summary and
# the `claims` figure. One job for every dataset: the step is pandas only (no torch import).


rule claims:
    input:
        tables=[str(paths.metric_table(d, f, "parquet")) for d in DATASETS for f in FAMILIES],
        models=[str(paths.model_dir(d, v, s) / "summary.json") for d in DATASETS for v, s in models()],
        meta=[str(paths.prepared(d) / "meta.json") for d in DATASETS],
    output:
        claims="results/claims.csv",
        validity="results/validity.csv",
    params:
        settings=as_json(datasets=DATASETS, claims=config["claims"], gate=config["gate"],
                         metrics={"families": FAMILIES}, train={"variants": VARIANTS, "seeds": SEEDS, **variant_seeds()}),
        registry=as_json(**catalog.CLAIMS),  # not passed: a changed or added claim reruns the job
    log:
        "results/logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
    shell:
        "xaibench claims --compute --out {output.claims:q} --validity {output.validity:q}"
        " --config {params.settings:q} > {log} 2>&1"
