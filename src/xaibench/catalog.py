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
# means it also writes results/tables/{dataset}/{name}.md and .csv.
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
    "lap_faithfulness": {
        "needs": ["deletion", "localization"],
        "caption": "LAP's self-explanation against post-hoc explainers (paper C). Left: deletion curves, the "
                   "probability of the explained class as the most relevant pixels are replaced by the image's "
                   "mean colour (or blur), one line per variant (colour) and explainer (line style), mean ± sd "
                   "over seeds. Middle: area under those curves (lower = the map found what the model uses). "
                   "Right: share of each map's relevance inside the ground-truth object mask (higher = better "
                   "localised). Test split.",
    },
    "lap_attention": {
        "needs": ["explanations"],
        "variants": ["lap"],
        "caption": "What a LAP model attends to, layer by layer (first seed of the `lap` variant, test images): "
                   "each LAP layer's score map (in [0,1], fixed scale, input resolution of that layer), the "
                   "head's map for the predicted class, and their combination, which is the `lap` explanation. "
                   "A red label marks a wrong prediction. Without a `lap` variant in train.variants the figure "
                   "only says so.",
    },
    "salience_entropy": {
        "needs": ["entropy"],
        "caption": "Explain to Me (a): per-image entropy of the test-set maps, spatial (map as a distribution, "
                   "1 = uniform) and the reference code's grey-level-histogram entropy, by explainer and training "
                   "variant. Boxes over images and seeds; lower = more focused maps.",
    },
    "salience_noise": {
        "needs": ["noise"],
        "caption": "Explain to Me (b), reaction to out-of-set inputs: probability of the clean image's explained "
                   "class, share of changed predictions and SSIM between the noisy-image map and the clean map as "
                   "salt-and-pepper noise replaces a growing share of pixel values (per channel; seeded). Lines: "
                   "mean over images per seed, averaged over seeds; bands: 95% bootstrap CI over seeds; colour = "
                   "variant, line style = explainer. Right: max softmax on test vs on the ood classes (boxes over "
                   "images and seeds), when the dataset has an ood split.",
    },
    "salience_equivariance": {
        "needs": ["equivariance"],
        "caption": "Explain to Me (c), equivariance: the map of a flipped, shifted (edge-replicated) or 90°-rotated "
                   "image, mapped back by the inverse transform, against the original map, by SSIM (top) and "
                   "Spearman rank correlation (bottom), on the pixels that stayed in the frame. 1 = the map follows "
                   "the image exactly. Boxes over test images and seeds, by transform and training variant.",
    },
    "salience_stability": {
        "needs": ["stability"],
        "caption": "Explain to Me (d), stability across training runs: SSIM and Spearman rank correlation between "
                   "the maps that independently trained seeds of the same variant give for the same test image. "
                   "Boxes over images and every pair of seeds; higher = more consistent explanations.",
    },
    "salience_degradation": {
        "needs": ["degradation"],
        "caption": "Explain to Me (e), salience-guided degradation: each test image is blurred pixel by pixel with "
                   "a Gaussian whose σ falls with the smoothed clean map's salience (reference: σ = (10 − s)⁴/10³, "
                   "s = salience on 0..10, scaled to the image size), either outside the salient region "
                   "(background, top) or inside it (object, bottom), at several strength multipliers (0 = clean "
                   "image). Probability of the clean explained class, accuracy, and SSIM between the degraded "
                   "image's map and the clean map. Lines: mean over images per seed, averaged over seeds; bands: "
                   "95% bootstrap CI over seeds; colour = variant, line style = explainer.",
    },
    "salience_summary": {
        "needs": ["entropy", "noise", "equivariance", "stability", "degradation"],
        "table": True,
        "caption": "Explain to Me, all five measures in one table (also written as markdown and CSV under "
                   "results/tables/{dataset}/salience_summary.*): for each training variant, explainer and "
                   "measure, mean ± sd over seeds of the per-seed mean over images (stability: over seed pairs). "
                   "Noise and degradation rows average over the non-zero amounts and strengths.",
    },
    "salience_gallery": {
        "needs": ["explanations"],
        "caption": "Cross-run gallery for Explain to Me (d): the same four test images (top row) explained by "
                   "every seed of every training variant (one row per seed), each map min-max scaled and laid "
                   "over its image. Similar rows within a variant = stable explanations across training runs.",
    },
}
