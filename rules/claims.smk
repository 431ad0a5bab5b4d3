# Verdicts on the papers' claims (catalog.CLAIMS; docs/claims.md): after aggregate, read by summary and
# the `claims` figure. One job for every dataset: the step is pandas only (no torch import).


rule claims:
    input:
        steps.claims_inputs(config),
    output:
        claims=kept(str(paths.CLAIMS)),
        validity=kept(str(paths.VALIDITY)),
    params:
        settings=spec("claims"),
        code=code_version("claims"),
        registry=steps.as_json(catalog.CLAIMS),  # not passed: a changed or added claim reruns the job
    log:
        str(paths.log("claims")),
    benchmark:
        str(paths.benchmark("claims"))
    shell:
        "xaibench claims --compute --out {output.claims:q} --validity {output.validity:q}"
        " --config {params.settings:q} > {log} 2>&1"
