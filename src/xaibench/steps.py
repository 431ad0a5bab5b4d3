"""Step specs: for every pipeline step, the settings it reads, the models it runs for and its files.

The Snakefile's rules take their params, inputs and outputs from here, and the CLI takes each step's
settings from here, so a step run by hand gets exactly what its job in the DAG gets: the same
settings slice (`settings`) and the same seeds (`seeds`). A step that reads a setting its spec does
not declare fails at once with `UndeclaredSetting`, instead of silently reading a schema default
(the rule's params trigger would never have seen that key, so a change to it would rerun nothing).

Torch-free (the Snakefile plans with it): it reads the catalog, the settings and `paths` only.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json

from . import catalog, paths

STEPS = ("prepare", "train", "explain", "generate", "measure", "aggregate", "claims", "leaderboard", "summary", "figures",
         "discrimination")


class UndeclaredSetting(RuntimeError):
    """A step read a settings key its spec (`keys`) does not declare (not a KeyError: code that
    handles a missing key must never swallow it)."""


class Settings(dict):
    """A settings slice: reading a key outside what the step declared raises UndeclaredSetting.

    Only partly declared sections are `Settings`; a declared section is a plain dict (a key missing
    there is missing from the settings, e.g. an explainer without options, and `.get` defaults)."""

    def __init__(self, step: str, path: str = ""):
        super().__init__()
        self._step, self._path, self._declared = step, path, set()

    def _check(self, key):
        if key not in self._declared:
            raise UndeclaredSetting(f"step '{self._step}' reads setting '{self._path}{key}', which its spec does "
                                    f"not declare (add it to xaibench/steps.py `keys`)")

    def __getitem__(self, key):
        self._check(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._check(key)
        return dict.get(self, key, default)

    def __deepcopy__(self, memo):
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}


def declare(cfg: dict, step: str, keys: list[str]) -> Settings:
    """The slice of `cfg` holding exactly `keys` (dotted paths), guarded against reading any other key."""
    out = Settings(step)
    for key in keys:
        *parents, last = key.split(".")
        src, node = cfg, out
        for i, part in enumerate(parents):
            src = src.get(part, {}) if isinstance(src, dict) else {}
            node._declared.add(part)
            if not isinstance(dict.get(node, part), Settings):
                if part in node:  # already declared whole by a shorter key
                    break
                dict.__setitem__(node, part, Settings(step, ".".join(parents[:i + 1]) + "."))
            node = dict.__getitem__(node, part)
        else:
            node._declared.add(last)
            if isinstance(src, dict) and last in src:
                dict.__setitem__(node, last, copy.deepcopy(src[last]))
    return out


def as_json(settings: dict) -> str:
    """A slice as the JSON a rule passes on its command line (sorted, so equal settings give equal params)."""
    return json.dumps(settings, sort_keys=True)


# ---- which settings define what -------------------------------------------------------------------

def _seed_list_keys() -> set[str]:
    """train.* key paths of every variant's own seed list (e.g. train.lap.plugin.seeds)."""
    return {f"train.{e['seeds']}" for e in catalog.VARIANTS.values() if e.get("seeds")}


def _expand(cfg: dict, key: str, leave_out: set[str]) -> list[str]:
    """`key`, or its children (recursively) when a key to leave out lies inside it."""
    inside = [x for x in leave_out if x.startswith(key + ".")]
    if key in leave_out:
        return []
    if not inside:
        return [key]
    node = cfg
    for part in key.split("."):
        node = node[part]
    return [k for child in node for k in _expand(cfg, f"{key}.{child}", leave_out)]


