# Verdicts on the papers' claims (catalog.CLAIMS; docs/claims.md): after aggregate, read by summary and
# the `claims` figure. One job for every dataset: the step is pandas only (no torch import).


rule claims:
    input:
        tables=[f for d in DATASETS for f in steps.metric_tables(config, d) if f.endswith(".parquet")],
        models=[steps.model_file(d, v, s, "summary.json") for d in DATASETS for v, s in steps.models(config)],
        meta=[str(paths.prepared(d) / "meta.json") for d in DATASETS],
    output:
        claims=kept(str(paths.CLAIMS)),
        validity=kept(str(paths.VALIDITY)),
    params:
        settings=spec("claims"),
        registry=steps.as_json(catalog.CLAIMS),  # not passed: a changed or added claim reruns the job
    log:
        str(paths.log("claims")),
    benchmark:
        str(paths.benchmark("claims"))
    shell:
        "xaibench claims --compute --out {output.claims:q} --validity {output.validity:q}"
        " --config {params.settings:q} > {log} 2>&1"
