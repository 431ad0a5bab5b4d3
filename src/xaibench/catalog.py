"""What the suite can compute, as plain data: the index of every registry.

The Snakefile and the settings schema read this at parse time (it must stay import-light: no
torch, no matplotlib). Each entry names the module that implements it; `xaibench.registry.Registry`
imports that module the first time the name is asked for, and the module registers its object with
`@REGISTRY.register(name)`. Adding a dataset, architecture, training variant, explainer, metric
family or figure = one new module + one entry here (docs/architecture.md, "How to add ...").

Variant entries: `settings` is the variant's own block under `train` (part of its model config);
`provides` lists capabilities explainers may need (`linear_head`: the `Classifier` features → GAP →
linear form CAM reads; `plain_layers`: only the torch layers AGF's rule table propagates through; `lap`:
LAP attention; `prototype_layer`: a ProtoPNet prototype layer); `source` names the
variant whose trained model it starts from (trained first, same seed); `seeds` is a key path under
`train` restricting the variant to some seeds.
Explainer entries: `needs` is a capability a model must provide (the explainer applies only there).
Family scope: `model` runs once per trained model (dataset × variant × seed); `variant` runs once
per variant with every seed's outputs at hand (e.g. cross-run stability).
Family needs: `models` (checkpoints), `explanations` (maps of every method × split), `generated_images`
(paper B's generated images, results/prototypes/; only for the models `featviz_models` selects);
`applies_to` names a capability the variant must provide (else the family writes no rows for it).
Family maps: the preprocessing a map-scoring family applies to every map before scoring it (the
Quantus `general_preprocess` step, declared once): `positive` = the positive part (the evidence for
the explained class: mass, entropy and similarity measures are defined for non-negative salience, so
signed explainers such as gxi and agf are scored on it), `signed` = as the explainer gave it (rankings
and thresholds that use the sign: deletion, paper D's tests, whose own settings choose).
Family metrics: metric name -> score direction, "higher" or "lower" is better, or "none" where the
measure describes rather than ranks (figures and tables take arrows and sort orders from it).
Family `paper`: the paper(s) whose measure it is (the leaderboard's column groups; "sanity" for the
sanity checks). Family `headline`: its leaderboard column, "metric" or "metric:key=value,..." with the
filters split (default test), setting ("" = rows without one, the default; "*" = every non-empty one)
and levels ("all" or "positive"); without one, the first metric that has a direction (`headline`).
"""
from __future__ import annotations

import copy

# Dataset entries: `raw` names the keys of the dataset's settings block that are folders of raw files
# it reads (their listing and content are an input of its prepare step: `xaibench.data.raw_manifest`).
DATASETS = {
    "shapes": {"module": "xaibench.data.shapes", "derived_splits": {"nocue": "test"}},  # split: the split it copies
    "digits": {"module": "xaibench.data.digits"},
    "folder": {"module": "xaibench.data.folder", "raw": ["root", "masks"]},
    "cub": {"module": "xaibench.data.cub", "raw": ["root"]},  # CUB-200-2011 as distributed, cropped to bird boxes (paper A)
}

# strides: input side from which a total stride applies -> that stride (the feature map of the last
# block is image_size // stride a side; the ResNets keep the ImageNet stem from 128 px only).
ARCHITECTURES = {
    "small_cnn": {"module": "xaibench.models", "strides": {0: 8}},
    "resnet18": {"module": "xaibench.models", "strides": {0: 8, 128: 32}},
    "resnet34": {"module": "xaibench.models", "strides": {0: 8, 128: 32}},
}


def native_side(arch: str, image_size: int) -> int:
    """Side of the last feature map (the native grid of CAM-like maps) of `arch` at `image_size`."""
    strides = ARCHITECTURES[arch]["strides"]
    return image_size // strides[max(k for k in strides if k <= image_size)]

VARIANTS = {
    "standard": {"module": "xaibench.training.variants", "provides": ["linear_head", "plain_layers"]},
    "salience": {"module": "xaibench.training.variants", "settings": "cyborg", "provides": ["linear_head", "plain_layers"]},
    "lap": {"module": "xaibench.training.variants", "settings": "lap", "provides": ["lap", "linear_head"]},
    "lap_plugin": {"module": "xaibench.training.plugin", "settings": "lap", "provides": ["lap", "linear_head"],
                   "source": "standard", "seeds": "lap.plugin.seeds"},
    "protopnet": {"module": "xaibench.training.protopnet", "settings": "protopnet", "provides": ["prototype_layer"],
                  "source": "standard",
                  "seeds": "protopnet.seeds"},
    "protopnet_comp": {"module": "xaibench.training.protopnet", "settings": "protopnet", "provides": ["prototype_layer"],
                       "source": "standard",
                       "seeds": "protopnet.seeds"},
}

