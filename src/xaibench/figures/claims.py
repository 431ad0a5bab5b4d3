"""The verdicts on the papers' claims (results/claims.csv, written by `xaibench claims --compute`):
one row per claim with its effect and interval on its own scale, and the table the report opens with."""
from __future__ import annotations

import pandas as pd

from .. import claims, paths
from ..io import atomic_path, read_table, save_csv
from . import NotApplicable, plt, register, save

COLOURS = {"supported": "#2a7d3f", "contradicted": "#b2182b", "inconclusive": "#d4a017", claims.UNTESTABLE: "#8c8c8c"}


def display(rows: pd.DataFrame) -> pd.DataFrame:
    """The table as shown (report, results/tables/{dataset}/claims.csv): one formatted cell per column."""
    level = f"{rows.confidence.iloc[0]:.0%}" if len(rows) else ""
    return pd.DataFrame({
        "claim": rows.claim + " (" + rows.paper + ")", "statement": rows.statement,
        f"effect [{level} CI]": ["—" if pd.isna(r.effect) else f"{claims.number(r.effect)} "
                                 f"{claims.interval(r.ci_low, r.ci_high)}" for r in rows.itertuples()],
        "seeds agreeing": [f"{r.seeds_agreeing}/{r.n_seeds}" if r.n_seeds else "—" for r in rows.itertuples()],
        "test validity": rows.validity.fillna("—"), "verdict": rows.verdict, "reason": rows.reason.fillna("")})


@register("claims")
def claims_figure(cfg, dataset):
    """Each claim's effect (a − b, or a) with its interval on its own axis (effects differ in unit),
    coloured by verdict; the predicted side of the reference point is shaded."""
    rows = read_table(paths.RESULTS / "claims.csv")
    rows = rows[rows.dataset == dataset].reset_index(drop=True)
    if rows.empty:
        raise NotApplicable("no claims for this dataset in results/claims.csv")
    out = paths.tables(dataset)
    save_csv(out / "claims.csv", display(rows))
    with atomic_path(out / "claims.md") as tmp:
        tmp.write_text(f"# {dataset}: verdicts on the papers' claims\n\n" + claims.markdown(rows))
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.42 * len(rows) + 0.8), squeeze=False)
    for ax, r in zip(axes[:, 0], rows.itertuples()):
        side, ref = r.predicts, -r.margin
        colour = COLOURS[r.verdict]
        if not pd.isna(r.effect):
            ax.errorbar([r.effect], [0], xerr=[[r.effect - r.ci_low], [r.ci_high - r.effect]], fmt="o", color=colour,
                        capsize=3, ms=4)
            lo, hi = min(r.ci_low, ref), max(r.ci_high, ref)
            pad = 0.15 * (hi - lo or 1.0)
            ax.set_xlim(lo - pad, hi + pad)
            ax.axvline(ref, color="black", lw=0.8)
            left, right = ax.get_xlim()
            ax.axvspan(*((ref, right) if side in ("higher", "above_zero", "not_lower") else (left, ref)),
                       color="#e8f3ea", zorder=0)
        else:
            ax.set_xticks([])
            ax.text(0.5, 0.5, "not tested (reason in the table)", transform=ax.transAxes, ha="center", va="center",
                    fontsize=7, color=colour)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7, pad=1)
        ax.text(-0.01, 0.5, r.claim, transform=ax.transAxes, ha="right", va="center", fontsize=8)
        ax.text(1.01, 0.5, r.verdict, transform=ax.transAxes, ha="left", va="center", fontsize=8, color=colour)
        for side_name in ("top", "right", "left"):
            ax.spines[side_name].set_visible(False)
    fig.suptitle(f"{dataset}: effect of each claim with its {rows.confidence.iloc[0]:.0%} interval "
                 "(green: the side the claim predicts)", fontsize=10)
    fig.tight_layout(h_pad=0.3)
    return save(fig, cfg, dataset, "claims")
