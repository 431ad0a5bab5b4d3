"""Paper D figures: perturbation curves and AUCs, segmentation scores and the per-class
(saliency-bias) test, per explainer, with the chance and oracle lines (docs/agf.md)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import catalog, gate, paths
from ..io import atomic_path, save_csv
from ..tidy import over_units
from . import NotApplicable, _variants, gate_failures, plt, register, save, table

REFERENCES = {"baseline_random": "#8c8c8c", "baseline_uniform": "#cfcfcf", "baseline_oracle": "#ffffff"}
COLOURS = ["#C44E52", "#4C72B0", "#55A868", "#8172B3", "#DD8452", "#937860", "#DA8BC3", "#64B5CD"]


def _methods(data: pd.DataFrame) -> list[str]:
    """Explainers first (AGF leading), reference lines last."""
    found = set(data.method)
    explainers = sorted(found - set(REFERENCES), key=lambda m: (m != "agf", m))
    return explainers + [r for r in REFERENCES if r in found]


def _colour(method: str, methods: list[str]) -> str:
    return REFERENCES.get(method) or COLOURS[[m for m in methods if m not in REFERENCES].index(method) % len(COLOURS)]


def _write_table(dataset: str, name: str, title: str, stats: pd.DataFrame, columns: list[tuple[str, str]],
                 variants: list[str], failed: dict | None):
    """csv of the statistics and a markdown table: explainer rows × (variant, measure) columns; variants
    with a model that failed the learnability gate are marked (`failed`, figures.gate_failures)."""
    out = paths.tables(dataset)
    save_csv(out / f"{name}.csv", stats)
    cell = {(r.variant, r.method, r.column): f"{r['mean']:.3f}" + ("" if pd.isna(r["sd"]) else f" ± {r['sd']:.3f}")
            for _, r in stats.iterrows()}
    heads = [f"{gate.mark(v, failed or ())}: {label}" for v in variants for _, label in columns]
    lines = [f"# {dataset}: {title}", "", "| explainer | " + " | ".join(heads) + " |", "|---" * (1 + len(heads)) + "|"]
    for method in _methods(stats):
        lines.append(f"| {method} | " + " | ".join(cell.get((v, method, c), "–") for v in variants for c, _ in columns) + " |")
    lines += ["", gate.footnote(failed, variants)]
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


@register("agf_perturbation")
def agf_perturbation(cfg, dataset):
    """Positive and negative perturbation curves per explainer (AUC in the legend), one row per
    variant, for the maps of the predicted and of the true class; table of every AUC."""
    data = table(dataset, "perturbation")
    data = data[data.split == "test"] if "test" in set(data.split) else data
    if data.empty:
        raise NotApplicable("no perturbation rows (the family applies to variants with plain layers)")
    variants = [v for v in _variants(cfg) if v in set(data.variant)]
    methods = _methods(data)
    failed = gate_failures(cfg, dataset)
    kinds = [k for k in ("predicted", "label") if k in set(data.setting)]
    panels = [(order, kind) for kind in kinds for order in ("positive", "negative")]
    fig, axes = plt.subplots(len(variants), len(panels), figsize=(4.1 * len(panels), 3.5 * len(variants)),
                             squeeze=False, sharex=True, sharey=True)
    aucs = over_units(data[data.metric.str.endswith("_auc")], ["variant", "method", "metric", "setting"])
    curves = over_units(data[data.metric.str.endswith("_accuracy")], ["variant", "method", "metric", "setting", "level"])
    for r, variant in enumerate(variants):
        for c, (order, kind) in enumerate(panels):
            ax = axes[r, c]
            for method in methods:
                d = curves[(curves.variant == variant) & (curves.method == method) & (curves.metric == f"{order}_accuracy")
                           & (curves.setting == kind)]
                if d.empty:
                    continue
                a = aucs[(aucs.variant == variant) & (aucs.method == method) & (aucs.metric == f"{order}_auc")
                         & (aucs.setting == kind)]["mean"]
                ref = method in REFERENCES
                ax.plot(d.level, d["mean"], ls="--" if method == "baseline_random" else ":" if ref else "-", marker=None if ref else "o",
                        ms=3, lw=1.3 if ref else 1.8, color="black" if method == "baseline_oracle" else _colour(method, methods),
                        label=f"{method} ({a.iloc[0]:.3f})" if len(a) else method)
                if not ref:
                    ax.fill_between(d.level, d["mean"] - d["sd"].fillna(0), d["mean"] + d["sd"].fillna(0),
                                    color=_colour(method, methods), alpha=0.10, lw=0)
            better = "lower" if order == "positive" else "higher"
            ax.set_title(f"{gate.mark(variant, failed or ())}: {order}, {kind}-class maps\n(AUC{catalog.arrow('perturbation', f'{order}_auc')}"
                         f" {better} = faithful)", fontsize=9)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, title="explainer (AUC)", title_fontsize=7, loc="best", framealpha=0.8)
            if r == len(variants) - 1:
                ax.set_xlabel("share of pixels removed" + (" (most relevant first)" if order == "positive"
                                                          else " (least relevant first)"), fontsize=8)
            if c == 0:
                ax.set_ylabel("top-1 accuracy vs label", fontsize=8)
    base = cfg["metrics"]["perturbation"]["baseline"]
    fig.suptitle(f"{dataset}: perturbation test of paper D (test split, first {cfg['metrics']['perturbation']['max_images'] or 'all'}"
                 f" images, removed pixels {base}; mean ± sd over seeds)", y=1.0)
    fig.tight_layout()
    stats = aucs.assign(column=aucs.metric + " · " + aucs.setting)
    cols = [(f"{o}_auc · {k}", f"{o} AUC{catalog.arrow('perturbation', f'{o}_auc')} ({k})")
            for k in kinds for o in ("positive", "negative")]
    _write_table(dataset, "agf_perturbation", "perturbation AUCs (area over the removed fractions, ≤ 0.8 over 10–90%), "
                 "mean ± sd over seeds", stats, cols, variants, failed)
    return save(fig, cfg, dataset, "agf_perturbation")


def _bars(ax, d: pd.DataFrame, groups: list[str], methods: list[str], labels: dict):
    """Grouped bars: one group per measure, one bar per explainer (mean over seeds, sd whisker)."""
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        m = d[d.method == method].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(x, m["mean"], width, yerr=m["sd"].fillna(0), color=_colour(method, methods), label=method,
               edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.8, "capsize": 1.5},
               hatch="//" if method in REFERENCES else None, alpha=0.9)
    ax.set_xticks(np.arange(len(groups)), [labels[g] for g in groups], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)


@register("agf_segmentation")
def agf_segmentation(cfg, dataset):
    """Segmentation scores of the thresholded maps (left) and the per-class test on two-object
    images (right): where each class's map puts its mass, for the top and the second class."""
    seg = table(dataset, "segmentation")
    seg = seg[seg.split == "test"] if "test" in set(seg.split) else seg
    per = table(dataset, "perclass")
    if seg.empty and per.empty:
        raise NotApplicable("no segmentation or per-class rows (masks, pairs split and plain-layer variants needed)")
    variants = [v for v in _variants(cfg) if v in set(seg.variant) | set(per.variant)]
    failed = gate_failures(cfg, dataset) or ()
    fig, axes = plt.subplots(len(variants), 2, figsize=(15, 3.8 * len(variants)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.15, 1]})
    seg_metrics = ["pixel_accuracy", "miou", "map", "map_continuous"]
    seg_labels = {m: lab + catalog.arrow("segmentation", m) for m, lab in
                  zip(seg_metrics, ["pixel accuracy", "mIoU", "mAP (binarised)", "mAP (continuous)"])}
    s = over_units(seg, ["variant", "method", "metric"]).rename(columns={"metric": "group"})
    per_groups = [(k, m) for k in ("top", "second") for m in ("mass_on_explained", "mass_on_other", "object_preference")]
    short = {"mass_on_explained": "on explained", "mass_on_other": "on other", "object_preference": "preference"}
    per_labels = {f"{m} · {k}": f"{k} class\n{short[m]}{catalog.arrow('perclass', m)}" for k, m in per_groups}
    p = over_units(per, ["variant", "method", "metric", "setting"])
    p["group"] = p.metric + " · " + p.setting
    for r, variant in enumerate(variants):
        ax = axes[r, 0]
        d = s[s.variant == variant]
        if not d.empty:
            _bars(ax, d, [m for m in seg_metrics if m in set(d.group)], _methods(d), seg_labels)
        thr = ", ".join(f"{m} at {t}" for m, t in cfg["metrics"]["segmentation"]["thresholds"].items())
        ax.set_title(f"{gate.mark(variant, failed)}: segmentation of the object (test; maps > their mean; {thr})", fontsize=9)
        ax = axes[r, 1]
        d = p[p.variant == variant]
        if not d.empty:
            _bars(ax, d, [f"{m} · {k}" for k, m in per_groups if f"{m} · {k}" in set(d.group)], _methods(d), per_labels)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{gate.mark(variant, failed)}: per-class test on two-object images (pairs): share of positive mass\n"
                     "of the top / second present class's map on its object and on the other (dotted: 0.5)", fontsize=9)
    handles, labels = next((ax.get_legend_handles_labels() for ax in axes.flat if ax.get_legend_handles_labels()[0]), ([], []))
    fig.suptitle(f"{dataset}: paper D segmentation and saliency-bias tests (mean ± sd over seeds)", y=1.0)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
               title="explainers; hatched: reference lines", title_fontsize=8)
    return save(fig, cfg, dataset, "agf_segmentation")