# Explainer `options`: every keyword option with its default (what `explain.options.{name}` may set;
# checked by name and type before any job runs; tests/unit/test_contracts.py holds them equal to the
# functions' signatures).
EXPLAINERS = {
    "gradcam": {"module": "xaibench.explain", "options": {"layer": None, "reshape": None}},
    "cam": {"module": "xaibench.explain", "needs": "linear_head", "options": {}},
    "lap": {"module": "xaibench.explain.lap", "needs": "lap", "options": {"combine": "cascade", "value": "attention"}},
    "attention_cam": {"module": "xaibench.explain.lap", "needs": "lap", "options": {}},
    "gradient": {"module": "xaibench.explain.attribution", "options": {"reduce": "abs_sum"}},
    "gxi": {"module": "xaibench.explain.attribution", "options": {"reduce": "sum"}},
    "ig": {"module": "xaibench.explain.attribution",
           "options": {"steps": 100, "baseline": "mean", "method": "riemann_trapezoid", "reduce": "abs_sum",
                       "internal_batch_size": 64}},
    "smoothgrad": {"module": "xaibench.explain.attribution",
                   "options": {"samples": 50, "noise": 0.15, "seed": 0, "reduce": "abs_sum", "internal_batch_size": 64}},
    "agf": {"module": "xaibench.explain.agf", "needs": "plain_layers",
            "options": {"seed": "gaussian", "no_fx": False, "no_m": False, "no_fdx": False, "no_a": False,
                        "no_reg": False, "gradcam": False, "flat": False, "block_flat": True, "zb_channels": 3,
                        "heaviside_slope": 10.0, "ridge": 1.0, "eps": 1e-9, "normalise": "max", "precision": "float64"}},
    "proto": {"module": "xaibench.explain.prototypes", "needs": "prototype_layer",
              "options": {"prototype": "class_top", "upsample": True}},
    # Controls (docs/sanity_checks.md): maps that ignore the model, scored by every map family as the
    # floor of its table. `control` = the reference line each is (`reference_kind`).
    "sobel": {"module": "xaibench.explain.controls", "options": {}, "control": "trivial"},
    "random": {"module": "xaibench.explain.controls", "options": {"seed": 0}, "control": "chance"},
    "constant": {"module": "xaibench.explain.controls", "options": {}, "control": "trivial"},
}

# Reference lines (docs/sanity_checks.md): the `baseline_*` maps that families score beside the
# explainers (metrics/localization.py `baseline_maps`, over_maps `references`) and the control
# explainers above are one notion: a line a real explainer must beat. "chance" (random maps),
# "oracle" (the ground-truth mask: the ceiling) or "trivial" (constant, centred blob, edges).
BASELINE_REFERENCES = {"baseline_random": "chance", "baseline_oracle": "oracle",
                       "baseline_uniform": "trivial", "baseline_gaussian": "trivial"}


def reference_kind(method: str) -> str | None:
    """"chance", "oracle" or "trivial" when `method` is a reference line (a family's `baseline_*` map or
    a control explainer), else None (a real explainer, or "model" for the model's own rows)."""
    return BASELINE_REFERENCES.get(method) or EXPLAINERS.get(method, {}).get("control")

# Paper B's image generators (featviz.methods), options as for explainers (featviz.options.{name}).
_TRANSFORMS = {"transform": True, "jitters": [0.0625, 0.03125],
               "scales": [0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1],
               "angles": [*range(-10, 11), 0, 0, 0, 0, 0]}
FEATVIZ = {
    "prototype": {"module": "xaibench.featviz.methods",
                  "options": {"steps": 1500, "lr": 0.05, "hf_weight": 1.0, "hf_norm": "l1", **_TRANSFORMS,
                              "use_baseline": True, "baseline_steps": 200, "baseline_lr": 0.01, "baseline_init": 0.0}},
    "fourier_fv": {"module": "xaibench.featviz.methods",
                   "options": {"steps": 512, "lr": 0.05, "sd": 0.01, "decay_power": 1.0, "decorrelate": True, **_TRANSFORMS}},
    "pixel_ascent": {"module": "xaibench.featviz.methods", "options": {"steps": 512, "lr": 0.05, "sd": 0.01}},
}


