# Config validation and the small pure helpers that compute each rule's inputs and settings.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError

from xaibench import catalog, paths
from xaibench import config as settings_schema
from xaibench.data import split_names


def clear_stale_locks():
    """Let a plain rerun recover from a killed run: drop Snakemake's directory locks when no other
    run of this workflow is alive.

    Every main Snakemake process holds an flock on .snakemake/xaibench-run.lock for its lifetime;
    the OS releases it when the process dies, even on SIGKILL. If we can take it, nobody else runs
    here and the locks in .snakemake/locks are left over from a crash (what `--unlock` removes).
    If another run is alive we take nothing and Snakemake's own lock check applies as usual.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: keep Snakemake's behaviour (`snakemake --unlock` after a crash)
        return None
    Path(".snakemake").mkdir(exist_ok=True)
    handle = open(".snakemake/xaibench-run.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    for stale in Path(".snakemake/locks").glob("*.lock"):
        stale.unlink(missing_ok=True)
    return handle


RUN_LOCK = clear_stale_locks() if workflow.is_main_process else None

try:
    settings_schema.validate(config)
except settings_schema.ConfigError as exc:
    raise WorkflowError(f"invalid settings (params.yaml / --configfile): {exc}")

DATASETS = config["datasets"]
VARIANTS = config["train"]["variants"]
SEEDS = config["train"]["seeds"]
EXPLAIN = config["explain"]
SPLITS = EXPLAIN["splits"]
FAMILIES = config["metrics"]["families"]
FORMATS = config["figures"]["formats"]
FEATVIZ = catalog.featviz_models(config)  # paper B: the (variant, seed) models that get prototypes
FIGURES = catalog.figures_for(config)


MODEL_FAMILIES = [f for f in FAMILIES if catalog.FAMILIES[f]["scope"] == "model"]
VARIANT_FAMILIES = [f for f in FAMILIES if catalog.FAMILIES[f]["scope"] == "variant"]
TABLES = [name for name in FIGURES if catalog.FIGURES[name].get("table")]
FIGURE_PARTS = catalog.figure_parts(FIGURES)  # two jobs of about equal drawing time


wildcard_constraints:
    dataset="|".join(DATASETS),
    variant=r"[a-z][a-z0-9_]*",
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    split=r"[a-z][a-z0-9_]*",
    family="|".join(catalog.FAMILIES),


def as_json(**sections):
    """The settings a rule uses, as JSON on its command line, so only they trigger its reruns."""
    return json.dumps(sections, sort_keys=True)


def without(section, *keys):
    return {k: v for k, v in config[section].items() if k not in keys}


# The training settings a model was made with: every step that loads a model passes them, so the
# model's stored config is checked against them (xaibench.training.fit.load_trained).
MODEL_SETTINGS = without("train", "variants", "seeds", "threads")


def prepare_settings(dataset):
    data = config["data"]
    return as_json(datasets=[dataset],
                   data={"seed": data["seed"], "image_size": data["image_size"], dataset: data[dataset]})


def prepared_files(dataset):
    """Every file `xaibench prepare` writes for a dataset: one per split, and meta.json."""
    root = paths.prepared(dataset)
    return [str(root / f"{split}.npz") for split in split_names(dataset, config["data"])] + [str(root / "meta.json")]


def seeds_of(variant):
    """The seeds a variant is trained for (train.seeds, or the subset its settings name)."""
    return catalog.seeds_for(config, variant)


def models():
    """Every (variant, seed) the configuration trains."""
    return [(v, s) for v in VARIANTS for s in seeds_of(v)]


def variant_seeds():
    """train.{key path}: seeds for every variant that restricts its seeds (what figures and summary read)."""
    out = {}
    for variant, entry in catalog.VARIANTS.items():
        if entry.get("seeds"):
            *parents, last = entry["seeds"].split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = seeds_of(variant)
    return out



def model_settings(variant):
    """The training settings that define `variant`'s models: the shared ones plus the variant's own
    block only (so LAP settings never retrain or re-explain `standard`)."""
    own = catalog.VARIANTS[variant].get("settings")
    blocks = {e.get("settings") for e in catalog.VARIANTS.values()}
    train = {k: v for k, v in MODEL_SETTINGS.items() if k not in blocks}
    if own:
        train[own] = config["train"][own]
    return catalog.without_seed_lists(train)  # adding a seed must not rerun the other seeds' jobs


def train_settings(wildcards):
    return as_json(device=config["device"], train={**model_settings(wildcards.variant),
                                                   "threads": config["train"]["threads"]})


def train_inputs(wildcards):
    """The prepared data, plus the trained model a derived variant starts from (lap_plugin: standard)."""
    files = {"data": str(paths.prepared(wildcards.dataset) / "meta.json")}
    source = catalog.VARIANTS[wildcards.variant].get("source")
    if source:
        files["source"] = model_file(wildcards.dataset, source, wildcards.seed)
    return files


def explain_settings(variant):
    """Only the explanation settings and the options of the methods that apply to `variant`."""
    methods = catalog.methods_for(EXPLAIN, variant)
    return as_json(device=config["device"], train=model_settings(variant),
                   explain={"target": EXPLAIN["target"], "batch_size": EXPLAIN["batch_size"],
                            "options": {m: EXPLAIN["options"][m] for m in methods if m in EXPLAIN["options"]}})


def measure_settings(wildcards):
    seeds = {} if "seed" in wildcards.keys() else {"seeds": seeds_of(wildcards.variant)}  # families spanning seeds
    extra = {}
    if "seed" in wildcards.keys() and any("prototypes" in catalog.FAMILIES[f]["needs"] for f in MODEL_FAMILIES):
        # paper B: only whether this model has prototypes (so other featviz settings never rerun it)
        chosen = (wildcards.variant, int(wildcards.seed)) in FEATVIZ
        extra["featviz"] = {"variants": [wildcards.variant] if chosen else [], "seeds": [int(wildcards.seed)] if chosen else []}
    return as_json(device=config["device"], explain=config["explain"], metrics=without("metrics", "families"),
                   train={**model_settings(wildcards.variant), **seeds}, **extra)


def model_file(dataset, variant, seed):
    return str(paths.model_dir(dataset, variant, seed) / "model.pt")


def measure_inputs(wildcards):
    """Checkpoints and/or every method × split explanation of the model(s) a measure job reads."""
    if "seed" in wildcards.keys():
        families, seeds = MODEL_FAMILIES, [wildcards.seed]
    else:
        families, seeds = [wildcards.family], seeds_of(wildcards.variant)
    needs = {n for f in families for n in catalog.FAMILIES[f]["needs"]}
    files = []
    for seed in seeds:
        if "models" in needs:
            files += [model_file(wildcards.dataset, wildcards.variant, seed),
                      str(paths.model_dir(wildcards.dataset, wildcards.variant, seed) / "summary.json")]
        if "explanations" in needs:
            files += [str(paths.explanation(wildcards.dataset, wildcards.variant, seed, m, s))
                      for m in catalog.methods_for(EXPLAIN, wildcards.variant) for s in SPLITS]
        if "prototypes" in needs and (wildcards.variant, int(seed)) in FEATVIZ:
            files.append(str(paths.prototypes(wildcards.dataset, wildcards.variant, seed)))
    return files


def featviz_settings(wildcards):
    """Paper B generation settings (methods and options; which models get them is the DAG's business),
    with the model's training settings (checked against the checkpoint)."""
    return as_json(device=config["device"], train=model_settings(wildcards.variant),
                   featviz=without("featviz", "variants", "seeds"))


def prototype_files():
    return [str(paths.prototypes(d, v, s, ext)) for d in DATASETS for v, s in FEATVIZ for ext in ("npz", "png")]


def dataset_units(dataset):
    """Every per-model (or per-variant) rows file of every configured family of a dataset."""
    def units(family, variant):
        if catalog.FAMILIES[family]["scope"] == "model":
            return [f"seed{s}" for s in seeds_of(variant)]
        # families across seeds (stability) need two seeds; single-seed variants skip them unless none
        # has two; a variant the family does not score (catalog.scores) gets no job (per-model
        # families, measured together in one job per model, write it no rows instead)
        if not catalog.scores(config, family, variant):
            return []
        several = any(len(seeds_of(v)) > 1 for v in VARIANTS)
        return ["seeds"] if len(seeds_of(variant)) > 1 or not several else []

    return [str(paths.measure_unit(dataset, f, v, u)) for f in FAMILIES for v in VARIANTS for u in units(f, v)]


def family_units(wildcards):
    return dataset_units(wildcards.dataset)


def figure_inputs(names):
    """Input function for drawing the figures `names`: their metric tables, explanation files and
    (for figures that run a model) checkpoints."""

    def inputs(wildcards):
        needs = {n for name in names for n in catalog.FIGURES[name]["needs"]}
        files = [str(paths.metric_table(wildcards.dataset, f, ext)) for f in FAMILIES if f in needs
                 for ext in ("csv", "parquet")]
        if "explanations" in needs:
            files += [str(paths.explanation(wildcards.dataset, v, s, m, "test"))
                      for v, s in models() for m in catalog.methods_for(EXPLAIN, v)]
        if "prototypes" in needs:
            files += [str(paths.prototypes(wildcards.dataset, v, s)) for v, s in FEATVIZ]
        if "claims" in needs:
            files.append("results/claims.csv")
        files += [model_file(wildcards.dataset, v, seeds_of(v)[0]) for name in names
                  for v in catalog.FIGURES[name].get("variants", []) if v in VARIANTS]
        return sorted(set(files))

    return inputs


def figure_settings(wildcards):
    """Every setting a figure may print or filter by (metrics in full: e.g. the deletion baseline)."""
    return as_json(figures=config["figures"], datasets=DATASETS,
                   train=settings_schema.deep_merge({**MODEL_SETTINGS, "variants": VARIANTS, "seeds": SEEDS}, variant_seeds()),
                   explain={k: EXPLAIN[k] for k in ("methods", "variants", "splits", "options")}, metrics=config["metrics"],
                   data={"shapes": {"classes": config["data"]["shapes"]["classes"]}},
                   featviz={"variants": config["featviz"]["variants"], "seeds": config["featviz"]["seeds"]})


MODEL_OUTPUTS = ("model.pt", "history.csv", "summary.json")


def model_files():
    """Every file of every trained model."""
    return [str(paths.model_dir(d, v, s) / name) for d in DATASETS for v, s in models() for name in MODEL_OUTPUTS]


def explanation_files():
    return [str(paths.explanation(d, v, s, m, sp)) for d in DATASETS for v, s in models()
            for m in catalog.methods_for(EXPLAIN, v) for sp in SPLITS]


def metric_tables():
    """Every per-model rows file and every tidy table (csv and parquet) of every dataset."""
    units = [u for d in DATASETS for u in dataset_units(d)]
    return units + [str(paths.metric_table(d, f, ext)) for d in DATASETS for f in FAMILIES for ext in ("csv", "parquet")]


def figure_files():
    files = [str(paths.figures(d) / f"{name}.{ext}") for d in DATASETS for name in FIGURES for ext in FORMATS]
    return files + [str(paths.tables(d) / f"{name}.{ext}") for d in DATASETS for name in FIGURES
                    if catalog.FIGURES[name].get("table") for ext in ("md", "csv")]



