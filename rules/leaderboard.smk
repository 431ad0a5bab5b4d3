# The leaderboard (xaibench.leaderboard; docs/leaderboard.md): every (variant, explainer) pair against each
# family's headline metric, after the claims step (it reads results/validity.csv); drawn by the figures
# step (figure `leaderboard`, the report's front page). One job per dataset: pandas only (no torch import).


rule leaderboard:
    input:
        lambda w: steps.leaderboard_inputs(config, w.dataset),
    output:
        csv=kept(str(paths.leaderboard("{dataset}"))),
        md=kept(str(paths.leaderboard("{dataset}", "md"))),
    params:
        settings=spec("leaderboard"),
        code=code_version("leaderboard"),
    log:
        str(paths.log("leaderboard", "{dataset}")),
    benchmark:
        str(paths.benchmark("leaderboard", "{dataset}"))
    shell:
        "xaibench leaderboard --compute --dataset {wildcards.dataset} --config {params.settings:q} > {log} 2>&1"
