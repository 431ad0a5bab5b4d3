"""What the suite can compute, as plain data: metric families and figures with what each needs.

The Snakefile reads this at parse time (it must stay import-light: no torch, no matplotlib), and
the registries in `xaibench.metrics` / `xaibench.figures` check that every entry has exactly one
implementation.

Family scope: `model` runs once per trained model (dataset × variant × seed); `variant` runs once
per variant with every seed's outputs at hand (e.g. cross-run stability).
Family needs: `models` (checkpoints), `explanations` (maps of every method × split), or both.
"""
from __future__ import annotations

FAMILIES = {
    "accuracy": {"scope": "model", "needs": ["models"]},
    "localization": {"scope": "model", "needs": ["explanations"]},
    "entropy": {"scope": "model", "needs": ["explanations"]},
    "noise": {"scope": "model", "needs": ["models", "explanations"]},
    "equivariance": {"scope": "model", "needs": ["models", "explanations"]},
    "stability": {"scope": "variant", "needs": ["explanations"]},
    "degradation": {"scope": "model", "needs": ["models", "explanations"]},
    "deletion": {"scope": "model", "needs": ["models", "explanations"]},
}

# Explainers that only apply to some training variants (the `lap` self-explanation needs a LAP
# model); every other explainer applies to every variant. The DAG and the families should ask
# `methods_for` which explanation files a model has.
METHOD_VARIANTS = {"lap": ["lap", "lap_plugin"], "attention_cam": ["lap", "lap_plugin"]}


def methods_for(methods: list[str], variant: str) -> list[str]:
    return [m for m in methods if variant in METHOD_VARIANTS.get(m, [variant])]


# Headline measures of paper E: the rows of the salience summary table (figures/salience.py) and
# the entries of results/summary.json for these families (metrics.summarize), so both apply the
# same filters. setting: "" = rows without a setting, "*" = every non-empty setting, else that one;
# levels: "all", or "positive" = level > 0 (level 0 is the unaltered image, where curves start).
# One value per seed (stability: per seed pair) = mean over images and the rows kept.
def _m(name, label, family, metric, split, setting, levels="all"):
    return {"name": name, "label": label, "family": family, "metric": metric, "split": split,
            "setting": setting, "levels": levels}


SALIENCE_SUMMARY = [
    _m("spatial_entropy", "(a) spatial entropy ↓", "entropy", "spatial_entropy", "test", ""),
    _m("histogram_entropy", "(a) histogram entropy ↓", "entropy", "histogram_entropy", "test", ""),
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


# Figure needs: metric families (their tidy tables) and/or "explanations"; an optional "variants"
# list means the figure is drawn only when one of those training variants is configured; "table"
# means it also writes results/tables/{dataset}/{name}.md and .csv. Each figure's caption (what it
# shows, for the report) is report/captions/{name}.rst.
FIGURES = {
    "accuracy": {
        "needs": ["accuracy"],
    },
    "localization": {
        "needs": ["localization"],
    },
    "gallery": {
        "needs": ["explanations"],
    },
    "lap_faithfulness": {
        "needs": ["deletion", "localization"],
    },
    "lap_attention": {
        "needs": ["explanations"],
        "variants": ["lap"],
    },
    "salience_entropy": {
        "needs": ["entropy"],
    },
    "salience_noise": {
        "needs": ["noise"],
    },
    "salience_equivariance": {
        "needs": ["equivariance"],
    },
    "salience_stability": {
        "needs": ["stability"],
    },
    "salience_degradation": {
        "needs": ["degradation"],
    },
    "salience_summary": {
        "needs": ["entropy", "noise", "equivariance", "stability", "degradation"],
        "table": True,
    },
    "salience_gallery": {
        "needs": ["explanations"],
    },
}
