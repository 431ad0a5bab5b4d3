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
METHOD_VARIANTS = {"lap": ["lap", "lap_plugin"]}


def methods_for(methods: list[str], variant: str) -> list[str]:
    return [m for m in methods if variant in METHOD_VARIANTS.get(m, [variant])]


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
        "table": True,
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
