"""Where the time goes (`timing`) and how fast our parts are against their floors and peers (`speed`).

Not dataset figures: `timing` reads the benchmark file every Snakemake job writes
(results/benchmarks/**.tsv, via `xaibench.speed.job_times`), `speed` reads `make bench`'s
results/bench/speed.csv. Run as `python -m xaibench.figures.timing --timing OUT.png` /
`--speed CSV OUT.png` (rules `timing` and `speed_figure` in rules/figures.smk).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import read_table  # noqa: E402
from ..speed import job_times  # noqa: E402

PHASES = ["prepare", "train", "explain", "generate", "measure", "aggregate", "summary", "figures"]


def lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Greedy lane of every interval (sorted by start, first lane free at its start): the number
    of lanes is the most jobs running at once."""
    free_at, lane = [], np.zeros(len(start), dtype=int)
    for i in np.argsort(start, kind="stable"):
        for k, t in enumerate(free_at):
            if t <= start[i] + 1e-6:
                lane[i], free_at[k] = k, end[i]
                break
        else:
            lane[i] = len(free_at)
            free_at.append(end[i])
    return lane


def draw_timing(jobs: pd.DataFrame, out: str | Path) -> Path:
    if jobs.empty:  # e.g. results pulled from the DVC remote: no job ran here, so none was timed
        fig, ax = plt.subplots(figsize=(8, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no job benchmark files under results/benchmarks: no job of this run was timed here\n"
                "(results pulled from a remote, or benchmark files deleted)", ha="center", va="center")
        return _save(fig, out)
    phases = [p for p in PHASES if p in set(jobs.phase)] + sorted(set(jobs.phase) - set(PHASES))
    colours = dict(zip(phases, plt.get_cmap("tab10").colors))
    by_rule = jobs.groupby("rule").agg(s=("s", "sum"), n=("s", "size"), phase=("phase", "first")).sort_values("s")
    t0 = jobs.start.min()
    span = jobs.end.max() - t0
    fig = plt.figure(figsize=(12, 3.2 + 0.22 * len(by_rule)))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1], width_ratios=[1, 1.6])
    ax_phase, ax_rule, ax_time = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[:, 1]), fig.add_subplot(grid[1, 0])

    per_phase = jobs.groupby("phase")["s"].agg(["sum", "size"]).reindex(phases)
    ax_phase.barh(phases, per_phase["sum"] / 60, color=[colours[p] for p in phases])
    for i, (total, n) in enumerate(zip(per_phase["sum"], per_phase["size"])):
        ax_phase.text(total / 60, i, f" {total / 60:.1f} min, {n} job{'s' * (n > 1)}", va="center", fontsize=8)
    ax_phase.invert_yaxis()
    ax_phase.set(xlabel="job wall time, summed (min)", title="(a) per phase")
    ax_phase.set_xlim(0, per_phase["sum"].max() / 60 * 1.6)

    ax_rule.barh(by_rule.index, by_rule.s / 60, color=[colours[p] for p in by_rule.phase])
    for i, (total, n) in enumerate(zip(by_rule.s, by_rule.n)):
        ax_rule.text(total / 60, i, f" {total:.0f} s ({n} × {total / n:.0f} s)", va="center", fontsize=7)
    ax_rule.set(xlabel="job wall time, summed (min)", title="(b) per rule and variant / family")
    ax_rule.set_xlim(0, by_rule.s.max() / 60 * 1.35)
    ax_rule.tick_params(axis="y", labelsize=8)

    lane = lanes(jobs.start.to_numpy(), jobs.end.to_numpy())
    for (_, job), k in zip(jobs.iterrows(), lane):
        ax_time.barh(k, job.s / 60, left=(job.start - t0) / 60, color=colours[job.phase], edgecolor="white", lw=0.4)
    busy = jobs.s.sum() / (span * max(1, lane.max() + 1))
    ax_time.set(xlabel="minutes since the first job started", ylabel="slot", yticks=range(lane.max() + 1),
                title=f"(c) timeline: {span / 60:.1f} min wall, slots {100 * busy:.0f}% busy")
    ax_time.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[p]) for p in phases]
    ax_time.legend(handles, phases, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    fig.suptitle(f"Where the time goes: {len(jobs)} jobs, {jobs.s.sum() / 60:.1f} min of job time", fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def draw_speed(table: pd.DataFrame, out: str | Path) -> Path:
    """Every speed.csv comparison as ratio = our time / the reference's (log axis), its limit as a
    tick; green = target met, red = missed, grey = measured without a target."""
    data = table[table.ratio.notna()].iloc[::-1]
    if data.empty:
        raise ValueError("speed.csv has no comparison with a reference")
    met = data.met.astype(str).str.lower()
    colour = np.where(met == "true", "#55A868", np.where(met == "false", "#C44E52", "#999999"))
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(data) + 1.4))
    y = np.arange(len(data))
    ax.barh(y, data.ratio, color=colour, left=0)
    ax.scatter(pd.to_numeric(data.limit, errors="coerce"), y, marker="|", s=180, color="black", zorder=3,
               label="target (ratio limit)")
    labels = [f"{item}   [{ref}]" for item, ref in zip(data["item"], data["reference"].fillna(""))]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1, color="grey", lw=0.8, ls=":")
    for yi, r in zip(y, data.ratio):
        ax.text(r, yi, f" {r:.3g}", va="center", fontsize=7)
    ax.set(xlabel="our time / reference time (median of the per-repetition ratios; < 1: ours faster)",
           title="Speed against floors and peers (make bench)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out) -> Path:
    from ..drawing import savefig
    savefig(fig, out, dpi=120)
    plt.close(fig)
    return Path(out)


def main(argv=None) -> int:
    """Draw what the options ask for; a damaged or missing input is one line naming it (exit 2)."""
    from ..cli import one_line
    try:
        _draw(argv)
    except (ValueError, OSError) as exc:
        print(f"xaibench.figures.timing: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def _draw(argv) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmarks", default="results/benchmarks")
    ap.add_argument("--timing", metavar="OUT", help="draw the per-phase / per-rule / timeline figure")
    ap.add_argument("--speed", nargs=2, metavar=("CSV", "OUT"), help="draw speed.csv")
    args = ap.parse_args(argv)
    if args.timing:
        print(draw_timing(job_times(args.benchmarks), args.timing))
    if args.speed:
        print(draw_speed(read_table(args.speed[0]), args.speed[1]))


if __name__ == "__main__":
    sys.exit(main())