def methods_for(explain: dict, variant: str) -> list[str]:
    """The explainers of the `explain` settings that run on `variant`: those that apply to it (e.g.
    `lap` only to LAP models) and whose `explain.variants` entry, if any, lists it."""
    provides = set(VARIANTS[variant].get("provides", []))
    only = explain.get("variants") or {}
    return [m for m in explain["methods"] if EXPLAINERS[m].get("needs") in (None, *provides)
            and variant in only.get(m, [variant])]


def scores(cfg: dict, family: str, variant: str) -> bool:
    """Whether `family` has rows for `variant`: the variant provides the capability the family
    needs (`applies_to`, e.g. `prototype_layer`), `metrics.variants.{family}`, if set, lists it, and a
    family spanning seeds (scope `variant`, e.g. stability) has at least two of the variant's seeds
    to compare. The one place that decides it: measure jobs, the DAG and the CLI all ask here."""
    return not why_not_scored(cfg, family, variant)


def why_not_scored(cfg: dict, family: str, variant: str) -> str:
    """Why `family` has no rows for `variant` ('' when it has)."""
    needed = FAMILIES[family].get("applies_to")
    only = cfg["metrics"]["variants"].get(family)
    if needed and needed not in VARIANTS[variant].get("provides", []):
        return f"{family} applies to models with {needed}; {variant} has none"
    if only is not None and variant not in only:
        return f"metrics.variants.{family} does not list {variant}"
    if FAMILIES[family]["scope"] == "variant" and len(seeds_for(cfg, variant)) < 2:
        return f"{family} compares training runs; {variant} is trained for seeds {seeds_for(cfg, variant)} only"
    return ""


def seed_list(train: dict, variant: str) -> list[int] | None:
    """The seed list `variant` names under `train` (its `seeds` key path), or None when it names none
    or the settings do not hold it."""
    key = VARIANTS[variant].get("seeds")
    node = train
    for part in key.split(".") if key else [None]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, list) else None


def seeds_for(cfg: dict, variant: str) -> list[int]:
    """The seeds `variant` is trained for: train.seeds, restricted by the variant's own seed list."""
    if is_external(variant):
        return EXTERNAL_SEEDS
    own = seed_list(cfg["train"], variant)
    return [s for s in cfg["train"]["seeds"] if own is None or s in own]


def without_seed_lists(train: dict) -> dict:
    """A copy of training settings without any variant's seed list (e.g. lap.plugin.seeds): which
    seeds run is not part of what a model is, so it must not enter model configs or rule params."""
    out = copy.deepcopy(train)
    for entry in VARIANTS.values():
        *parents, last = entry.get("seeds", "").split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def featviz_models(cfg: dict) -> list[tuple[str, int]]:
    """The (variant, seed) models paper B generates prototypes for: featviz.variants that are trained
    (others are skipped) × featviz.seeds that the variant is trained for."""
    fv = cfg["featviz"]
    return [(v, s) for v in fv["variants"] if v in cfg["train"]["variants"] for s in seeds_for(cfg, v)
            if s in fv["seeds"]]


def figures_for(cfg: dict) -> list[str]:
    """Figures this configuration can draw: those whose needs (families, explanations, generated
    prototypes, the claims table, the leaderboard) are all computed and, where a figure names variants, one of
    them is trained."""
    have = set(cfg["metrics"]["families"]) | {"explanations", "claims", "leaderboard"} | ({"generated_images"} if featviz_models(cfg) else set())
    variants = set(cfg["train"]["variants"])
    return [name for name, spec in FIGURES.items()
            if set(spec["needs"]) <= have and set(spec.get("variants", variants)) & variants]


def figure_reads(name: str) -> list[str]:
    """What figure `name` reads: its needs, plus the `accuracy` table when it marks the models that
    fail the learnability gate (`gated`: it shows their explanations; xaibench.gate)."""
    spec = FIGURES[name]
    return spec["needs"] + (["accuracy"] if spec.get("gated") else [])


def figure_caption(name: str) -> str:
    """The report caption of figure `name`, an .rst file: a plugin's own (`caption`, made absolute when
    the plugin loads), else report/captions/{name}.rst (relative to the project); a plugin figure that
    brings none gets report/captions/plugin_figure.rst, which says so."""
    spec = FIGURES[name]
    if spec.get("caption"):
        return spec["caption"]
    return f"report/captions/{'plugin_figure' if ('FIGURES', name) in PLUGINS else name}.rst"


