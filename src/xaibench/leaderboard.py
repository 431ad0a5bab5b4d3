"""The leaderboard: every (variant, explainer) pair of the run against one headline metric per family
(docs/leaderboard.md).

A column is a family's `catalog.headline` (grouped by the family's `paper`). A cell holds the pair's
mean over seeds and images with its hierarchical-bootstrap interval (`stats.effect`: seeds, then
images); where the family scores both a chance line and an oracle line (`catalog.reference_kind`), the
value is also scaled per model, (value − chance) / (oracle − chance) with the model's mean chance and
oracle values, so 0 = chance and 1 = oracle whatever the metric's direction. Ranks are within a column
among explainers (or among models for the model-level families), by the scaled value or by the raw
value turned by the metric's direction; a row's rank is one plus the number of rows whose interval lies
wholly above its own, so rows whose intervals overlap share a rank. Reference lines are shown, not
ranked: the control explainers per variant and the families' `baseline_*` maps pooled over models
(variant `—`, as the localisation table). Marks: a model of the variant failed the learnability gate
(`gate.learned`); the map failed the randomisation check (its similarity after the full cascade does
not lie below `leaderboard.randomisation_max`); the column's test is uninformative on this data
(results/validity.csv, written by the claims step). pandas and numpy only.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import catalog, paths, stats
from .claims import Run, group_values
from .io import read_table
from .tidy import select

POOLED = "—"  # the variant of the reference maps pooled over models
CHECK = "randomisation"  # the family whose headline is the sanity check of every pair
COLUMNS = ["dataset", "paper", "family", "metric", "split", "setting", "levels", "direction", "scale", "variant",
           "method", "kind", "n_units", "value", "value_low", "value_high", "score", "score_low", "score_high",
           "rank", "gate", "randomisation", "validity", "config_hash", "commit"]


def kind(method: str) -> str:
    """explainer, model (the model's own rows), control (a control explainer) or reference (a `baseline_*` map)."""
    if method == "model":
        return "model"
    ref = catalog.reference_kind(method)
    return "explainer" if ref is None else "reference" if method in catalog.BASELINE_REFERENCES else "control"


def config_hash(cfg: dict) -> str:
    """Of the settings that define the results (all but `run` and `figures`): equal hashes, equal settings."""
    keep = {k: v for k, v in cfg.items() if k not in ("run", "figures")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def commit() -> str:
    """The code's git commit (`-dirty` with uncommitted changes), or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _interval(clusters: list[np.ndarray], s: dict, name: str) -> tuple[float, float, float]:
    clusters = [c for c in clusters if len(c)]
    if not clusters:
        return np.nan, np.nan, np.nan
    boot = stats.effect(clusters, reps=s["replicates"], confidence=s["confidence"],
                        seed=s["seed"] * 1_000_003 + zlib.crc32(name.encode()))
    return boot["effect"], boot["low"], boot["high"]


def unit_values(run: Run, spec: dict, variant: str, method: str) -> pd.Series:
    """Per (unit, image) values of a pair (units: seeds, or seed pairs); the pooled references carry
    (variant, unit) units."""
    if variant != POOLED:
        return group_values(run, spec, {"variant": variant, "method": method})
    table = run.table(spec["family"])
    parts = {v: group_values(run, spec, {"variant": v, "method": method})
             for v in table[table.method == method].variant.unique()}
    return pd.concat({(v, u): one.droplevel(0) for v, values in parts.items() for u, one in values.groupby(level=0)},
                     names=["variant", "unit", "image"]) if parts else pd.Series(dtype=float)


def headline_rows(run: Run, spec: dict) -> pd.DataFrame:
    """The family's rows under the column's filters (split, metric, setting, levels)."""
    table = run.table(spec["family"])
    return select(table[(table.split == spec["split"]) & (table.metric == spec["metric"])], spec["setting"], spec["levels"])


def references(run: Run, spec: dict) -> dict[str, str] | None:
    """{"chance": method, "oracle": method} when the family scores both lines under the headline's
    filters (a family's own `baseline_*` map before a control explainer), else None."""
    methods = sorted(headline_rows(run, spec).method.unique(), key=lambda m: m not in catalog.BASELINE_REFERENCES)
    lines = {k: next((m for m in methods if catalog.reference_kind(m) == k), None) for k in ("chance", "oracle")}
    return lines if all(lines.values()) else None


def pairs(run: Run, spec: dict) -> list[tuple[str, str]]:
    """The (variant, method) rows of a column: the pairs the family scored, references pooled."""
    found = headline_rows(run, spec)[["variant", "method"]].drop_duplicates()
    out = [(v, m) for v, m in found.itertuples(index=False) if kind(m) != "reference"]
    return out + [(POOLED, m) for m in sorted(found.method.unique()) if kind(m) == "reference"]


def model_lines(run: Run, spec: dict, lines: dict[str, str]) -> dict[tuple, tuple[float, float]]:
    """(variant, unit) -> the model's mean chance and oracle values under the column's filters."""
    out = {}
    for variant in run.table(spec["family"]).variant.unique():
        chance, oracle = (group_values(run, spec, {"variant": variant, "method": lines[k]}).groupby(level=0).mean()
                          for k in ("chance", "oracle"))
        out.update({(variant, u): (chance[u], oracle.get(u, np.nan)) for u in chance.index})
    return out


def column(run: Run, family: str, settings: dict) -> pd.DataFrame:
    """One family's cells: value and interval, and the scaled score where both reference lines exist."""
    spec = {"family": family, **catalog.headline(family)}
    if run.table(family) is None or run.table(family).empty:
        return pd.DataFrame(columns=COLUMNS)
    lines = references(run, spec)
    scale = model_lines(run, spec, lines) if lines else {}
    rows = []
    for variant, method in pairs(run, spec):  # none: the family scored nothing under the headline's filters
        values = unit_values(run, spec, variant, method)
        pooled = variant == POOLED
        units = dict(iter(values.groupby(level=[0, 1] if pooled else 0)))
        key = (lambda u: u) if pooled else (lambda u: (variant, u))
        name = f"{run.dataset}/{family}/{variant}/{method}"
        value = _interval([p.to_numpy() for p in units.values()], settings, name)
        scaled = [((p - scale[key(u)][0]) / (scale[key(u)][1] - scale[key(u)][0])).to_numpy()
                  for u, p in units.items() if key(u) in scale and np.isfinite(scale[key(u)]).all()
                  and scale[key(u)][1] != scale[key(u)][0]]
        score = _interval(scaled, settings, name + "/scaled") if lines else (np.nan,) * 3
        rows.append({"variant": variant, "method": method, "kind": kind(method), "n_units": len(units),
                     "value": value[0], "value_low": value[1], "value_high": value[2],
                     "score": score[0], "score_low": score[1], "score_high": score[2]})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    direction = catalog.direction(family, spec["metric"])
    out = pd.DataFrame(rows).assign(
        dataset=run.dataset, paper=catalog.FAMILIES[family].get("paper", "other"), family=family, metric=spec["metric"],
        split=spec["split"], setting=spec["setting"], levels=spec["levels"], direction=direction,
        scale="chance→oracle" if lines else "raw")
    out["rank"] = ranks(out, direction)
    return out


def oriented(cells: pd.DataFrame, direction: str) -> tuple[pd.Series, pd.Series, pd.Series] | None:
    """(value, low, high) with higher = better: the scaled score, else the raw value turned by the
    direction; None for a metric without one."""
    if cells["scale"].eq("chance→oracle").all() and cells["score"].notna().any():
        return cells["score"], cells["score_low"], cells["score_high"]
    if direction == "higher":
        return cells["value"], cells["value_low"], cells["value_high"]
    if direction == "lower":
        return -cells["value"], -cells["value_high"], -cells["value_low"]
    return None


def ranks(cells: pd.DataFrame, direction: str) -> pd.Series:
    """Rank within the column among explainers (and, apart, among models): 1 + the number of rows whose
    interval lies wholly above the row's; '=' marks a shared rank; '' for references and NaN values."""
    out = pd.Series("", index=cells.index, dtype=object)
    turned = oriented(cells, direction)
    if turned is None:
        return out
    value, low, high = turned
    for group in ("explainer", "model"):
        idx = cells.index[(cells["kind"] == group) & value.notna()]
        rank = {i: 1 + int((low[idx] > high[i]).sum()) for i in idx}
        for i, r in rank.items():
            out[i] = f"{r}=" if list(rank.values()).count(r) > 1 else str(r)
    return out


def gate_marks(run: Run, variants) -> dict[str, str]:
    """variant -> 'passed' or 'k/n failed' (its models under the learnability gate)."""
    out = {}
    for variant in variants:
        seeds = catalog.seeds_for(run.cfg, variant)
        failed = [s for s in seeds if not run.gate(variant, s)[0]]
        out[variant] = f"{len(failed)}/{len(seeds)} failed" if failed else "passed"
    return out


def randomisation_marks(cells: pd.DataFrame, threshold: float) -> dict[tuple[str, str], str]:
    """(variant, method) -> passed / failed / n/a, from the randomisation column: passed when the
    interval of the similarity after the full cascade lies below `threshold`."""
    check = cells[(cells.family == CHECK) & (cells.kind != "reference")]
    return {(r.variant, r.method): "n/a" if pd.isna(r.value_high) else "passed" if r.value_high < threshold else "failed"
            for r in check.itertuples()}


def validity_marks(dataset: str) -> dict[tuple, str]:
    """(family, metric, split, setting) -> the claims step's validity of that test (results/validity.csv)."""
    if not paths.VALIDITY.is_file():
        return {}
    table = pd.read_csv(paths.VALIDITY, keep_default_na=False)
    if table.empty:
        return {}
    table = table[table.dataset == dataset]
    return {(r.family, r.metric, r.split, str(r.setting)): r.validity + (f": {r.reason}" if r.reason else "")
            for r in table.itertuples()}


def compute(cfg: dict, dataset: str) -> pd.DataFrame:
    """The long-form leaderboard of one dataset: results/leaderboard/{dataset}.csv."""
    run, settings = Run(cfg, dataset), cfg["leaderboard"]
    cells = pd.concat([column(run, f, settings) for f in cfg["metrics"]["families"]], ignore_index=True)
    if cells.empty:
        return pd.DataFrame(columns=COLUMNS)
    gates = gate_marks(run, [v for v in cells.variant.unique() if v != POOLED])
    checks = randomisation_marks(cells, settings["randomisation_max"])
    validity = validity_marks(dataset)
    cells["gate"] = [gates.get(v, "") for v in cells.variant]
    cells["randomisation"] = ["" if k == "reference" else checks.get((v, m), "not tested")
                              for v, m, k in zip(cells.variant, cells.method, cells.kind)]
    cells["validity"] = [validity.get((f, m, s, t), "no reference lines")
                         for f, m, s, t in zip(cells.family, cells.metric, cells.split, cells.setting)]
    cells["config_hash"], cells["commit"] = config_hash(cfg), commit()
    return order(cfg, cells)[COLUMNS]


def order(cfg: dict, cells: pd.DataFrame) -> pd.DataFrame:
    """Row by row: variants (settings order, pooled references last), within each the model's own row,
    the explainers (settings order), the controls, the others; within a row the columns by paper group,
    then family (settings order)."""
    variants = {v: i for i, v in enumerate([*cfg["train"]["variants"], POOLED])}
    methods = {m: i for i, m in enumerate(cfg["explain"]["methods"])}
    families = {f: i for i, f in enumerate(cfg["metrics"]["families"])}
    key = pd.DataFrame({"v": cells.variant.map(variants).fillna(len(variants)),
                        "k": cells.kind.map({"model": 0, "explainer": 1, "control": 2, "reference": 3}),
                        "m": cells.method.map(methods).fillna(len(methods)), "n": cells.method,
                        "g": cells.paper.map(paper_order), "f": cells.family.map(families)})
    return cells.loc[key.sort_values(list(key.columns)).index].reset_index(drop=True)


def paper_order(paper: str) -> str:
    """Column groups: the model-level 'all' first, then papers A..E (joint ones after their first), the
    sanity check last."""
    return "0" if paper == "all" else "9" if paper == "sanity" else ("1" if paper[:1] in "ABCDE" else "5") + paper


# ---- views: markdown, terminal, comparison ------------------------------------------------------------

LEGEND = ("Cells: mean over seeds and images [{level} interval: hierarchical bootstrap, seeds then images] and the "
          "rank in the column (ties where intervals overlap). Columns marked 0→1 are scaled per model so that "
          "0 = chance and 1 = oracle; others are raw (↑/↓: which way is better). Marks: ! a model of the "
          "variant failed the learnability gate; R the map failed the randomisation check (similarity after "
          "full randomisation not below {threshold}); ~ the column's test is uninformative on this data; "
          "rows in italics / marked * are reference lines (controls, and the families' baseline maps "
          "pooled over models, variant —), shown but not ranked.")


def shown(cell) -> tuple[float, float, float]:
    """The number a cell shows: the scaled score where the column is scaled, else the raw value."""
    if cell.scale == "chance→oracle" and not pd.isna(cell.score):
        return cell.score, cell.score_low, cell.score_high
    return cell.value, cell.value_low, cell.value_high


def header(cell) -> str:
    scaled = " 0→1" if cell.scale == "chance→oracle" else catalog.arrow(cell.family, cell.metric)
    return f"{cell.family}: {cell.metric}{scaled}"


def wide(cells: pd.DataFrame, broadcast: bool = True) -> tuple[list[tuple[str, str]], list[str], dict]:
    """(rows, columns, {(row, column): cell}) in the CSV's order (rows first). broadcast: the model-level
    cells (accuracy) shown on every pair of their variant instead of on a row of their own."""
    key = cells.paper.map(paper_order)
    columns = list(dict.fromkeys(cells.assign(_g=key).sort_values("_g", kind="stable").family))
    rows = list(dict.fromkeys((v, m) for v, m, k in zip(cells.variant, cells.method, cells.kind)
                              if k != "model" or not broadcast))
    by = {(r.variant, r.method, r.family): r for r in cells.itertuples()}
    grid = {}
    for v, m in rows:
        for f in columns:
            cell = by.get((v, m, f)) or (by.get((v, "model", f)) if broadcast else None)
            if cell is not None:
                grid[(v, m), f] = cell
    return rows, columns, grid


def column_heads(grid: dict, columns: list[str]) -> dict:
    """Each column's first cell (its paper, metric, scale and direction are the column's)."""
    return {f: next(c for (_, g), c in grid.items() if g == f) for f in columns}


def label(cells: pd.DataFrame, pair: tuple[str, str], width: int | None = None) -> str:
    """'variant / method' with its marks (cut to `width` before the marks, which are always shown)."""
    mine = cells[(cells.variant == pair[0]) & (cells.method == pair[1])]
    marks = ("!" if mine.gate.str.contains("failed").any() else "") + ("R" if (mine.randomisation == "failed").any() else "")
    name = ("*" if mine.kind.isin(["control", "reference"]).any() else "") + f"{pair[0]} / {pair[1]}"
    if width:
        name = name[:width - len(marks) - 1]
    return name + (f" {marks}" if marks else "")


def row_label(cells: pd.DataFrame, pair: tuple[str, str]) -> str:
    """`label` for a table: a reference line's in italics, *…* (Markdown and the report's
    reStructuredText alike: a lone leading * would be an unclosed emphasis there)."""
    name = label(cells, pair)
    return f"*{name.lstrip('*')}*" if name.startswith("*") else name


def greyed(cell) -> bool:
    return str(cell.validity).startswith("uninformative")


def num(x: float, digits: int = 3) -> str:
    """A number in `digits` significant figures, rounding errors around 0 shown as 0."""
    return f"{0.0 if abs(x) < 1e-9 else x:.{digits}g}"


def cell_text(cell, compact: bool = False) -> str:
    x, lo, hi = shown(cell)
    if pd.isna(x):
        return "—"
    grey = "~" if greyed(cell) else ""
    rank = f" #{cell.rank}" if cell.rank else ""
    if compact:
        half = "" if pd.isna(lo) else f"±{num((hi - lo) / 2, 2)}"
        return f"{grey}{num(x)}{half}{rank}"
    ci = "" if pd.isna(lo) else f" [{num(lo)}, {num(hi)}]"
    return f"{grey}{num(x)}{ci}{rank}"


def markdown(cells: pd.DataFrame, cfg: dict | None = None) -> str:
    """results/leaderboard/{dataset}.md: one row per pair, one column per family (paper: family: metric)."""
    if cells.empty:
        return "No leaderboard rows: the run scored no map.\n"
    rows, columns, grid = wide(cells)
    first = column_heads(grid, columns)
    level = f"{cfg['leaderboard']['confidence']:.0%}" if cfg else "95%"
    threshold = cfg["leaderboard"]["randomisation_max"] if cfg else "the threshold"
    lines = [f"# {cells.dataset.iloc[0]}: leaderboard", "",
             f"Config hash `{cells.config_hash.iloc[0]}`, commit `{cells.commit.iloc[0]}`. "
             + LEGEND.format(level=level, threshold=threshold), "",
             "| pair | " + " | ".join(f"{first[f].paper} · {header(first[f])}" for f in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for pair in rows:
        lines.append(f"| {row_label(cells, pair)} | " + " | ".join(cell_text(grid[pair, f]) if (pair, f) in grid else ""
                                                  for f in columns) + " |")
    return "\n".join(lines) + "\n"


def terminal(cells: pd.DataFrame, width: int = 100) -> str:
    """The leaderboard in blocks of columns that fit `width` (one block per paper group, split further
    when needed): rows are the pairs that have a value in the block."""
    if cells.empty:
        return "no leaderboard rows\n"
    rows, columns, grid = wide(cells, broadcast=False)
    heads = column_heads(grid, columns)
    texts = {key: cell_text(cell, compact=True) for key, cell in grid.items()}
    # wide enough that no name or cell is cut (a cut drops the rank); names capped at 40
    name_w = min(40, 2 + max(len(label(cells, pair)) for pair in rows))
    cell_w = max(18, 2 + max(map(len, texts.values()), default=0))
    per_block = max(1, (width - name_w) // cell_w)
    out = [f"{cells.dataset.iloc[0]}: leaderboard (config {cells.config_hash.iloc[0]}, commit {cells.commit.iloc[0]})",
           "cell: value ±half interval #rank (ties: =); 0→1 = scaled, 0 chance, 1 oracle; ↑/↓ raw",
           "marks: ! gate failed, R randomisation check failed, ~ test uninformative, * reference line"]
    for paper in dict.fromkeys(heads[f].paper for f in columns):
        fams = [f for f in columns if heads[f].paper == paper]
        for i in range(0, len(fams), per_block):
            block = fams[i:i + per_block]
            scale = {f: " 0→1" if heads[f].scale == "chance→oracle" else catalog.arrow(f, heads[f].metric) for f in block}
            out += ["", f"{'[' + paper + ']':<{name_w}}" + "".join(f"{f[:cell_w - 1]:>{cell_w}}" for f in block),
                    " " * name_w + "".join(f"{(heads[f].metric[:cell_w - 1 - len(scale[f])] + scale[f]):>{cell_w}}"
                                           for f in block)]
            for pair in rows:
                if any((pair, f) in grid for f in block):
                    line = f"{label(cells, pair, name_w - 1):<{name_w}}" + "".join(
                        f"{texts.get((pair, f), ''):>{cell_w}}"
                        for f in block)
                    out.append(line.rstrip()[:width])
    return "\n".join(out) + "\n"


NUMBERS = ["n_units", "value", "value_low", "value_high", "score", "score_low", "score_high"]


def read(path) -> pd.DataFrame:
    """A leaderboard CSV with its text columns as text ('' stays '', ranks stay '2=')."""
    read_table(path)  # names the file if it is missing or corrupt
    return pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in NUMBERS},
                       dtype={c: str for c in COLUMNS if c not in NUMBERS})


KEYS = ["dataset", "family", "metric", "split", "setting", "levels", "variant", "method"]


def compare(a: pd.DataFrame, b: pd.DataFrame, names=("A", "B"), width: int = 100) -> str:
    """Two leaderboards side by side: every cell both have, A's and B's shown value and B − A; '*' where
    the two intervals do not overlap."""
    lines = [f"{s} = {n}: config {t.config_hash.iloc[0] if len(t) else '?'}, commit {t.commit.iloc[0] if len(t) else '?'}"[:width]
             for s, n, t in zip("AB", names, (a, b))]
    both = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    only = len(a) + len(b) - 2 * len(both)
    lines += [f"{len(both)} cells in both" + (f"; {only} in one only" if only else ""), "",
              f"{'column':<30}{'pair':<28}{'A':>12}{'B':>12}{'B − A':>9}"]
    for r in both.itertuples():
        cell = {s: SimpleNamespace(**{k: getattr(r, f"{k}_{s}") for k in ("scale", "score", "score_low", "score_high",
                                                                           "value", "value_low", "value_high")})
                for s in "ab"}
        (xa, la, ha), (xb, lb, hb) = (shown(cell[s]) for s in "ab")
        apart = "*" if not (pd.isna(la) or pd.isna(lb)) and (lb > ha or la > hb) else ""
        col = f"{r.family}: {r.metric}"
        diff = num(xb - xa)
        diff = diff if diff.startswith("-") else "+" + diff
        line = f"{col[:29]:<30}{f'{r.variant} / {r.method}'[:27]:<28}{num(xa):>12}{num(xb):>12}{diff:>9}{apart}"
        lines.append(line[:width])
    return "\n".join(lines) + "\n"