def model_keys(cfg: dict, variant: str) -> list[str]:
    """The training settings that define `variant`'s models: the shared ones plus the variant's own
    block only (so LAP settings never retrain or re-explain `standard`), without any seed list (which
    seeds run is not part of what a model is, so adding a seed reruns no other seed's jobs). An
    external model is defined by its own `models.external` block alone."""
    if catalog.is_external(variant):
        return [f"models.external.{variant}"]
    blocks = {e.get("settings") for e in catalog.VARIANTS.values()} - {None}
    own = catalog.VARIANTS[variant].get("settings")
    shared = [f"train.{k}" for k in cfg["train"] if k not in blocks | {"variants", "seeds", "threads"}]
    return shared + (_expand(cfg, f"train.{own}", _seed_list_keys()) if own else [])


def seed_keys(variant: str) -> list[str]:
    """What decides the seeds a variant is trained for (`seeds`)."""
    if catalog.is_external(variant):
        return []  # always seed 0 (catalog.EXTERNAL_SEEDS)
    own = catalog.VARIANTS[variant].get("seeds")
    return ["train.seeds"] + ([f"train.{own}"] if own else [])


def seeds(cfg: dict, variant: str) -> list[int]:
    """The seeds `variant` is trained for: train.seeds, restricted by the variant's own seed list."""
    return catalog.seeds_for(cfg, variant)


def _rest(cfg: dict, section: str, *leave_out: str) -> list[str]:
    return [f"{section}.{k}" for k in cfg[section] if k not in leave_out]


def keys(step: str, cfg: dict, *, dataset: str | None = None, variant: str | None = None,
         families: list[str] | None = None, family: str | None = None, methods: list[str] | None = None,
         **_) -> list[str]:
    """The settings keys `step` reads for one job (dotted paths into the validated settings).

    The list depends on the job (its wildcards, families, methods) and on which keys the settings
    have, never on their values: the CLI recomputes it from the rule's slice, filled with defaults."""
    families = families or ([family] if family else [])
    if step == "prepare":
        return ["data.seed", "data.image_size", f"data.{dataset}"]
    if step == "train":
        return ["device", "train.threads", *model_keys(cfg, variant)]
    if step == "explain":
        return ["device", *model_keys(cfg, variant), "explain.target", "explain.batch_size",
                *[f"explain.options.{m}" for m in methods]]
    if step == "generate":
        return ["device", *model_keys(cfg, variant), *_rest(cfg, "featviz", "variants", "seeds")]
    if step == "measure":
        per_model = all(catalog.FAMILIES[f]["scope"] == "model" for f in families)
        out = ["device", "explain", *_rest(cfg, "metrics", "families"), *model_keys(cfg, variant)]
        if not per_model:
            out += seed_keys(variant)  # families spanning seeds: which seeds they compare
        if per_model and any("generated_images" in catalog.FAMILIES[f]["needs"] for f in families):
            out += ["featviz.variants", "featviz.seeds"]  # narrowed to this model by `settings`
        named = {v for lists in (cfg["explain"].get("variants") or {}, cfg["metrics"]["variants"])
                 for vs in lists.values() for v in vs or ()}  # other external models these lists name
        return out + [f"models.external.{v}" for v in sorted(named) if v != variant
                      and catalog.is_external(v)]
    if step in ("aggregate", "discrimination"):  # read per-image rows and the catalog only
        return []
    if step in ("claims", "summary"):  # summary: the headline's accuracies and gate counts (claims.Run)
        return ["datasets", "metrics.families", "train.variants", "gate", "claims", *_external(cfg),
                *sorted({k for v in catalog.VARIANTS for k in seed_keys(v)})]
    if step == "leaderboard":  # every setting that defines the results: their hash identifies the run
        return [k for k in cfg if k not in ("run", "figures", "models")] + _external(cfg)  # no models: the hash as before
    if step == "figures":
        return ["figures", "datasets", "gate", *_rest(cfg, "train", "threads"), "metrics",
                *[f"explain.{k}" for k in ("methods", "variants", "splits", "options")],
                "data.shapes.classes", "featviz.variants", "featviz.seeds", *_external(cfg)]
    raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")