def figure_parts(names: list[str], parts: int = 2) -> list[list[str]]:
    """`names` in `parts` lists of about equal drawing cost (longest first to the least loaded part),
    each in catalog order; empty parts are dropped. The figure jobs draw one part each, in parallel."""
    cost = {n: FIGURES[n].get("cost", 1) for n in names}
    bins, load = [[] for _ in range(parts)], [0] * parts
    for name in sorted(names, key=lambda n: -cost[n]):
        i = load.index(min(load))
        bins[i].append(name)
        load[i] += cost[name]
    order = list(FIGURES)
    return [sorted(b, key=order.index) for b in bins if b]


def direction(family: str, metric: str) -> str:
    """"higher", "lower" or "none": which way `metric` of `family` is better."""
    return FAMILIES.get(family, {}).get("metrics", {}).get(metric, "none")


def arrow(family: str, metric: str) -> str:
    return {"higher": " ↑", "lower": " ↓"}.get(direction(family, metric), "")


def headline(family: str) -> dict:
    """A family's leaderboard column: metric, split, setting, levels (from its `headline` entry)."""
    entry = FAMILIES[family]
    metrics = entry["metrics"]
    spec = entry.get("headline") or next((m for m, d in metrics.items() if d != "none"), next(iter(metrics)))
    metric, _, filters = spec.partition(":")
    out = {"metric": metric, "split": "test", "setting": "", "levels": "all"}
    for item in filter(None, filters.split(",")):
        key, _, value = item.partition("=")
        if key not in out or key == "metric":
            raise ValueError(f"catalog.FAMILIES[{family!r}]['headline']: unknown filter {key!r}; use split, setting, levels")
        out[key] = value
    if metric not in metrics:
        raise ValueError(f"catalog.FAMILIES[{family!r}]['headline']: {metric!r} is not one of its metrics")
    return out


