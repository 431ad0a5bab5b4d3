"""The leaderboard as a heatmap and a table (results/leaderboard/{dataset}.csv, written by `xaibench
leaderboard --compute`): one row per (variant, explainer) pair, one column per family's headline metric."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import leaderboard as lb
from .. import paths
from ..io import atomic_path, save_csv
from . import NotApplicable, plt, register, save


def display(cells: pd.DataFrame) -> pd.DataFrame:
    """The wide table as shown (report, results/tables/{dataset}/leaderboard.csv): one text cell per family."""
    rows, columns, grid = lb.wide(cells)
    heads = lb.column_heads(grid, columns)
    return pd.DataFrame([{"pair": lb.row_label(cells, pair),
                          **{f"{heads[f].paper} · {lb.header(heads[f])}": lb.cell_text(grid[pair, f])
                             if (pair, f) in grid else "" for f in columns}} for pair in rows])


def shade(cells: list, direction: str) -> list[float]:
    """Colour positions in [0,1], better = higher: the scaled score clipped to chance..oracle, else the
    column's raw values min-max scaled and turned by the direction; NaN for a metric without one."""
    values = np.array([lb.shown(c)[0] for c in cells], dtype=float)
    if cells and cells[0].scale == "chance→oracle":
        return list(np.clip(values, 0, 1))
    if direction not in ("higher", "lower") or not np.isfinite(values).any():
        return [np.nan] * len(cells)
    lo, hi = np.nanmin(values), np.nanmax(values)
    pos = (values - lo) / (hi - lo) if hi > lo else np.full_like(values, 0.5)
    return list(pos if direction == "higher" else 1 - pos)


@register("leaderboard")
def leaderboard_figure(cfg, dataset):
    """Heatmap of the leaderboard: colour = how good the cell is within its column (0→1 columns: the
    scaled value itself), text = the shown value and rank; uninformative columns pale and hatched."""
    path = paths.leaderboard(dataset)
    if not path.is_file():
        raise NotApplicable(f"{path} is missing; run `xaibench leaderboard --compute`")
    cells = lb.read(path)
    if cells.empty:
        raise NotApplicable("the run scored no map")
    out = paths.tables(dataset)
    save_csv(out / "leaderboard.csv", display(cells))
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(lb.markdown(cells))
    rows, columns, grid = lb.wide(cells)
    fig, ax = plt.subplots(figsize=(1.05 * len(columns) + 3.2, 0.3 * len(rows) + 2.2))
    cmap = plt.get_cmap("viridis")
    for j, family in enumerate(columns):
        keyed = [(i, grid[pair, family]) for i, pair in enumerate(rows) if (pair, family) in grid]
        head = keyed[0][1]
        grey = lb.greyed(head)
        for (i, cell), pos in zip(keyed, shade([c for _, c in keyed], head.direction)):
            face = "#eeeeee" if np.isnan(pos) else cmap(pos)
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=face, alpha=0.35 if grey else 1.0,
                                       hatch="///" if grey else None, edgecolor="white", lw=0.5))
            x = lb.shown(cell)[0]
            text = "—" if pd.isna(x) else f"{x:.2f}" + (f"\n#{cell.rank}" if cell.rank else "")
            dark = not np.isnan(pos) and pos < 0.6 and not grey
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
    heads = lb.column_heads(grid, columns)
    papers = [heads[f].paper for f in columns]
    for j in range(1, len(columns)):
        if papers[j] != papers[j - 1]:
            ax.axvline(j, color="black", lw=1.2)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(len(columns)) + 0.5)
    ax.set_xticklabels([f"{heads[f].paper} · {lb.header(heads[f])}" for f in columns], rotation=40, ha="left",
                       fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    labels = ax.set_yticklabels([lb.label(cells, pair) for pair in rows], fontsize=7)
    for text in labels:
        if text.get_text().startswith("*"):
            text.set_style("italic")
            text.set_color("#555555")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel(f"{dataset}: colour = better within the column (0→1 columns: 0 = chance, 1 = oracle); "
                  "! gate failed, R randomisation failed, hatched = uninformative, * reference line\n"
                  f"config {cells.config_hash.iloc[0]}, commit {cells.commit.iloc[0]}", fontsize=7)
    fig.tight_layout()
    return save(fig, cfg, dataset, "leaderboard")