def _external(cfg: dict) -> list[str]:
    """`models.external` for steps that see every variant (their names must be known to the catalog)."""
    return ["models.external"] if cfg.get("models", {}).get("external") else []


def settings(step: str, cfg: dict, **job) -> Settings:
    """The settings slice `step` gets for one job: its rule's params in the DAG, and what the CLI
    hands the step (from the rule's JSON or from params.yaml by hand: the same slice either way)."""
    if step == "measure" and "featviz" in cfg and job.get("seed") is not None:
        # paper B: only whether this model has prototypes, so other featviz settings never rerun it
        fv, seed = cfg["featviz"], int(job["seed"])
        chosen = job["variant"] in fv["variants"] and seed in fv["seeds"]
        cfg = {**cfg, "featviz": {**fv, "variants": [job["variant"]] if chosen else [], "seeds": [seed] if chosen else []}}
    return declare(cfg, step, keys(step, cfg, **job))


# ---- the jobs of a configuration and their files ---------------------------------------------------

def models(cfg: dict) -> list[tuple[str, int]]:
    """Every (variant, seed) the configuration trains."""
    return [(v, s) for v in cfg["train"]["variants"] for s in seeds(cfg, v)]


def model_families(cfg: dict) -> list[str]:
    return [f for f in cfg["metrics"]["families"] if catalog.FAMILIES[f]["scope"] == "model"]


def variant_families(cfg: dict) -> list[str]:
    return [f for f in cfg["metrics"]["families"] if catalog.FAMILIES[f]["scope"] == "variant"]


MODEL_OUTPUTS = ("model.pt", "history.csv", "summary.json")


def model_file(dataset, variant, seed, name: str = "model.pt") -> str:
    return str(paths.model_dir(dataset, variant, seed) / name)


def prepared_files(cfg: dict, dataset: str) -> list[str]:
    """Every file `xaibench prepare` writes for a dataset: one per split, and meta.json."""
    from .data import split_names  # light: numpy and PIL only
    root = paths.prepared(dataset)
    return [str(root / f"{split}.npz") for split in split_names(dataset, cfg["data"])] + [str(root / "meta.json")]


def train_inputs(cfg: dict, dataset: str, variant: str, seed) -> dict[str, str]:
    """The prepared data, plus the trained model a derived variant starts from (lap_plugin: standard)."""
    files = {"data": str(paths.prepared(dataset) / "meta.json")}
    source = catalog.VARIANTS[variant].get("source")
    if source:
        files["source"] = model_file(dataset, source, seed)
    if catalog.is_external(variant):  # the file itself: replacing it reruns its model's jobs
        files["checkpoint"] = cfg["models"]["external"][variant]["path"]
    return files


# The DVC stage whose code each step runs (dvc.yaml; its lists of src files are derived from the imports
# by tests/unit/test_faults.py, so they are the one record of which modules a step runs).
STAGE_OF = {"prepare": "prepare", "train": "train", "explain": "explain", "generate": "generate",
            "measure": "measure", "aggregate": "measure", "summary": "measure", "claims": "measure",
            "leaderboard": "measure", "figures": "figures"}


