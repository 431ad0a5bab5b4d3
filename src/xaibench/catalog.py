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

FIGURES = {
    "accuracy": {
        "needs": ["accuracy"],
        "caption": "Accuracy of every training variant on clean test images, on the cue-conflicting part of "
                   "test (the planted corner cue names another class) and on cue-agreeing images. Bars: mean "
                   "± sd over seeds; dots: single seeds. A large gap between cue-agreeing and cue-conflicting "
                   "accuracy means the model relies on the spurious cue.",
    },
    "localization": {
        "needs": ["localization"],
        "caption": "How well each explainer's maps point at the ground-truth object mask on test images: share "
                   "of relevance inside the mask, pointing-game hit rate and pixel average precision. Mean ± sd "
                   "over seeds.",
    },
    "entropy": {
        "needs": ["entropy"],
        "caption": "Salience-map entropy (Explain to Me, measure a): spatial entropy of the map as a "
                   "distribution (1 = uniform) and the reference code's grey-level-histogram entropy. Lower "
                   "means more focused maps.",
    },
    "gallery": {
        "needs": ["explanations"],
        "caption": "Test images with their ground-truth mask and each variant's maps (first seed). A red "
                   "title marks a wrong prediction.",
    },
}
