"""Paper E figures: the five salience measures of "Explain to Me", standard vs salience-trained models.

Distributions (entropy, equivariance, stability) are boxes over the per-image rows of every seed
(results/metrics/{dataset}/{family}.parquet); curves (noise, degradation) are per-seed means over
images with a 95% bootstrap band over seeds (seaborn), so the band shows run-to-run spread, the
unit the variants are compared on. Nothing here loads a model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from .. import catalog, gate, paths
from ..io import atomic_path, read_table, save_csv
from ..tidy import COLUMNS, over_units, select
from . import NotApplicable, colour, gate_failures, mark_legend, mosaic, palette, tile, _variants, plt, register, save, table

TRANSFORM_ORDER = ["hflip", "vflip", "rot90_ccw", "rot90_cw"]
MODES = ["background", "object"]
GALLERY_IMAGES = 4


def per_image(dataset: str, family: str) -> pd.DataFrame:
    """The per-image rows of a family (written by `aggregate` next to the tidy CSV)."""
    path = paths.metric_table(dataset, family, "parquet")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: per-image rows missing; run `snakemake --cores all measure` first")
    data = read_table(path, columns=COLUMNS)
    if data.empty:
        raise NotApplicable(f"{family} has no rows in this run (it scores none of the configured models)")
    for col in ("dataset", "variant", "method", "split", "metric", "setting"):
        data[col] = data[col].astype(object)  # Arrow-backed strings make seaborn's grouping ~10x slower
    data["setting"] = data["setting"].fillna("")
    return data


def _order(cfg, data):
    variants = [v for v in _variants(cfg) if v in set(data.variant)]
    methods = [m for m in cfg["explain"]["methods"] if m in set(data.method)]
    return variants, methods


def _box(ax, data, x, order, variants):
    data = data.dropna(subset=["value"])  # e.g. Spearman of a constant map (the `constant` control) is undefined
    if data.empty:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="grey")
        return
    sns.boxplot(data=data, x=x, y="value", hue="variant", order=order, hue_order=variants, ax=ax,
                palette=palette(variants), showfliers=False, width=0.7, linewidth=0.8)


def _curve(ax, data, x, variants, methods):
    """Per-seed means (the CSV) against x; hue = variant, line style = explainer; 95% CI over seeds."""
    style = "method" if data.method.nunique() > 1 else None
    sns.lineplot(data=data, x=x, y="value", hue="variant", hue_order=variants, style=style,
                 style_order=methods if style else None, errorbar=("ci", 95), seed=0, n_boot=200,
                 marker="o", markersize=4, palette=palette(variants), ax=ax)


def _legend_once(axes, failed=None):
    """Keep the last panel's legend only, with the learnability-gate mark on `failed` variants."""
    for i, ax in enumerate(np.ravel(axes)):
        if ax.legend_ is not None and i != len(np.ravel(axes)) - 1:
            ax.legend_.remove()
    mark_legend(np.ravel(axes)[-1], failed or ())


@register("salience_entropy")
def salience_entropy(cfg, dataset):
    data = per_image(dataset, "entropy")
    data = data[data.split == "test"]
    variants, methods = _order(cfg, data)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["spatial_entropy", "histogram_entropy"]):
        _box(ax, data[data.metric == metric], "method", methods, variants)
        ax.set(title=metric.replace("_", " ") + " (lower = more focused)", xlabel="explainer",
               ylabel="normalised entropy", ylim=(0, 1.02))
    _legend_once(axes, gate_failures(cfg, dataset))
    fig.suptitle(f"{dataset}: (a) salience-map entropy per image (test; boxes over images and seeds)", y=1.03)
    return save(fig, cfg, dataset, "salience_entropy")