def code_version(step: str, project: str, plugin_files: tuple[str, ...] = ()) -> str:
    """A content hash of the code one job of `step` runs: the `src/xaibench` Python files its DVC stage
    depends on (dvc.yaml in `project`, read from the installed package) and the plugin files the job
    runs (`code`). A rule's param, so a changed module or plugin reruns the jobs that run it (DVC marks
    the stage); Snakemake's own code trigger sees only rule bodies, and a timestamp would rerun after a
    checkout or reinstall that leaves the bytes alone. The schema is left out: its defaults reach the
    jobs through their settings slices (`settings`)."""
    digest = hashlib.sha256(_library_version(STAGE_OF[step], project).encode())
    for file in plugin_files:
        digest.update(file.encode() + b"\0" + _read(file) + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _library_version(stage: str, project: str) -> str:
    from pathlib import Path

    import yaml

    stages = yaml.safe_load((Path(project) / "dvc.yaml").read_text())["stages"]
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for dep in sorted(d for d in stages[stage]["deps"] if d.startswith("src/xaibench/")):
        where = package / dep.removeprefix("src/xaibench/")
        for file in sorted(where.rglob("*.py")) if where.is_dir() else [where] if where.suffix == ".py" else []:
            digest.update(str(file.relative_to(package)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def code(step: str, cfg: dict, *, dataset: str | None = None, variant: str | None = None,
         methods: list[str] = (), families: list[str] = (), figures: list[str] = ()) -> list[str]:
    """The installed plugins' source files one job of `step` runs (hashed into its rule's `code` param,
    `code_version`, so a changed plugin reruns exactly the jobs that use it); [] without plugins."""
    if not catalog.PLUGINS:
        return []
    variants = [variant] if variant else []
    archs = [cfg["train"]["arch"]] if step in ("train", "explain", "generate", "measure") else []
    if step == "measure":  # families re-explain with the variant's methods (maps_for)
        methods = catalog.methods_for(cfg["explain"], variant)
    return catalog.plugin_files(datasets=[dataset] if dataset else [], variants=variants, architectures=archs,
                                explainers=methods, families=families, figures=figures)


def explain_outputs(cfg: dict, variant: str) -> list[str]:
    """One explanation file per method that applies to `variant` (wildcards: dataset, seed, split)."""
    return [str(paths.explanation("{dataset}", variant, "{seed}", m, "{split}"))
            for m in catalog.methods_for(cfg["explain"], variant)]


def measure_inputs(cfg: dict, dataset: str, variant: str, seed=None, family: str | None = None) -> list[str]:
    """Checkpoints and/or every method × split explanation of the model(s) a measure job reads."""
    families, unit_seeds = (model_families(cfg), [seed]) if seed is not None else ([family], seeds(cfg, variant))
    needs = {n for f in families for n in catalog.FAMILIES[f]["needs"]}
    featviz = catalog.featviz_models(cfg)
    files = []
    for s in unit_seeds:
        if "models" in needs:
            files += [model_file(dataset, variant, s), model_file(dataset, variant, s, "summary.json")]
        if "explanations" in needs:
            files += [str(paths.explanation(dataset, variant, s, m, sp))
                      for m in catalog.methods_for(cfg["explain"], variant) for sp in cfg["explain"]["splits"]]
        if "generated_images" in needs and (variant, int(s)) in featviz:
            files.append(str(paths.prototypes(dataset, variant, s)))
    return files


def measure_outputs(cfg: dict) -> list[str]:
    """The per-model measure job's files (wildcards: dataset, variant, seed)."""
    return [str(paths.measure_unit("{dataset}", f, "{variant}", "seed{seed}")) for f in model_families(cfg)]


def units(cfg: dict, dataset: str) -> list[str]:
    """Every per-model (or per-variant) rows file of every configured family of a dataset."""
    def of(family, variant):
        if catalog.FAMILIES[family]["scope"] == "model":
            return [f"seed{s}" for s in seeds(cfg, variant)]
        return ["seeds"] if catalog.scores(cfg, family, variant) else []  # `scores` asks for >= 2 seeds
    return [str(paths.measure_unit(dataset, f, v, u)) for f in cfg["metrics"]["families"]
            for v in cfg["train"]["variants"] for u in of(f, v)]


def metric_tables(cfg: dict, dataset: str) -> list[str]:
    return [str(paths.metric_table(dataset, f, ext)) for f in cfg["metrics"]["families"] for ext in ("csv", "parquet")]


def figure_inputs(cfg: dict, dataset: str, names: list[str]) -> list[str]:
    """What drawing the figures `names` reads: their metric tables, explanation files, generated
    prototypes and (for figures that run a model) checkpoints."""
    needs = {n for name in names for n in catalog.figure_reads(name)}
    files = [str(paths.metric_table(dataset, f, ext)) for f in cfg["metrics"]["families"] if f in needs
             for ext in ("csv", "parquet")]
    if "explanations" in needs:
        files += [str(paths.explanation(dataset, v, s, m, "test"))
                  for v, s in models(cfg) for m in catalog.methods_for(cfg["explain"], v)]
    if "generated_images" in needs:
        files += [str(paths.prototypes(dataset, v, s)) for v, s in catalog.featviz_models(cfg)]
    if "claims" in needs:
        files.append(str(paths.CLAIMS))
    if "leaderboard" in needs:
        files.append(str(paths.leaderboard(dataset)))
    files += [model_file(dataset, v, seeds(cfg, v)[0]) for name in names
              for v in catalog.FIGURES[name].get("variants", []) if v in cfg["train"]["variants"]]
    return sorted(set(files))


def claims_inputs(cfg: dict) -> list[str]:
    """What the claims step reads: every family's per-image rows, every model's summary, the data's meta."""
    return ([str(paths.metric_table(d, f, "parquet")) for d in cfg["datasets"] for f in cfg["metrics"]["families"]]
            + [model_file(d, v, s, "summary.json") for d in cfg["datasets"] for v, s in models(cfg)]
            + [str(paths.prepared(d) / "meta.json") for d in cfg["datasets"]])


def leaderboard_inputs(cfg: dict, dataset: str) -> list[str]:
    """What the leaderboard of `dataset` reads: its per-image rows, every model's summary (the gate),
    and every test's validity (written by the claims step)."""
    return ([f for f in metric_tables(cfg, dataset) if f.endswith(".parquet")]
            + [model_file(dataset, v, s, "summary.json") for v, s in models(cfg)] + [str(paths.VALIDITY)])


def figure_files(cfg: dict, dataset: str, names: list[str]) -> dict[str, list[str]]:
    """The figures (first format: shown in the report; other formats) and tables `names` write."""
    formats = cfg["figures"]["formats"]
    return {"shown": [str(paths.figures(dataset) / f"{n}.{formats[0]}") for n in names],
            "other": [str(paths.figures(dataset) / f"{n}.{ext}") for n in names for ext in formats[1:]],
            "tables": [str(paths.tables(dataset) / f"{n}.{ext}") for n in names
                       if catalog.FIGURES[n].get("table") for ext in ("md", "csv")]}


def phase_files(cfg: dict) -> dict[str, list[str]]:
    """Every file of every phase (the phase targets name them all, so a deleted intermediate file
    is regenerated: Snakemake only rebuilds a missing file that a job it runs asks for)."""
    datasets, figures = cfg["datasets"], catalog.figures_for(cfg)
    return {
        "prepare": [f for d in datasets for f in prepared_files(cfg, d)],
        "train": [model_file(d, v, s, n) for d in datasets for v, s in models(cfg) for n in MODEL_OUTPUTS],
        "explain": [str(paths.explanation(d, v, s, m, sp)) for d in datasets for v, s in models(cfg)
                    for m in catalog.methods_for(cfg["explain"], v) for sp in cfg["explain"]["splits"]],
        "generate": [str(paths.prototypes(d, v, s, ext)) for d in datasets for v, s in catalog.featviz_models(cfg)
                     for ext in ("npz", "png")],
        "measure": [f for d in datasets for f in units(cfg, d) + metric_tables(cfg, d)]
        + [str(p) for p in (paths.CLAIMS, paths.VALIDITY, paths.SUMMARY, paths.METRICS_SUMMARY)]
        + [str(paths.leaderboard(d, ext)) for d in datasets for ext in ("csv", "md")],
        "figures": [f for d in datasets for files in figure_files(cfg, d, figures).values() for f in files],
    }
