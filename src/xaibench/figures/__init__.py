"""Figures and tables, one function each, reading tidy metric tables and explanation files.

Two figures also run a trained model (`lap_attention`: the LAP layers' attention; `protopnet_gallery`:
prototype patches), loading it read-only; none trains anything, so `snakemake figures` redraws every
figure in seconds. Which files a figure reads is its catalog entry (`needs`, `variants`).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .. import catalog, gate, paths  # noqa: E402
from ..io import atomic_path, read_table  # noqa: E402
from ..drawing import mosaic, savefig, tile  # noqa: E402,F401  (the figures' drawing helpers)
from ..registry import Registry  # noqa: E402
from ..tidy import COLUMNS, over_units  # noqa: E402

FIGURES = Registry("figure", catalog.FIGURES)
register = FIGURES.register
PALETTE = {"standard": "#4C72B0", "salience": "#DD8452", "lap": "#55A868", "lap_plugin": "#8FBC8F",
           "protopnet": "#C44E52", "protopnet_comp": "#8172B3"}
# Colours for any other variant (a user's own): picked by a hash of the name, so a name keeps its colour
# across figures and runs; two names of one run whose hashes meet take the next free spare (`palette`).
_SPARE = ["#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD", "#2F4B7C", "#A05195", "#F95D6A", "#FFA600",
          "#665191", "#3E8E41", "#B5651D"]


def palette(variants) -> dict[str, str]:
    """Every variant's colour: the built-in palette, else its name's spare colour, or, when another
    of `variants` already has that one, the next free spare (names in sorted order, so every figure
    of a run agrees)."""
    import zlib
    colours = {v: PALETTE[v] for v in variants if v in PALETTE}
    used = set()
    for v in sorted(set(variants) - set(PALETTE)):
        i = zlib.crc32(v.encode()) % len(_SPARE)
        for step in range(len(_SPARE)):  # more own variants than spares: colours repeat
            if _SPARE[(i + step) % len(_SPARE)] not in used:
                i = (i + step) % len(_SPARE)
                break
        colours[v] = _SPARE[i]
        used.add(_SPARE[i])
    return colours


def colour(variant: str, variants=()) -> str:
    """The colour of `variant` among the run's `variants` (palette)."""
    return palette([*variants, variant])[variant]


class NotApplicable(Exception):
    """A figure has nothing to show for this run (e.g. no split has masks); the message says why."""


def save(fig, cfg: dict, dataset: str, stem: str) -> list[Path]:
    out = paths.figures(dataset)
    written = [savefig(fig, out / f"{stem}.{fmt}", cfg["figures"]["dpi"]) for fmt in cfg["figures"]["formats"]]
    plt.close(fig)
    return written


def table(dataset: str, family: str) -> pd.DataFrame:
    path = paths.metric_table(dataset, family)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metric table missing; run `snakemake --cores all measure` first")
    data = read_table(path, columns=COLUMNS)
    if data.empty:
        raise NotApplicable(f"{family} has no rows in this run (it scores none of the configured models)")
    return data


def seed_points(ax, data: pd.DataFrame, x: str, y: str, hue: str, order=None, hue_order=None, failed=()):
    """Mean ± sd over seeds as a bar with every seed drawn as a dot, so the spread is visible.

    Bars of the hue levels in `failed` (variants with a model that failed the learnability gate,
    `gate_failures`) are hatched and their legend entries get the gate mark. The dots' sideways
    jitter is drawn from numpy's global generator (seaborn has no seed argument), so it is seeded
    here, the same for every call and restored afterwards: a redraw gives the same pixels whatever
    was drawn before it."""
    import seaborn as sns  # not at module level: featviz draws its grids without seaborn's scipy import
    hue_order = list(hue_order) if hue_order is not None else list(pd.unique(data[hue]))
    colours = palette(hue_order) if hue == "variant" else None
    sns.barplot(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order, errorbar="sd", ax=ax,
                palette=colours, alpha=0.55, capsize=0.08, err_kws={"linewidth": 1.2})
    for container, level in zip(ax.containers[-len(hue_order):], hue_order):  # one container per hue level
        for bar in container.patches if level in failed else ():
            bar.set(hatch=HATCH, edgecolor="0.25")
    state = np.random.get_state()
    np.random.seed(0)
    try:
        sns.stripplot(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order, dodge=True, ax=ax,
                      palette=colours, size=5, edgecolor="black", linewidth=0.6, legend=False)
    finally:
        np.random.set_state(state)
    mark_legend(ax, failed, hatch=True)


HATCH = "///"  # bars of variants with a model that failed the learnability gate


def gate_failures(cfg: dict, dataset: str) -> dict[str, dict[int, str]] | None:
    """variant -> why its models fail the learnability gate (`xaibench.gate`), from the tidy accuracy
    table; None when this run does not measure the `accuracy` family (the gate cannot be evaluated)."""
    path = paths.metric_table(dataset, "accuracy")
    if "accuracy" not in cfg["metrics"]["families"] or not path.is_file():
        return None
    return gate.failures(gate.summaries_from_rows(read_table(path).to_dict("records")), cfg)


