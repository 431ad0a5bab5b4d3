"""Paper C figures: LAP's self-explanation against post-hoc explainers, and its per-layer attention."""
from __future__ import annotations

import numpy as np

from .. import paths
from .. import gate
from . import (BASELINE_STYLE, _classes, _variants, colour, gate_failures, mosaic, plt, register, save,
               seed_points, table, tile)

LINESTYLES = ["-", "--", ":", "-."]


@register("lap_faithfulness")
def lap_faithfulness(cfg, dataset):
    """Deletion curves and AUC (faithfulness) beside relevance mass in the mask (localisation)."""
    dele = table(dataset, "deletion")
    loc = table(dataset, "localization")
    dele, loc = dele[dele.split == "test"], loc[(loc.split == "test") & (loc.metric == "relevance_mass")]
    if dele.empty:
        return []
    variants = [v for v in _variants(cfg) if v in set(dele.variant)]
    methods = sorted(set(dele.method))
    failed = gate_failures(cfg, dataset) or ()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    curves = dele[(dele.metric == "target_probability") & dele.variant.isin(variants)]
    for (variant, method), d in curves.groupby(["variant", "method"]):
        per_level = d.groupby("level")["value"]
        mean, sd = per_level.mean(), per_level.std().fillna(0)
        style = LINESTYLES[methods.index(method) % len(LINESTYLES)]
        axes[0].plot(mean.index, mean.values, style, color=colour(variant, variants), marker="o", ms=3,
                     label=f"{gate.mark(variant, failed)} / {method}")
        axes[0].fill_between(mean.index, mean - sd, mean + sd, color=colour(variant, variants), alpha=0.12)
    axes[0].set(xlabel="share of pixels removed (most relevant first)", ylabel="probability of the explained class",
                title="deletion curves\n(mean ± sd over seeds)", ylim=(0, 1.02))
    axes[0].legend(fontsize=7, title="variant / explainer", title_fontsize=7, handlelength=4)
    seed_points(axes[1], dele[dele.metric == "deletion_auc"], "method", "value", "variant", order=methods,
                hue_order=variants, failed=failed)
    axes[1].set(title="deletion AUC\n(lower = more faithful)", xlabel="explainer", ylabel="area under the curve", ylim=(0, 1.02))
    if not loc.empty:
        seed_points(axes[2], loc, "method", "value", "variant", order=[m for m in methods if m in set(loc.method)],
                    hue_order=variants, failed=failed)
        for method, (ls, line_colour) in BASELINE_STYLE.items():
            ref = loc[loc.method == method]["value"]
            if len(ref):
                axes[2].axhline(ref.mean(), ls=ls, c=line_colour, lw=1, label=method.replace("baseline_", ""))
    axes[2].set(title="relevance mass in the object mask\n(higher = better localised)", xlabel="explainer",
                ylabel="share of relevance in mask", ylim=(0, 1.02))
    for ax in axes[1:]:
        if ax.legend_:
            ax.legend(title="variant", fontsize=7, title_fontsize=7)
    fig.suptitle(f"{dataset}: LAP self-explanation vs post-hoc explainers (test split; baseline "
                 f"{cfg['metrics']['deletion']['baseline']})", y=1.04)
    return save(fig, cfg, dataset, "lap_faithfulness")


@register("lap_attention")
def lap_attention(cfg, dataset):
    """Per-layer LAP score maps s, the head's attention a_k of the predicted class and the `lap` map.

    The one figure that runs a model: per-layer maps are not stored in explanation files (the
    explain contract is one map per image), so the first seed's `lap` model is run on a handful
    of test images (a single small forward pass).
    """
    import torch

    from ..data import read_split
    from ..explain import upsample
    from ..explain.lap import lap as lap_explainer
    from ..training.fit import load_trained

    seed = cfg["train"]["seeds"][0]
    model, _ = load_trained(cfg, dataset, "lap", seed)
    split = read_split(paths.prepared(dataset), "test")
    n = min(cfg["figures"]["gallery_images"], len(split))
    idx = np.linspace(0, len(split) - 1, n).astype(int)
    x = split.tensors(idx)
    with torch.no_grad():
        layers, head, logits = model.attention(x)
        pred = logits.argmax(1)
        size = x.shape[-2:]
        layer_maps = [upsample(m[:, 0], size) for m in layers]
        head_map = upsample(head[torch.arange(n), pred], size)
        options = cfg["explain"].get("options", {}).get("lap", {})
        attention = upsample(lap_explainer(model, x, pred, combine="head"), size)
        combined = upsample(lap_explainer(model, x, pred, **options), size)
    classes = _classes(dataset)
    cols = ["image", "mask"] + [f"LAP layer {i + 1} score s\n{tuple(m.shape[-2:])}" for i, m in enumerate(layers)] + \
           [f"head score s, predicted\n{tuple(head.shape[-2:])}", "head attention a_k",
            f"lap map ({options.get('combine', 'cascade')})"]
    masks = split.masks if split.masks is not None else np.zeros(split.images.shape[:3], np.uint8)
    tiles = []
    for r, i in enumerate(idx):
        # score maps are in [0,1] by construction; shown on that fixed scale so layers compare
        tiles.append([tile(split.images[i]), tile(masks[i])] +
                     [tile(heat=m[r].numpy(), cmap="viridis", scale=(0, 1)) for m in layer_maps + [head_map]] +
                     [tile(split.images[i], attention[r].numpy()), tile(split.images[i], combined[r].numpy())])
    rows = [f"{classes[split.labels[i]]} → {classes[pred[r]]}" for r, i in enumerate(idx)]
    colours = ["black" if pred[r] == split.labels[i] else "red" for r, i in enumerate(idx)]
    failed = gate_failures(cfg, dataset) or {}
    fig = mosaic(tiles, cols, rows, f"{dataset}: {gate.mark('lap', failed, seed)} attention by layer (seed {seed}; label → prediction, red = wrong; "
                 "score maps on a fixed 0–1 scale, last two columns min-max scaled)", row_colours=colours, cell=1.7)
    return save(fig, cfg, dataset, "lap_attention")