FAMILIES = {
    "accuracy": {"paper": "all", "headline": "accuracy", "scope": "model", "needs": ["models"], "module": "xaibench.metrics.accuracy",
                 "metrics": {"accuracy": "higher", "follows_cue": "lower", "cue_changes_prediction": "lower",
                             "max_softmax": "none"}},
    "localization": {"paper": "C/D/E", "headline": "relevance_mass", "scope": "model", "maps": "positive", "needs": ["explanations"], "module": "xaibench.metrics.localization",
                     "metrics": {"pointing_game": "higher", "relevance_mass": "higher", "pixel_ap": "higher",
                                 "mass_on_target_object": "higher", "mass_on_other_object": "lower",
                                 # relevance on the cue patch: high is faithful for a cue-following model
                                 "cue_mass": "none"}},
    "entropy": {"paper": "E", "headline": "spatial_entropy", "scope": "model", "maps": "positive", "needs": ["explanations"], "module": "xaibench.metrics.salience",
                "metrics": {"spatial_entropy": "lower", "histogram_entropy": "lower"}},
    "noise": {"paper": "E", "headline": "map_ssim:setting=s&p,levels=positive", "scope": "model", "maps": "positive", "needs": ["models", "explanations"], "module": "xaibench.metrics.salience",
              "metrics": {"map_ssim": "none", "spatial_entropy": "none", "histogram_entropy": "none",
                          "score": "none", "prediction_changed": "none", "max_softmax": "lower"}},
    "equivariance": {"paper": "E", "headline": "map_ssim:setting=*", "scope": "model", "maps": "positive", "needs": ["models", "explanations"], "module": "xaibench.metrics.salience",
                     "metrics": {"map_ssim": "higher", "map_spearman": "higher", "prediction_changed": "lower"}},
    # min_native_side: the SSIM window needs maps at least this big (at metrics.salience.resolution: native)
    "stability": {"paper": "E", "headline": "map_ssim:setting=*", "scope": "variant", "maps": "positive", "needs": ["explanations"], "module": "xaibench.metrics.salience", "min_native_side": 3,
                  "metrics": {"map_ssim": "higher", "map_spearman": "higher"}},
    "degradation": {"paper": "E", "headline": "map_ssim:setting=object,levels=positive", "scope": "model", "maps": "positive", "needs": ["models", "explanations"], "module": "xaibench.metrics.salience",
                    "metrics": {"score": "none", "accuracy": "none", "map_ssim": "none"}},
    "deletion": {"paper": "C", "headline": "deletion_auc", "scope": "model", "maps": "signed", "needs": ["models", "explanations"], "module": "xaibench.metrics.deletion",
                 "metrics": {"deletion_auc": "lower", "deletion_auc_accuracy": "lower",
                             "target_probability": "none", "accuracy": "none"}},
    "misalignment": {"paper": "A", "headline": "PAC:setting=pgd", "scope": "model", "needs": ["models"], "module": "xaibench.metrics.misalignment",
                     "applies_to": "prototype_layer",
                     "metrics": {"PAC": "lower", "PRC": "lower", "PLC": "lower", "AC": "lower",
                                 "accuracy_before": "higher", "accuracy_after": "higher"}},
    # Paper B: activation paths of generated images (featviz methods) and of natural images
    # (method "natural", leave-one-out) against their class mean; cue strength of generated images.
    # Rows only for the models selected in `featviz` (variants × seeds); others write none.
    "activations": {"paper": "B", "headline": "spearman:setting=*", "scope": "model", "needs": ["models", "generated_images"], "module": "xaibench.metrics.activations",
                    "metrics": {"spearman": "higher", "l1": "lower", "share_spearman": "higher", "share_l1": "higher",
                                "classified": "higher", "cue_colour_strength": "none",
                                "cue_colour_strength_image": "none", "cue_logit_drop": "none"}},
    # paper D (AGF): on the models AGF applies to (plain layers), beside its baselines
    "perturbation": {"paper": "D", "headline": "positive_auc:setting=predicted", "scope": "model", "maps": "signed", "needs": ["models", "explanations"], "module": "xaibench.metrics.perturbation",
                     "applies_to": "plain_layers",
                     "metrics": {"positive_auc": "lower", "negative_auc": "higher",
                                 "positive_accuracy": "none", "negative_accuracy": "none"}},
    "segmentation": {"paper": "D", "headline": "miou", "scope": "model", "maps": "signed", "needs": ["explanations"], "module": "xaibench.metrics.segmentation",
                     "applies_to": "plain_layers",
                     "metrics": {"pixel_accuracy": "higher", "miou": "higher", "map": "higher", "map_continuous": "higher"}},
    "perclass": {"paper": "D", "headline": "object_preference:split=pairs,setting=second", "scope": "model", "maps": "positive", "needs": ["models"], "module": "xaibench.metrics.perclass",
                 "applies_to": "plain_layers",
                 "metrics": {"mass_on_explained": "higher", "mass_on_other": "lower", "object_preference": "higher"}},
    # Sanity check (Adebayo et al. 2018; docs/sanity_checks.md): maps of the model with its layers
    # re-initialised against the original's. Lower similarity is better: the map depends on the weights.
    "randomisation": {"paper": "sanity", "headline": "randomised_spearman", "scope": "model", "maps": "positive", "needs": ["models"], "module": "xaibench.metrics.randomisation",
                      "metrics": {"randomised_spearman": "lower", "randomised_ssim": "lower", "complexity_rise": "higher",
                                  "spearman": "lower", "ssim": "lower", "prediction_changed": "none"}},
}



# The five papers' claims, each tested by `xaibench claims` (xaibench.claims; docs/claims.md). One entry per
# claim, nothing else to edit: paper and source; the statement in one sentence; the family and metric
# with the split, setting ("" = rows without one, "*" = every non-empty one, else that one) and levels
# ("all" or "positive") filters; groups `a` and `b` as variant + method (method "model" for the
# accuracy family; `b` None for a one-group quantity); `predicts`: "higher" / "lower" (a - b, and the
# same as the metric's direction: a is better), "above_zero" (a alone) or "not_lower" (non-inferiority:
# a - b > -claims.noninferiority_margin); `same_seeds`: compare only the seeds both groups have.
def _claim(paper, source, statement, family, metric, a, b, predicts, split="test", setting="", levels="all",
           same_seeds=False):
    group = (lambda g: None if g is None else dict(zip(("variant", "method"), g)))
    return {"paper": paper, "source": source, "statement": statement, "family": family, "metric": metric,
            "split": split, "setting": setting, "levels": levels, "a": group(a), "b": group(b),
            "predicts": predicts, "same_seeds": same_seeds}