@register("salience_noise")
def salience_noise(cfg, dataset):
    data = table(dataset, "noise")
    rows = per_image(dataset, "noise")
    variants, methods = _order(cfg, data)
    sweep = data[data.setting == "s&p"]
    panels = [("score", "probability of the clean explained class"), ("prediction_changed", "share of predictions changed"),
              ("map_ssim", "SSIM(noisy map, clean map)")]
    ood = rows[rows.setting == "ood"]
    fig, axes = plt.subplots(1, len(panels) + (not ood.empty), figsize=(4.6 * (len(panels) + 1), 4))
    for ax, (metric, label) in zip(axes, panels):
        _curve(ax, sweep[sweep.metric == metric], "level", variants, methods)
        ax.set(xlabel="salt-and-pepper amount", ylabel=label, title=metric.replace("_", " "), ylim=(-0.02, 1.02))
    if not ood.empty:
        ax = axes[len(panels)]
        _box(ax, ood[ood.metric == "max_softmax"], "split", ["test", "ood"], variants)
        ax.set(title="max softmax: test vs ood classes", xlabel="split", ylabel="max softmax probability", ylim=(0, 1.02))
    _legend_once(axes, gate_failures(cfg, dataset))
    fig.suptitle(f"{dataset}: (b) reaction to out-of-set inputs (curves: mean over images per seed, "
                 "band 95% CI over seeds)", y=1.03)
    return save(fig, cfg, dataset, "salience_noise")


@register("salience_equivariance")
def salience_equivariance(cfg, dataset):
    data = per_image(dataset, "equivariance")
    variants, methods = _order(cfg, data)
    shifts = sorted(s for s in set(data.setting) if s.startswith("shift"))
    order = [t for t in TRANSFORM_ORDER if t in set(data.setting)] + shifts
    fig, axes = plt.subplots(2, len(methods), figsize=(max(7.5, 0.75 * len(order)) * len(methods), 7.5),
                             squeeze=False, sharey="row")
    for c, method in enumerate(methods):
        for r, metric in enumerate(["map_ssim", "map_spearman"]):
            ax = axes[r, c]
            _box(ax, data[(data.method == method) & (data.metric == metric)], "setting", order, variants)
            ax.set(title=f"{method}: {metric.replace('map_', '')}", xlabel="" if r == 0 else "transform",
                   ylabel=f"{metric.replace('map_', '')}(T⁻¹ map(T x), map(x))")
            ax.set_ylim(top=1.02)
            ax.axhline(1, color="grey", lw=0.6, ls=":")
            ax.tick_params(axis="x", rotation=60, labelsize=7)
    _legend_once(axes, gate_failures(cfg, dataset))
    fig.suptitle(f"{dataset}: (c) equivariance under flips, shifts and 90° rotations (1 = the map follows the "
                 "image; boxes over images and seeds)")
    fig.tight_layout()
    return save(fig, cfg, dataset, "salience_equivariance")


@register("salience_stability")
def salience_stability(cfg, dataset):
    data = per_image(dataset, "stability")
    data = data[data.split == "test"]
    variants, methods = _order(cfg, data)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["map_ssim", "map_spearman"]):
        _box(ax, data[data.metric == metric], "method", methods, variants)
        ax.set(title=f"{metric.replace('map_', '')} between seeds (higher = more stable)", xlabel="explainer",
               ylabel=metric.replace("map_", ""))
        ax.set_ylim(top=1.02)
    _legend_once(axes, gate_failures(cfg, dataset))
    pairs = data.setting.nunique()
    fig.suptitle(f"{dataset}: (d) stability of maps across training runs (test; boxes over images and "
                 f"{pairs} seed pair{'s' * (pairs != 1)})", y=1.03)
    return save(fig, cfg, dataset, "salience_stability")


@register("salience_degradation")
def salience_degradation(cfg, dataset):
    data = table(dataset, "degradation")
    variants, methods = _order(cfg, data)
    panels = [("score", "probability of the clean explained class"), ("accuracy", "accuracy"),
              ("map_ssim", "SSIM(map after, map before)")]
    fig, axes = plt.subplots(len(MODES), len(panels), figsize=(14, 8), squeeze=False)
    for r, mode in enumerate(MODES):
        for c, (metric, label) in enumerate(panels):
            ax = axes[r, c]
            _curve(ax, data[(data.setting == mode) & (data.metric == metric)], "level", variants, methods)
            what = "non-salient region blurred" if mode == "background" else "salient region blurred"
            ax.set(title=f"{mode} ({what}): {metric.replace('_', ' ')}", ylabel=label, ylim=(-0.02, 1.02),
                   xlabel="blur strength (× reference σ; 0 = clean)", xlim=(-0.05, None))
    _legend_once(axes, gate_failures(cfg, dataset))
    fig.suptitle(f"{dataset}: (e) salience-guided degradation (mean over images per seed, band 95% CI over seeds)")
    fig.tight_layout()
    return save(fig, cfg, dataset, "salience_degradation")


