"""Paper B figures: the generated images, their activation paths against natural images, and the cue they carry."""
from __future__ import annotations

import numpy as np

from .. import catalog, paths
from . import NotApplicable, _classes, mosaic, plt, register, save, seed_points, table, tile

METHOD_COLOURS = {"prototype": "#C44E52", "fourier_fv": "#4C72B0", "pixel_ascent": "#8C8C8C", "natural": "#55A868"}


def _cue_colours(dataset: str, k: int):
    """The class cue colours [K,3] when the dataset plants the corner cue, else None."""
    from ..data import read_meta
    if not read_meta(paths.prepared(dataset)).get("has_cue"):
        return None
    from ..data.shapes import CUE_COLOURS
    return CUE_COLOURS[np.arange(k) % len(CUE_COLOURS)]


@register("prototypes_grid")
def prototypes_grid(cfg, dataset):
    """Classes × (variant, method): each selected variant's generated images (its first featviz seed)."""
    from ..io import load_npz
    chosen = {}
    for variant, seed in catalog.featviz_models(cfg):
        chosen.setdefault(variant, seed)
    if not chosen:
        raise NotApplicable("featviz selects no trained model")
    arrays = {v: load_npz(paths.prototypes(dataset, v, s)) for v, s in chosen.items()}
    classes = _classes(dataset)
    cues = _cue_colours(dataset, len(classes))
    cols = [(v, str(m)) for v, a in arrays.items() for m in a["methods"]]
    size = next(iter(arrays.values()))[cols[0][1]].shape[-1]
    tiles = []
    for c in range(len(classes)):
        row = [] if cues is None else [tile(np.broadcast_to(cues[c], (size, size, 3)))]
        for v, m in cols:
            wrong = arrays[v][f"{m}_logits"][c].argmax() != c
            row.append(tile(np.transpose(arrays[v][m][c], (1, 2, 0)), border="red" if wrong else None))
        tiles.append(row)
    titles = ([] if cues is None else ["cue colour\n(train)"]) + [f"{v} (seed {chosen[v]})\n{m}" for v, m in cols]
    fig = mosaic(tiles, titles, classes,
                 f"{dataset}: one generated image per class (rows) by each method and model; red frame = not "
                 f"classified as its class" + ("; first column: the class's planted corner-cue colour" if cues is not None else ""),
                 cell=1.3)
    return save(fig, cfg, dataset, "prototypes_grid")


def _per_layer(data):
    """Mean over seeds of per-layer values, ordered by depth: {(variant, method): (depths, names, values)}."""
    out = {}
    for (variant, method), d in data.groupby(["variant", "method"]):
        g = d.groupby(["level", "setting"])["value"].mean().reset_index().sort_values("level")
        out[(variant, method)] = (g.level.to_numpy(), list(g.setting), g.value.to_numpy())
    return out


@register("activation_paths")
def activation_paths(cfg, dataset):
    """Per-layer Spearman and L1 to the class-mean activations, each method vs natural images (leave-one-out)."""
    data = table(dataset, "activations")
    data = data[data.metric.isin(["spearman", "l1"])]
    if data.empty:
        raise NotApplicable("no activation rows (featviz selects no model, or `activations` found no prototypes)")
    variants = [v for v in cfg["train"]["variants"] if v in set(data.variant)]
    methods = [m for m in METHOD_COLOURS if m in set(data.method)] + sorted(set(data.method) - set(METHOD_COLOURS))
    # Small multiples: one column per model variant, rows Spearman / L1, one line per method.
    fig, axes = plt.subplots(2, len(variants), figsize=(1.2 + 3.1 * len(variants), 6.6), sharey="row", squeeze=False)
    for row, metric in enumerate(("spearman", "l1")):
        curves = _per_layer(data[data.metric == metric])
        for col, variant in enumerate(variants):
            ax = axes[row, col]
            names = []
            for method in methods:
                if (variant, method) not in curves:
                    continue
                depth, layer_names, values = curves[(variant, method)]
                names = layer_names if len(layer_names) > len(names) else names
                ax.plot(depth, values, color=METHOD_COLOURS.get(method, "black"), marker="o", ms=3.5,
                        lw=2.4 if method == "natural" else 1.5, label=method)
            ax.set_xticks(range(1, len(names) + 1), names if row else [], rotation=30, fontsize=8)
            if row == 0:
                ax.set_title(variant)
                ax.axhline(0, color="grey", ls=":", lw=1)
            else:
                ax.set_yscale("log")
                ax.set_xlabel("layer (input → logits)")
    axes[0, 0].set_ylabel("Spearman ρ with the class mean" + catalog.arrow("activations", "spearman"))
    axes[1, 0].set_ylabel("L1 to the class mean per unit (log)" + catalog.arrow("activations", "l1"))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, -1].legend(handles, labels, fontsize=8, title="method", title_fontsize=8, loc="upper left",
                       bbox_to_anchor=(1.02, 1))
    shares = table(dataset, "activations")
    share = shares[shares.metric == "share_spearman"].groupby("method")["value"].mean()
    note = ", ".join(f"{m} {share[m]:.2f}" for m in methods if m in share)
    fig.suptitle(f"{dataset}: activation paths of generated images vs natural test images of the class "
                 f"(mean over images and seeds)\nshare of layers closer (Spearman) than the "
                 f"{cfg['metrics']['activations']['quantile']:g}-quantile natural image: {note}", fontsize=10, y=1.02)
    return save(fig, cfg, dataset, "activation_paths")


@register("prototype_cue")
def prototype_cue(cfg, dataset):
    """How strongly each method's images carry the planted cue, standard vs cue-guided models."""
    data = table(dataset, "activations")
    panels = [("cue_colour_strength", "cue colour in the corner patch", (1, "exactly the cue colour")),
              ("cue_colour_strength_image", "cue colour over the whole image", (1, "exactly the cue colour")),
              ("cue_logit_drop", "class logit lost when the corner\nis greyed out", None)]
    data = data[data.metric.isin([p[0] for p in panels])]
    if data.empty:
        raise NotApplicable("no cue rows: the dataset has no planted cue, or featviz selects no model")
    variants = [v for v in cfg["train"]["variants"] if v in set(data.variant)]
    methods = [m for m in METHOD_COLOURS if m in set(data.method)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (metric, title, top) in zip(axes, panels):
        d = data[data.metric == metric]
        seed_points(ax, d, "method", "value", "variant", order=methods, hue_order=variants)
        ax.axhline(0, color="grey", ls=":", lw=1)
        ax.text(-0.45, 0, "no cue" if top else "no effect", color="grey", fontsize=7, va="bottom")
        if top:
            ax.axhline(top[0], color="grey", ls="--", lw=1)
            ax.text(-0.45, top[0], top[1], color="grey", fontsize=7, va="top")
        ax.set(title=title, xlabel="method", ylabel=metric)
        if ax.legend_ and ax is not axes[-1]:
            ax.legend_.remove()
    if axes[-1].legend_:
        axes[-1].legend(title="variant", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{dataset}: the planted corner cue in generated images (bars: mean over classes and seeds; "
                 "dots: seeds)", y=1.08)
    return save(fig, cfg, dataset, "prototype_cue")