_E = "Crum et al. 2023 (paper E), measures (a) and (d); direction: "
_C = "Ghavami Modegh et al. 2022 (paper C, arXiv 2201.11808 v1), abstract"
_D = "Gur, Ali & Wolf 2021 (paper D, AAAI), abstract and its perturbation, segmentation and per-class tests"
_A = "Sacha et al. 2024 (paper A, AAAI), abstract and benchmark (PGD outside the activation region)"
_B = "Tagade & Rumbelow 2023 (paper B), abstract: natural activation paths (Spearman to the class mean)"
CLAIMS = {
    "E.entropy_hist": _claim(
        "E", _E + "Piland et al. 2023 (arXiv 2303.00818), abstract",
        "Grad-CAM maps of salience-guided (CYBORG) models have lower entropy (the reference's histogram form) "
        "than those of cross-entropy models.",
        "entropy", "histogram_entropy", ("salience", "gradcam"), ("standard", "gradcam"), "lower"),
    "E.entropy_spatial": _claim(
        "E", _E + "Piland et al. 2023 (arXiv 2303.00818), abstract",
        "Grad-CAM maps of salience-guided models have lower spatial entropy than those of cross-entropy models.",
        "entropy", "spatial_entropy", ("salience", "gradcam"), ("standard", "gradcam"), "lower"),
    "E.stability": _claim(
        "E", _E + "Boyd et al. 2024 (arXiv 2410.16190), abstract",
        "Grad-CAM maps of salience-guided models are more alike across independent training runs "
        "(cross-run SSIM) than those of cross-entropy models.",
        "stability", "map_ssim", ("salience", "gradcam"), ("standard", "gradcam"), "higher", setting="*"),
    "C.lap_keeps_accuracy": _claim(
        "C", _C + " (\"while improving the model's performance\"; tested here as non-inferiority)",
        "LAP models are not less accurate than standard models on the cue-free test images.",
        "accuracy", "accuracy", ("lap", "model"), ("standard", "model"), "not_lower", split="nocue"),
    "C.lap_vs_gradcam": _claim(
        "C", _C + " (\"more faithful-to-the-model interpretations than ... white-box explainer methods\")",
        "On LAP models, LAP's own map is more faithful than Grad-CAM (lower deletion AUC).",
        "deletion", "deletion_auc", ("lap", "lap"), ("lap", "gradcam"), "lower"),
    "C.lap_vs_attention_cam": _claim(
        "C", _C + " (\"more faithful-to-the-model interpretations than ... white-box explainer methods\")",
        "On LAP models, LAP's own map is more faithful than attention-weighted CAM (lower deletion AUC).",
        "deletion", "deletion_auc", ("lap", "lap"), ("lap", "attention_cam"), "lower"),
    "C.plugin_keeps_accuracy": _claim(
        "C", "Ghavami Modegh et al. (paper C, arXiv 2201.11808 v5), abstract: pluggable into already trained CNNs",
        "LAP plugged into a trained standard model and fine-tuned keeps that model's test accuracy.",
        "accuracy", "accuracy", ("lap_plugin", "model"), ("standard", "model"), "not_lower", same_seeds=True),
    "D.positive_perturbation": _claim(
        "D", _D, "AGF's maps of the predicted class are more faithful than Grad-CAM's in the positive "
        "perturbation test (lower AUC).",
        "perturbation", "positive_auc", ("standard", "agf"), ("standard", "gradcam"), "lower", setting="predicted"),
    "D.negative_perturbation": _claim(
        "D", _D, "AGF's maps of the predicted class beat Grad-CAM's in the negative perturbation test (higher AUC).",
        "perturbation", "negative_auc", ("standard", "agf"), ("standard", "gradcam"), "higher", setting="predicted"),
    "D.segmentation_miou": _claim(
        "D", _D, "AGF's maps segment the object better than Grad-CAM's (higher mIoU).",
        "segmentation", "miou", ("standard", "agf"), ("standard", "gradcam"), "higher"),
    "D.segmentation_map": _claim(
        "D", _D, "AGF's maps segment the object better than Grad-CAM's (higher mAP).",
        "segmentation", "map", ("standard", "agf"), ("standard", "gradcam"), "higher"),
    "D.perclass": _claim(
        "D", _D, "Explaining the second-ranked class of a two-object image, AGF puts more of its map on that "
        "class's object than Grad-CAM does (no saliency bias).",
        "perclass", "object_preference", ("standard", "agf"), ("standard", "gradcam"), "higher",
        split="pairs", setting="second"),
    **{f"A.attack_moves_{m}": _claim(
        "A", _A, f"A perturbation outside a prototype's activation region changes the prototype's activation "
        f"({m} above 0).", "misalignment", m, ("protopnet", "proto"), None, "above_zero", setting="pgd")
       for m in ("PAC", "PRC", "PLC")},
    **{f"A.compensation_lowers_{m}": _claim(
        "A", _A, f"Training with the misalignment compensation lowers {m} under the same attack.",
        "misalignment", m, ("protopnet_comp", "proto"), ("protopnet", "proto"), "lower", setting="pgd")
       for m in ("PAC", "PRC", "PLC")},
    "A.compensation_keeps_accuracy": _claim(
        "A", _A, "Misalignment compensation costs little test accuracy (non-inferiority).",
        "accuracy", "accuracy", ("protopnet_comp", "model"), ("protopnet", "model"), "not_lower"),
    **{f"B.paths_vs_{other}": _claim(
        "B", _B, f"Prototype generation's images have activations closer to the natural class mean (Spearman, "
        f"over layers) than {label}'s.", "activations", "spearman", ("standard", "prototype"),
        ("standard", other), "higher", setting="*")
       for other, label in (("fourier_fv", "Fourier feature visualisation"), ("pixel_ascent", "pixel ascent"))},
}

