# prepare: one rule per dataset, because each dataset has its own list of split files; every file is
# a declared output, so deleting any one of them makes the next run regenerate it.
for name in DATASETS:

    rule:
        name:
            f"prepare_{name}"
        output:
            kept(steps.prepared_files(config, name)),
        params:
            settings=spec("prepare", dataset=name),
        log:
            str(paths.log("prepare", f"{name}")),
        benchmark:
            str(paths.benchmark("prepare", f"{name}"))
        shell:
            f"xaibench prepare --dataset {name} --config {{params.settings:q}} > {{log}} 2>&1"
