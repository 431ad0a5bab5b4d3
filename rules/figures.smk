# Figures are drawn by two jobs per dataset (the figure list split by drawing cost), so redrawing them
# all from existing metrics uses both cores; then where the run's time went; then `make bench`'s chart.
for part, names in enumerate(FIGURE_PARTS, start=1):
    files = steps.figure_files(config, "{dataset}", names)

    rule:
        name:
            f"draw_figures_{part}"
        input:
            lambda w, names=names: steps.figure_inputs(config, w.dataset, names),
        output:
            shown=[
                report(
                    update(path),
                    caption=os.path.abspath(os.path.join(workflow.basedir, catalog.figure_caption(name))),  # a plugin's own, absolute
                    category="{dataset}",
                    labels={"dataset": "{dataset}", "figure": name},
                )
                for name, path in zip(names, files["shown"])
            ],
            other=kept(files["other"]),
            tables=kept(files["tables"]),
        params:
            settings=spec("figures"),
            code=code_version("figures", figures=names),
            only=" ".join(f"--only {name}" for name in names),
        log:
            str(paths.log("figures", "{dataset}", f"part{part}")),
        benchmark:
            str(paths.benchmark("figures", "{dataset}", f"part{part}"))
        shell:
            "xaibench figures --dataset {wildcards.dataset} {params.only} --config {params.settings:q} > {log} 2>&1"


# Where the time went: every job's benchmark file as per-phase / per-rule sums and a timeline. It
# runs after every figure (their files are its input), so only its own job is missing from it.
rule timing:
    input:
        PHASES["figures"],
        str(paths.SUMMARY),
    output:
        report(update(str(paths.TIMING)), caption="../report/captions/timing.rst", category="run",
               labels={"figure": "timing"}),
    log:
        str(paths.log("figures", "timing")),
    shell:
        "python -m xaibench.figures.timing --benchmarks results/benchmarks --timing {output:q} > {log} 2>&1"


# `make bench` writes results/bench/speed.csv (paths.BENCH: no DVC stage's output, so a benchmark leaves
# `dvc status` clean); when it exists, the report shows its chart too.
SPEED_CSV = str(paths.BENCH / "speed.csv")


rule speed_figure:
    input:
        SPEED_CSV,
    output:
        report(update(str(paths.BENCH / "speed.png")), caption="../report/captions/speed.rst", category="run",
               labels={"figure": "speed"}),
    log:
        str(paths.log("bench", "speed")),
    shell:
        "python -m xaibench.figures.timing --speed {input:q} {output:q} > {log} 2>&1"
