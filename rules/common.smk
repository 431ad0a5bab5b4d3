# Config validation and the small pure helpers that compute each rule's inputs and settings.
import json

from snakemake.exceptions import WorkflowError

from xaibench import catalog, paths
from xaibench import config as settings_schema

try:
    settings_schema.validate(config)
except settings_schema.ConfigError as exc:
    raise WorkflowError(f"invalid settings (params.yaml / --configfile): {exc}")

DATASETS = config["datasets"]
VARIANTS = config["train"]["variants"]
SEEDS = config["train"]["seeds"]
METHODS = config["explain"]["methods"]
SPLITS = config["explain"]["splits"]
FAMILIES = config["metrics"]["families"]
TRAINABLE = settings_schema.schema()["properties"]["train"]["properties"]["variants"]["items"]["enum"]
PLUGIN_SEEDS = (
    [s for s in config["train"]["lap"]["plugin"]["seeds"] if s in SEEDS]
    if {"standard", "lap"} <= set(VARIANTS) else []
)
FORMATS = ["png"] + [f for f in config["figures"]["formats"] if f != "png"]
HAVE = set(FAMILIES) | {"explanations"}
FIGURES = [n for n, spec in catalog.FIGURES.items()
           if set(spec["needs"]) <= HAVE and set(spec.get("variants", VARIANTS)) & set(VARIANTS)]


def scoped(scope):
    return [f for f in FAMILIES if catalog.FAMILIES[f]["scope"] == scope] or ["none"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    variant=r"[a-z][a-z0-9_]*",
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    split=r"[a-z][a-z0-9_]*",
    figure="|".join(catalog.FIGURES),
    family="|".join(catalog.FAMILIES),


def as_json(**sections):
    """The settings a rule uses, as JSON on its command line, so only they trigger its reruns."""
    return json.dumps(sections, sort_keys=True)


def without(section, *keys):
    return {k: v for k, v in config[section].items() if k not in keys}


def prepare_settings(wildcards):
    data = config["data"]
    return as_json(datasets=[wildcards.dataset],
                   data={"seed": data["seed"], "image_size": data["image_size"], wildcards.dataset: data[wildcards.dataset]})


def measure_settings(wildcards):
    extra = {"train": {"seeds": SEEDS}} if catalog.FAMILIES[wildcards.family]["scope"] == "variant" else {}
    return as_json(device=config["device"], explain=config["explain"], metrics=without("metrics", "families"), **extra)


def model_file(dataset, variant, seed):
    return str(paths.model_dir(dataset, variant, seed) / "model.pt")


def measure_inputs(wildcards):
    """Checkpoints and/or every method × split explanation of the model(s) a family unit reads."""
    needs = catalog.FAMILIES[wildcards.family]["needs"]
    seeds = [wildcards.seed] if "seed" in wildcards.keys() else SEEDS
    files = []
    for seed in seeds:
        if "models" in needs:
            files += [model_file(wildcards.dataset, wildcards.variant, seed),
                      str(paths.model_dir(wildcards.dataset, wildcards.variant, seed) / "summary.json")]
        if "explanations" in needs:
            files += [str(paths.explanation(wildcards.dataset, wildcards.variant, seed, m, s))
                      for m in catalog.methods_for(METHODS, wildcards.variant) for s in SPLITS]
    return files


def family_units(wildcards):
    scope = catalog.FAMILIES[wildcards.family]["scope"]
    units = [f"seed{s}" for s in SEEDS] if scope == "model" else ["seeds"]
    return [str(paths.measure_unit(wildcards.dataset, wildcards.family, v, u)) for v in VARIANTS for u in units]


def figure_inputs(wildcards):
    needs = catalog.FIGURES[wildcards.figure]["needs"]
    files = [str(paths.metric_table(wildcards.dataset, f)) for f in needs if f in catalog.FAMILIES]
    if "explanations" in needs:
        files += [str(paths.explanation(wildcards.dataset, v, s, m, "test"))
                  for v in VARIANTS for s in SEEDS for m in catalog.methods_for(METHODS, v)]
        if catalog.FIGURES[wildcards.figure].get("variants"):  # figures that run a model (e.g. LAP layer maps)
            files += [model_file(wildcards.dataset, v, SEEDS[0]) for v in catalog.FIGURES[wildcards.figure]["variants"]
                      if v in VARIANTS]
    return sorted(set(files))


def figure_settings(wildcards):
    return as_json(figures=config["figures"], datasets=DATASETS,
                   train={"variants": VARIANTS, "seeds": SEEDS}, explain={"methods": METHODS, "splits": SPLITS},
                   metrics={"families": FAMILIES}, data={"shapes": {"classes": config["data"]["shapes"]["classes"]}})


def model_files():
    return [model_file(d, v, s) for d in DATASETS for v in VARIANTS for s in SEEDS]


def explanation_files():
    return [str(paths.explanation(d, v, s, m, sp)) for d in DATASETS for v in VARIANTS for s in SEEDS
            for m in catalog.methods_for(METHODS, v) for sp in SPLITS]


def metric_tables():
    return [str(paths.metric_table(d, f)) for d in DATASETS for f in FAMILIES]


def plugin_files():
    """Paper C's plug-in: LAP put into trained `standard` models, when both variants are trained."""
    return [str(paths.model_dir(d, "lap_plugin", s) / "summary.json") for d in DATASETS for s in PLUGIN_SEEDS]


def figure_files():
    files = [str(paths.figures(d) / f"{name}.{ext}") for d in DATASETS for name in FIGURES for ext in FORMATS]
    return files + [str(paths.tables(d) / f"{name}.{ext}") for d in DATASETS for name in FIGURES
                    if catalog.FIGURES[name].get("table") for ext in ("md", "csv")]


def figure_names(table: bool) -> str:
    return "|".join(n for n, spec in catalog.FIGURES.items() if bool(spec.get("table")) == table)