def mark_legend(ax, failed, hatch: bool = False) -> None:
    """Add the gate mark to the legend labels (and, for bars, hatch the legend patches) of `failed`
    variants: on the artists, so a legend drawn later shows it too, and on the legend already drawn."""
    handles, labels = ax.get_legend_handles_labels()
    legend = ax.get_legend()
    shown = zip(legend.get_texts(), legend.legend_handles) if legend else ()
    for text, handle in [*((lab, h) for h, lab in zip(handles, labels)), *((t.get_text(), h) for t, h in shown)]:
        if text in failed:
            handle.set_label(gate.mark(text, failed))
            if hatch:
                handle.set_hatch(HATCH)
    for t in legend.get_texts() if legend else ():
        t.set_text(gate.mark(t.get_text(), failed))


def _variants(cfg):
    return [v for v in cfg["train"]["variants"]]


ACCURACY_SETS = {("val", "accuracy"): "validation", ("test", "accuracy"): "test (random cue)",
                 ("test_cue_agreeing", "accuracy"): "cue agrees", ("test_cue_conflicting", "accuracy"): "cue conflicts",
                 ("nocue", "accuracy"): "no cue (nocue)",
                 ("test_cue_conflicting", "follows_cue"): "follows the cue\n(when it conflicts)"}


@register("accuracy")
def accuracy(cfg, dataset):
    data = table(dataset, "accuracy")
    data = data[[k in ACCURACY_SETS for k in zip(data.split, data.metric)]].copy()
    data["set"] = [ACCURACY_SETS[k] for k in zip(data.split, data.metric)]
    order = [v for v in ACCURACY_SETS.values() if v in set(data["set"])]
    fig, ax = plt.subplots(figsize=(9, 4))
    seed_points(ax, data, "set", "value", "variant", order=order, hue_order=_variants(cfg),
                failed=gate_failures(cfg, dataset) or ())
    k = len(cfg["data"]["shapes"]["classes"]) if dataset == "shapes" else None
    if k:
        ax.axhline(1 / k, ls=":", c="grey", lw=1)
        ax.text(len(order) - 0.5, 1 / k, " chance", va="bottom", ha="right", color="grey", fontsize=8)
    ax.set(ylim=(0, 1.02), xlabel="", ylabel="share of images", title=f"{dataset}: accuracy by training variant (bars: mean ± sd over seeds)")
    ax.legend(title="variant", loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, cfg, dataset, "accuracy")


LOCALIZATION = {"relevance_mass": "relevance mass in mask", "pointing_game": "pointing game hit rate",
                "pixel_ap": "pixel AP vs mask", "cue_mass": "relevance mass on the cue patch"}
BASELINE_STYLE = {"baseline_oracle": ("-", "black"), "baseline_uniform": ("-.", "grey"),
                  "baseline_gaussian": (":", "grey"), "baseline_random": ("--", "grey")}
LOCALIZATION_SPLITS = ["test", "test_cue_agreeing", "test_cue_conflicting", "nocue", "pairs"]


def localization_table(dataset: str) -> pd.DataFrame:
    """variant × method × split × measure -> mean, sd and n over seeds. Baseline maps (method
    `baseline_*`) score the same images for every model, so they are pooled into variant `—`."""
    data = table(dataset, "localization")
    data = data[data.metric.isin(list(LOCALIZATION))].copy()
    data.loc[data.method.str.startswith("baseline_"), "variant"] = "—"
    return over_units(data, ["variant", "method", "split", "metric"])