# Headline measures of paper E: the rows of the salience summary table (figures/salience.py) and
# the entries of results/summary.json for these families (metrics.summarize), so both apply the
# same filters. setting: "" = rows without a setting, "*" = every non-empty setting, else that one;
# levels: "all", or "positive" = level > 0 (level 0 is the unaltered image, where curves start).
# One value per seed (stability: per seed pair) = mean over images and the rows kept.
def _m(name, label, family, metric, split, setting, levels="all"):
    return {"name": name, "label": label, "family": family, "metric": metric, "split": split,
            "setting": setting, "levels": levels}


SALIENCE_SUMMARY = [
    _m("spatial_entropy", "(a) spatial entropy", "entropy", "spatial_entropy", "test", ""),
    _m("histogram_entropy", "(a) histogram entropy", "entropy", "histogram_entropy", "test", ""),
    _m("map_ssim", "(b) map SSIM under s&p noise, amounts > 0", "noise", "map_ssim", "test", "s&p", "positive"),
    _m("score", "(b) class score under s&p noise, amounts > 0", "noise", "score", "test", "s&p", "positive"),
    _m("prediction_changed", "(b) predictions changed by s&p noise, amounts > 0", "noise", "prediction_changed",
       "test", "s&p", "positive"),
    _m("max_softmax", "(b) max softmax on ood classes", "noise", "max_softmax", "ood", "ood"),
    _m("max_softmax", "(b) max softmax on test", "noise", "max_softmax", "test", "ood"),
    _m("map_ssim", "(c) equivariance SSIM, all transforms", "equivariance", "map_ssim", "test", "*"),
    _m("map_spearman", "(c) equivariance Spearman, all transforms", "equivariance", "map_spearman", "test", "*"),
    _m("prediction_changed", "(c) predictions changed, all transforms", "equivariance", "prediction_changed", "test", "*"),
    _m("map_ssim", "(d) cross-run SSIM (sd over seed pairs)", "stability", "map_ssim", "test", "*"),
    _m("map_spearman", "(d) cross-run Spearman (sd over seed pairs)", "stability", "map_spearman", "test", "*"),
] + [_m(f"{metric}_{mode}", f"(e) {label}, {mode} blurred", "degradation", metric, "test", mode, "positive")
     for metric, label in (("score", "score"), ("accuracy", "accuracy"), ("map_ssim", "map SSIM"))
     for mode in ("background", "object")]