# ---- summary table ---------------------------------------------------------------------------

def summary_table(dataset: str) -> pd.DataFrame:
    """variant × method × measure -> mean, sd and n over seeds (stability: over seed pairs), for the
    measures of `catalog.SALIENCE_SUMMARY` (the same filters as results/summary.json)."""
    out, tables = [], {}
    for spec in catalog.SALIENCE_SUMMARY:
        family = spec["family"]
        if family not in tables:
            tables[family] = table(dataset, family)
        d = tables[family]
        d = select(d[(d.metric == spec["metric"]) & (d.split == spec["split"])], spec["setting"], spec["levels"])
        if d.empty:
            continue
        stats = over_units(d, ["variant", "method"], "setting" if family == "stability" else "seed")
        stats.insert(2, "measure", spec["label"])
        out.append(stats)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["variant", "method", "measure", "mean", "sd", "n"])


def _cell(row) -> str:
    return f"{row['mean']:.3f}" + ("" if pd.isna(row["sd"]) else f" ± {row['sd']:.3f}")


@register("salience_summary")
def salience_summary(cfg, dataset):
    stats = summary_table(dataset)
    variants = [v for v in _variants(cfg) if v in set(stats.variant)]
    failed = gate_failures(cfg, dataset)
    cells = {(r["measure"], r["method"], r["variant"]): _cell(r) for _, r in stats.iterrows()}
    labels = [spec["label"] for spec in catalog.SALIENCE_SUMMARY]
    keys = sorted({k[:2] for k in cells}, key=lambda k: (labels.index(k[0]), k[1]))
    arrows = {s["label"]: catalog.arrow(s["family"], s["metric"]) for s in catalog.SALIENCE_SUMMARY}
    wide = pd.DataFrame([[measure + arrows[measure], method, *(cells.get((measure, method, v), "–") for v in variants)]
                         for measure, method in keys], columns=["measure", "explainer", *(gate.mark(v, failed or ()) for v in variants)])
    out = paths.tables(dataset)
    save_csv(out / "salience_summary.csv", stats)
    header = "| " + " | ".join(wide.columns) + " |"
    lines = [f"# {dataset}: Explain-to-Me salience measures, mean ± sd over seeds (stability: over seed pairs)", "",
             header, "|" + "---|" * (2 + len(variants))]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.itertuples(index=False)]
    lines += ["", gate.footnote(failed, variants)]
    with atomic_path(out / "salience_summary.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.4 + 1.6 * len(variants), 0.2 * (len(wide) + 3)))
    ax.axis("off")
    tab = ax.table(cellText=wide.values, colLabels=list(wide.columns), loc="upper center", cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.auto_set_column_width(list(range(wide.shape[1])))
    ax.set_title(f"{dataset}: salience measures, mean ± sd over seeds", fontsize=9)
    return save(fig, cfg, dataset, "salience_summary")


# ---- cross-run gallery -----------------------------------------------------------------------

@register("salience_gallery")
def salience_gallery(cfg, dataset):
    """Same test images, every seed's map: rows = variant × seed, columns = image × explainer."""
    from ..io import load_explanation
    from ..data import read_split
    split = read_split(paths.prepared(dataset), "test")
    idx = np.linspace(0, len(split) - 1, min(GALLERY_IMAGES, len(split))).astype(int)
    methods, variants = cfg["explain"]["methods"], _variants(cfg)
    cols = [(i, m) for i in idx for m in methods]
    tiles, labels, colours = [[tile(split.images[i]) for i, _ in cols]], ["image"], ["black"]
    failed = gate_failures(cfg, dataset) or {}
    for variant in variants:
        usable = catalog.methods_for(cfg["explain"], variant)
        for seed in catalog.seeds_for(cfg, variant):
            maps = {m: load_explanation(paths.explanation(dataset, variant, seed, m, "test"))["maps"] for m in usable}
            tiles.append([tile(split.images[i], maps[m][i]) if m in maps else None for i, m in cols])
            labels.append(f"{gate.mark(variant, failed, seed)} seed {seed}")
            colours.append(colour(variant, variants))
    fig = mosaic(tiles, [f"test #{i}\n{m}" for i, m in cols], labels,
                 f"{dataset}: the same test images explained by every training run (maps min-max scaled)",
                 row_colours=colours)
    return save(fig, cfg, dataset, "salience_gallery")