@register("localization")
def localization(cfg, dataset):
    from ..io import atomic_path, save_csv
    stats = localization_table(dataset)
    if stats.empty:
        raise NotApplicable("no explained split of this dataset has ground-truth masks")
    out = paths.tables(dataset)
    save_csv(out / "localization.csv", stats)
    rank = {s: i for i, s in enumerate(LOCALIZATION_SPLITS)}
    variants = ["—"] + _variants(cfg)
    stats = stats.sort_values(["split", "metric", "variant", "method"],
                              key=lambda c: c.map(rank).fillna(99) if c.name == "split" else
                              c.map({v: i for i, v in enumerate(variants)}).fillna(99) if c.name == "variant" else c)
    lines = [f"# {dataset}: localisation against the object mask (and mass on the cue patch), mean ± sd over seeds",
             "", "Method `baseline_*`: reference maps on the same images (chance lines; `baseline_oracle` = the mask "
             "itself, the ceiling), pooled over models (variant —).", "",
             "| split | measure | variant | method | mean ± sd | n |", "|---|---|---|---|---|---|"]
    failed = gate_failures(cfg, dataset)
    lines += [f"| {r.split} | {r.metric} | {gate.mark(r.variant, failed or ())} | {r.method} | {r.mean:.3f}"
              + ("" if pd.isna(r.sd) else f" ± {r.sd:.3f}") + f" | {r.n} |" for r in stats.itertuples()]
    lines += ["", gate.footnote(failed, set(stats.variant))]
    with atomic_path(out / "localization.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")

    data = table(dataset, "localization")
    data = data[data.split == "test"]
    metrics = [m for m in LOCALIZATION if m in set(data.metric)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 4), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        d = data[(data.metric == metric) & ~data.method.str.startswith("baseline_")]
        seed_points(ax, d, "method", "value", "variant", hue_order=_variants(cfg), failed=failed or ())
        for method, (ls, line_colour) in BASELINE_STYLE.items():
            ref = data[(data.metric == metric) & (data.method == method)]["value"]
            if len(ref):
                ax.axhline(ref.mean(), ls=ls, c=line_colour, lw=1, label=method.replace("baseline_", ""))
        ax.set(title=LOCALIZATION[metric] + catalog.arrow("localization", metric), xlabel="explainer", ylabel="score", ylim=(0, 1.02))
        ax.tick_params(axis="x", labelrotation=35)
        if ax.legend_ and ax is not axes[0][-1]:
            ax.legend_.remove()
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="variant / reference map")
    fig.suptitle(f"{dataset}: how well maps point at the object, and at the cue patch (test split; mean ± sd over "
                 "seeds; lines: reference maps on the same images)")
    return save(fig, cfg, dataset, "localization")


@register("gallery")
def gallery(cfg, dataset):
    """Example test images, their ground-truth mask, and each variant's map per method (first seed)."""
    from ..data import read_split
    from ..io import load_explanation
    split = read_split(paths.prepared(dataset), "test")
    n = min(cfg["figures"]["gallery_images"], len(split))
    idx = np.linspace(0, len(split) - 1, n).astype(int)
    seed = cfg["train"]["seeds"][0]
    cols = [(v, m) for v in _variants(cfg) for m in catalog.methods_for(cfg["explain"], v)]
    maps = {c: load_explanation(paths.explanation(dataset, c[0], catalog.seeds_for(cfg, c[0])[0], c[1], "test"))
            for c in cols}
    classes = _classes(dataset)
    masks = split.masks if split.masks is not None else np.zeros(split.images.shape[:3], np.uint8)
    tiles = [[tile(split.images[i]), tile(masks[i])] +
             [tile(split.images[i], maps[key]["maps"][i], border=None if maps[key]["predictions"][i] == split.labels[i]
                   else "red") for key in cols] for i in idx]
    failed = gate_failures(cfg, dataset) or {}
    fig = mosaic(tiles, ["image", "mask"] + [f"{gate.mark(v, failed, catalog.seeds_for(cfg, v)[0])}\n{m}" for v, m in cols],
                 [classes[split.labels[i]] for i in idx],
                 f"{dataset}: test images, ground-truth masks and maps (seed {seed}; red frame = wrong prediction)")
    return save(fig, cfg, dataset, "gallery")


def _classes(dataset):
    from ..data import read_meta
    return read_meta(paths.prepared(dataset))["classes"]


wanted = catalog.figures_for  # the figures this configuration can draw (the Snakefile asks the same)


def outputs(cfg: dict, dataset: str, name: str) -> list[Path]:
    """Every file figure `name` must write (what the Snakefile declares)."""
    files = [paths.figures(dataset) / f"{name}.{fmt}" for fmt in cfg["figures"]["formats"]]
    if catalog.FIGURES[name].get("table"):
        files += [paths.tables(dataset) / f"{name}.{ext}" for ext in ("md", "csv")]
    return files


def placeholder(cfg: dict, dataset: str, name: str, reason: str) -> list[Path]:
    """Write every declared output of a figure that has nothing to show, saying why."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{dataset} / {name}: not applicable\n{reason}", ha="center", va="center", wrap=True)
    written = save(fig, cfg, dataset, name)
    for path in outputs(cfg, dataset, name)[len(written):]:
        with atomic_path(path) as tmp:
            tmp.write_text(f"not applicable: {reason}\n" if path.suffix == ".md" else "")
        written.append(path)
    return written


def draw(cfg: dict, dataset: str, names: list[str] | None = None) -> list[Path]:
    """Draw the named figures (default: every figure this configuration can draw).

    A figure with nothing to show still writes its declared files, a placeholder naming the reason,
    so a run on data without masks (say) completes instead of failing on missing outputs.
    """
    written = []
    for name in names or wanted(cfg):
        try:
            files = FIGURES.get(name)(cfg, dataset) or []
            if not files:
                raise NotApplicable("this run has no data this figure draws")
        except NotApplicable as why:
            files = placeholder(cfg, dataset, name, str(why))
        written += files
    return written