# Figure needs: metric families (their tidy tables), "explanations", "claims" and/or "leaderboard"; an optional "variants"
# list means the figure is drawn only when one of those training variants is configured; "table"
# means it also writes results/tables/{dataset}/{name}.md and .csv; "cost" is its drawing time
# relative to a plain chart (default 1, measured on the smoke run), so `figure_parts` can give the two
# figure jobs equal work; "gated" means it shows models' explanations, so it marks the models that
# fail the learnability gate (and reads the accuracy table for that, `figure_reads`). Each figure's caption (what it shows, for the report) is
# report/captions/{name}.rst; a plugin's figure names its own .rst file in "caption" (`figure_caption`).
FIGURES = {
    # Every (variant, explainer) pair against each family's headline (results/leaderboard/; the report's front page).
    "leaderboard": {
        "module": "xaibench.figures.leaderboard",
        "needs": ["leaderboard"],
        "table": True,
    },
    # The verdicts on CLAIMS (results/claims.csv); its table opens the report (report/workflow.rst).
    "claims": {
        "module": "xaibench.figures.claims",
        "needs": ["claims"],
        "table": True,
    },
    "accuracy": {
        "module": "xaibench.figures",
        "needs": ["accuracy"],
    },
    "localization": {
        "gated": True,
        "module": "xaibench.figures",
        "cost": 3,
        "needs": ["localization"],
        "table": True,
    },
    "gallery": {
        "gated": True,
        "module": "xaibench.figures",
        "needs": ["explanations"],
    },
    "lap_faithfulness": {
        "gated": True,
        "module": "xaibench.figures.lap",
        "needs": ["deletion", "localization"],
    },
    "lap_attention": {
        "gated": True,
        "module": "xaibench.figures.lap",
        "cost": 2,
        "needs": ["explanations"],
        "variants": ["lap"],
    },
    "salience_entropy": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "needs": ["entropy"],
    },
    "salience_noise": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "needs": ["noise"],
    },
    "salience_equivariance": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "cost": 3,
        "needs": ["equivariance"],
    },
    "salience_stability": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "needs": ["stability"],
    },
    "salience_degradation": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "cost": 2,
        "needs": ["degradation"],
    },
    "salience_summary": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "cost": 2,
        "needs": ["entropy", "noise", "equivariance", "stability", "degradation"],
        "table": True,
    },
    "salience_gallery": {
        "gated": True,
        "module": "xaibench.figures.salience",
        "cost": 5,
        "needs": ["explanations"],
    },
    "misalignment": {
        "gated": True,
        "module": "xaibench.figures.protopnet",
        "needs": ["misalignment"],
        "table": True,
    },
    "protopnet_gallery": {
        "gated": True,
        "module": "xaibench.figures.protopnet",
        "cost": 4,
        "needs": [],
        "variants": ["protopnet", "protopnet_comp"],
    },
    # Paper B. "generated_images": the images featviz generated for the models it selects.
    "prototypes_grid": {
        "module": "xaibench.figures.prototypes",
        "needs": ["generated_images"],
    },
    "activation_paths": {
        "module": "xaibench.figures.prototypes",
        "needs": ["activations"],
    },
    "prototype_cue": {
        "module": "xaibench.figures.prototypes",
        "needs": ["activations"],
    },
    # Paper D.
    "agf_perturbation": {
        "gated": True,
        "module": "xaibench.figures.agf",
        "cost": 2,
        "needs": ["perturbation"],
        "table": True,
    },
    "agf_segmentation": {
        "gated": True,
        "module": "xaibench.figures.agf",
        "needs": ["segmentation", "perclass"],
    },
}


# ---- entries from outside the package ----------------------------------------------------------------

# Installed plugins (entry points `xaibench.plugins`, xaibench.plugins): their entries join the sections
# above when the catalog loads. PLUGINS: (section, name) -> the plugin that added it.
from . import plugins as _plugins  # noqa: E402  (after the sections it extends)

PLUGINS = _plugins.load({s: globals()[s] for s in _plugins.SECTIONS})


def plugin_files(**names) -> list[str]:
    """Source files of the plugins adding any of `names` (e.g. `explainers=[...]`): part of a job's `code` param."""
    return _plugins.files(PLUGINS, **names)


# External models (settings `models.external.<name>`, xaibench.training.external): checkpoints trained
# elsewhere, each a variant that is imported instead of trained, for seed 0 only. A state_dict of a
# registered architecture is a `Classifier` (every explainer applies; its `layer` moves only Grad-CAM);
# a TorchScript file provides only the `features`/`classify` methods Grad-CAM needs, a torch.export
# file only forward(x) -> logits and the `layer` Grad-CAM reads (docs/architecture.md, "What each
# explainer needs from a model"): the explainers needing no capability apply to both.
EXTERNAL_SEEDS = [0]


def is_external(variant: str) -> bool:
    """Whether `variant` is an external model (imported from its file, never trained)."""
    return bool(VARIANTS[variant].get("external"))


def add_external(name: str, block: dict) -> None:
    """Make the external model `name` a variant (refusing a name the catalog already uses otherwise)."""
    if name in VARIANTS and not is_external(name):
        raise ValueError(f"models.external.{name}: '{name}' is already a training variant; choose another name")
    classifier = block.get("format", "state_dict") == "state_dict"  # CAM and AGF read its last block
    provides = ["linear_head", "plain_layers"] if classifier else []
    VARIANTS[name] = {"module": "xaibench.training.external", "external": True, "provides": provides}
