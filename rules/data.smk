# prepare: one rule per dataset, because each dataset has its own list of split files; every file is
# a declared output, so deleting any one of them makes the next run regenerate it. A dataset read from
# raw files (folder, cub) has their content hash as a param, so adding, removing or changing an image
# reruns prepare and everything downstream (xaibench.data.raw_manifest; none for shapes and digits).
for name in DATASETS:

    rule:
        name:
            f"prepare_{name}"
        output:
            kept(steps.prepared_files(config, name)),
        params:
            settings=spec("prepare", dataset=name),
            code=code_version("prepare", dataset=name),
            **raw_files(name),
        log:
            str(paths.log("prepare", f"{name}")),
        benchmark:
            str(paths.benchmark("prepare", f"{name}"))
        shell:
            f"xaibench prepare --dataset {name} --config {{params.settings:q}} > {{log}} 2>&1"
