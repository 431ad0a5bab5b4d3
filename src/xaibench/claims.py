"""Verdicts on the papers' claims (`catalog.CLAIMS`), computed from the run's per-image tidy tables.

For each claim and dataset: the effect (group a's mean minus group b's, or a's mean alone) with a
hierarchical-bootstrap interval (`stats.effect`: training seeds, then images), the per-seed effects
and how many point the predicted way, the validity of the test (`validity`: does its oracle beat its
chance map, does a trivial map do as well as the best explainer) and of the models (`gate.learned`),
and one verdict: supported, contradicted, inconclusive or untestable here (with the reason).
pandas and numpy only; docs/claims.md describes the method and its choices.
"""
from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from . import catalog, paths, stats
from .gate import learned
from .io import load_json, read_table
from .tidy import select

ORACLE, CHANCE = "baseline_oracle", "baseline_random"
UNTESTABLE = "untestable here"
VERDICTS = ("supported", "contradicted", "inconclusive", UNTESTABLE)
COLUMNS = ["dataset", "claim", "paper", "statement", "comparison", "predicts", "margin", "effect", "ci_low", "ci_high",
           "confidence", "seeds_agreeing", "n_seeds", "per_seed", "validity", "discrimination", "discrimination_low",
           "discrimination_high", "verdict", "reason"]


class Run:
    """One dataset's tables, model summaries and gate, read once (lazily) for every claim."""

    def __init__(self, cfg: dict, dataset: str):
        self.cfg, self.dataset = cfg, dataset
        self.settings = cfg["claims"]

    @cache
    def table(self, family: str) -> pd.DataFrame | None:
        """The family's per-image rows, or None when the run did not compute the family."""
        if family not in self.cfg["metrics"]["families"]:
            return None
        data = read_table(paths.metric_table(self.dataset, family, "parquet"))
        data["setting"] = data["setting"].astype(object).fillna("").astype(str)
        return data

    @cache
    def split_sizes(self) -> dict:
        return load_json(paths.prepared(self.dataset) / "meta.json")["splits"]

    @cache
    def gate(self, variant: str, seed: int) -> tuple[bool, str]:
        summary = load_json(paths.model_dir(self.dataset, variant, seed) / "summary.json")
        passed, reason = learned({"variant": variant, **summary}, self.cfg)
        return passed, f"{variant} seed {seed}: {reason}"

    def __hash__(self):
        return id(self)


def cluster_column(family: str) -> str:
    """Families spanning seeds (stability) have one row set per seed pair, named in `setting`."""
    return "setting" if catalog.FAMILIES[family]["scope"] == "variant" else "seed"


def cluster_seeds(family: str, cluster) -> list[int]:
    return [int(s) for s in str(cluster).split("-")] if cluster_column(family) == "setting" else [int(cluster)]


def group_values(run: Run, spec: dict, group: dict) -> pd.Series:
    """Per (cluster, image) value of one group: the mean over the rows its filters keep (settings,
    levels); NaN (an image a measure cannot score) drops out. Accuracy-family shares are stored as
    one value per model; where the split's size n is known they become the n per-image outcomes
    (round(p·n) ones), whose resampling is exactly the image level of the bootstrap."""
    family, table = spec["family"], run.table(spec["family"])
    d = table[(table.variant == group["variant"]) & (table.method == group["method"]) &
              (table.split == spec["split"]) & (table.metric == spec["metric"])]
    d = select(d, spec["setting"], spec["levels"]).dropna(subset=["value"])
    by = cluster_column(family)
    values = d.groupby([by, "image"])["value"].mean()
    n = run.split_sizes().get(spec["split"])
    if family == "accuracy" and spec["metric"] != "max_softmax" and n and not values.empty:
        values = pd.concat({c: pd.Series(np.arange(n) < round(p * n), dtype=float)
                            for (c, _), p in values.items()}, names=[by, "image"])
    return values


def gated(run: Run, spec: dict, values: pd.Series, variant: str) -> tuple[pd.Series, list[str]]:
    """Keep the clusters whose models learned the task (claims about explanations only); the
    reasons name the models that failed."""
    if spec["family"] == "accuracy" or values.empty:
        return values, []
    failed = {}
    for cluster in values.index.unique(0):
        for seed in cluster_seeds(spec["family"], cluster):
            ok, why = run.gate(variant, seed)
            if not ok:
                failed.setdefault(cluster, why)
    if failed and run.settings["failed_models"] == "untestable":
        return values.iloc[:0], sorted(set(failed.values()))
    keep = ~values.index.get_level_values(0).isin(list(failed))
    return values[keep], sorted(set(failed.values()))


def clusters(values: pd.Series) -> dict:
    return {c: part.to_numpy() for c, part in values.groupby(level=0)}


def validity(run: Run, spec: dict, models: pd.DataFrame) -> dict:
    """Whether the test can tell a good map from a bad one on these models (variant, seed rows).

    Discrimination index = oracle minus chance (baseline_oracle − baseline_random on the same images,
    paired), oriented by the metric's direction, with its bootstrap interval; uninformative when the
    interval does not lie above 0 or when a trivial map (uniform, centred Gaussian, edges) scores at
    least as well as the best explainer. Families without both reference lines: 'no reference lines'.
    """
    table, sign = run.table(spec["family"]), {"higher": 1.0, "lower": -1.0}.get(
        catalog.direction(spec["family"], spec["metric"]))
    d = table[(table.split == spec["split"]) & (table.metric == spec["metric"])]
    d = select(d, spec["setting"], spec["levels"]).dropna(subset=["value"])
    d = d.merge(models, on=["variant", "seed"])
    if sign is None or not {ORACLE, CHANCE} <= set(d.method):
        return {"validity": "no reference lines", "informative": True, "why": ""}
    per_image = d.groupby(["method", "variant", "seed", "image"])["value"].mean() * sign
    paired = pd.concat({"o": per_image[ORACLE], "c": per_image[CHANCE]}, axis=1).dropna()
    diffs = [part.to_numpy() for _, part in (paired["o"] - paired["c"]).groupby(level=["variant", "seed"])]
    boot = stats.effect(diffs, reps=run.settings["replicates"], confidence=run.settings["confidence"],
                        seed=run.settings["seed"])
    out = {"discrimination": boot["effect"], "discrimination_low": boot["low"], "discrimination_high": boot["high"]}
    model_means = per_image.groupby(["method", "variant", "seed"]).mean().groupby("method").mean()
    # reference lines (catalog.reference_kind): baseline maps and control explainers alike; trivial ones
    # are the constant, centred-blob and edge maps
    explainers = model_means[[m for m in model_means.index if catalog.reference_kind(m) is None]]
    trivial = model_means[[m for m in model_means.index if catalog.reference_kind(m) == "trivial"]]
    why = ""
    if boot["low"] <= 0:
        why = (f"oracle does not beat chance (oracle − chance {boot['effect']:+.3g}, "
               f"CI [{boot['low']:.3g}, {boot['high']:.3g}])")
    elif len(trivial) and len(explainers) and trivial.max() >= explainers.max():
        t, e = trivial.idxmax(), explainers.idxmax()
        why = (f"a trivial map ({t}: {sign * trivial[t]:.3g}) scores as well as the best explainer "
               f"({e}: {sign * explainers[e]:.3g})")
    out.update(validity="uninformative on this data" if why else "informative", informative=not why, why=why)
    return out


def comparison(spec: dict) -> str:
    name = lambda g: g["variant"] if spec["family"] == "accuracy" else f"{g['variant']}/{g['method']}"  # noqa: E731
    where = ", ".join(x for x in (spec["split"], spec["setting"] and f"setting {spec['setting']}") if x)
    what = f"{spec['family']} {spec['metric']} ({where})"
    return f"{what}: {name(spec['a'])}" + (f" − {name(spec['b'])}" if spec["b"] else "")


def claim_seed(cfg: dict, name: str) -> int:
    """Each claim's own bootstrap stream (settings seed + the claim's name): adding a claim changes no other row."""
    import zlib
    return cfg["claims"]["seed"] * 1_000_003 + zlib.crc32(name.encode())


def assess(run: Run, name: str, spec: dict) -> dict:
    """One row of results/claims.csv: effect, interval, per-seed signs, validity and verdict of a claim."""
    family, predicts, s = spec["family"], spec["predicts"], run.settings
    margin = s["noninferiority_margin"] if predicts == "not_lower" else 0.0
    row = {**dict.fromkeys(COLUMNS, np.nan), "dataset": run.dataset, "claim": name, "paper": spec["paper"],
           "statement": spec["statement"], "comparison": comparison(spec), "predicts": predicts, "margin": margin,
           "confidence": s["confidence"], "n_seeds": 0, "seeds_agreeing": 0, "per_seed": "", "validity": "", "reason": ""}

    def untestable(reason):
        row.update(verdict=UNTESTABLE, reason=reason)
        return row

    groups = [g for g in (spec["a"], spec["b"]) if g]
    if run.table(family) is None:
        return untestable(f"family {family} not computed in this run (metrics.families)")
    absent = [g["variant"] for g in groups if g["variant"] not in run.cfg["train"]["variants"]]
    if absent:
        return untestable(f"variant {', '.join(absent)} not trained in this run (train.variants)")
    values, notes = [], []
    for g in groups:
        v = group_values(run, spec, g)
        if v.empty:
            return untestable(f"no rows for {g['variant']}/{g['method']} in {comparison(spec).split(':')[0]}")
        v, failed = gated(run, spec, v, g["variant"])
        if v.empty:
            return untestable("model did not learn the task (" + "; ".join(failed) + ")")
        notes += [f"excluded {f}" for f in failed if f"excluded {f}" not in notes]
        values.append(v)
    if spec["same_seeds"] and len(values) == 2:
        common = values[0].index.unique(0).intersection(values[1].index.unique(0))
        values = [v[v.index.get_level_values(0).isin(common)] for v in values]
        if values[0].empty:
            return untestable("the two groups share no seed")
    paired = len(groups) == 2 and spec["a"]["variant"] == spec["b"]["variant"]
    if paired:  # the same images of the same models: keep the images both groups scored
        both = pd.concat(values, axis=1, keys=["a", "b"]).dropna()
        values = [both["a"], both["b"]]
    parts = [clusters(v) for v in values]
    boot = stats.effect(*[list(p.values()) for p in parts], paired=paired, reps=s["replicates"],
                        confidence=s["confidence"], seed=claim_seed(run.cfg, name))
    per_seed = ({k: x.mean() - parts[1][k].mean() for k, x in parts[0].items() if k in parts[1]}
                if len(parts) == 2 else {k: x.mean() for k, x in parts[0].items()})
    agree = stats.agrees(np.array(list(per_seed.values())), predicts, margin)
    row.update(effect=boot["effect"], ci_low=boot["low"], ci_high=boot["high"], n_seeds=len(per_seed),
               seeds_agreeing=int(agree.sum()), per_seed="; ".join(f"{k}: {v:+.3g}" for k, v in per_seed.items()))
    if family == "accuracy":
        check = {"validity": "not needed (accuracy)", "informative": True, "why": ""}
    else:
        models = pd.DataFrame([(g["variant"], int(c)) for g, v in zip(groups, values) for c in v.index.unique(0)
                               if cluster_column(family) == "seed"], columns=["variant", "seed"]).drop_duplicates()
        check = validity(run, spec, models)
    row.update({k: check[k] for k in ("validity", "discrimination", "discrimination_low", "discrimination_high")
                if k in check})
    if not check["informative"]:
        return untestable("test uninformative on this data: " + check["why"])
    if predicts == "not_lower":
        notes.insert(0, f"non-inferiority margin {margin:g}")
    row.update(verdict=stats.verdict(boot["low"], boot["high"], predicts, margin), reason="; ".join(notes))
    return row


def validity_table(run: Run) -> pd.DataFrame:
    """The validity of every family × metric (with a direction) × split × setting that has reference
    lines, over the models that passed the gate: results/validity.csv."""
    out = []
    for family in run.cfg["metrics"]["families"]:
        table = run.table(family)
        if table is None or not {ORACLE, CHANCE} <= set(table.method) or cluster_column(family) != "seed":
            continue
        models = table[["variant", "seed"]].drop_duplicates()
        models = models[[run.gate(v, int(s))[0] for v, s in models.itertuples(index=False)]]
        refs = table[table.method == ORACLE]
        for (metric, split, setting), _ in refs.groupby(["metric", "split", "setting"]):
            if catalog.direction(family, metric) == "none":
                continue
            spec = {"family": family, "metric": metric, "split": split, "setting": setting, "levels": "all"}
            check = (validity(run, spec, models) if len(models) else
                     {"validity": UNTESTABLE, "why": "model did not learn the task (no model passed the gate)"})
            out.append({"dataset": run.dataset, "family": family, "metric": metric, "split": split,
                        "setting": setting, "direction": catalog.direction(family, metric), "n_models": len(models),
                        **{k: check.get(k, np.nan) for k in ("discrimination", "discrimination_low",
                                                             "discrimination_high", "validity")},
                        "reason": check["why"]})
    return pd.DataFrame(out)


def compute(cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims, validity) for every configured dataset: the rows of results/claims.csv and results/validity.csv."""
    claims, checks = [], []
    for dataset in cfg["datasets"]:
        run = Run(cfg, dataset)
        claims += [assess(run, name, spec) for name, spec in catalog.CLAIMS.items()]
        checks.append(validity_table(run))
    return pd.DataFrame(claims, columns=COLUMNS), pd.concat(checks, ignore_index=True) if checks else pd.DataFrame()


# ---- where the verdicts show: results/summary.json, the markdown table, the terminal table ----------

MARKERS = ("<!-- claims:start -->", "<!-- claims:end -->")


def number(x) -> str:
    return "—" if pd.isna(x) else f"{x:+.3g}"


def interval(low, high) -> str:
    return "—" if pd.isna(low) else f"[{low:.3g}, {high:.3g}]"


def _texts(claims: pd.DataFrame) -> pd.DataFrame:
    """Empty text cells read back from the CSV as NaN become empty strings again."""
    return claims.fillna({c: "" for c in ("reason", "validity", "per_seed")})


def counts(rows: pd.DataFrame) -> dict:
    return {v: int((rows.verdict == v).sum()) for v in VERDICTS}


def headline(cfg: dict, claims: pd.DataFrame) -> dict:
    """results/summary.json: per dataset, the verdict counts, each claim's effect and verdict, and each
    variant's test and nocue accuracy (mean over seeds) with how many of its models passed the gate."""
    out = {}
    for dataset in cfg["datasets"]:
        rows = claims[claims.dataset == dataset]
        node = out[dataset] = {"verdicts": counts(rows), "claims": {
            r.claim: {"effect": None if pd.isna(r.effect) else round(float(r.effect), 4), "verdict": r.verdict}
            for r in rows.itertuples()}}
        run = Run(cfg, dataset)
        for variant in cfg["train"]["variants"]:
            seeds = catalog.seeds_for(cfg, variant)
            summaries = [load_json(paths.model_dir(dataset, variant, s) / "summary.json") for s in seeds]
            node.setdefault("variants", {})[variant] = {
                **{f"{split}_accuracy": round(float(np.mean([m[f"{split}_accuracy"] for m in summaries])), 4)
                   for split in ("test", cfg["gate"]["split"]) if all(f"{split}_accuracy" in m for m in summaries)},
                "models": len(seeds), "learned": sum(run.gate(variant, s)[0] for s in seeds)}
    return out


def markdown(claims: pd.DataFrame) -> str:
    """The claims table as markdown (results/tables/{dataset}/claims.md, the block in docs/results.md)."""
    lines = []
    for dataset, rows in _texts(claims).groupby("dataset", sort=False):
        level = f"{rows.confidence.iloc[0]:.0%}"
        tally = ", ".join(f"{n} {v}" for v, n in counts(rows).items())
        lines += [f"**{dataset}**: {len(rows)} claims: {tally}. Effect = a − b (or a alone), {level} "
                  "hierarchical-bootstrap interval (seeds, then images); docs/claims.md.", "",
                  f"| claim | statement | comparison | effect [{level} CI] | seeds agreeing | test validity | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows.itertuples():
            seeds = f"{r.seeds_agreeing}/{r.n_seeds}" if r.n_seeds else "—"
            valid = r.validity or "—"
            if not pd.isna(r.discrimination):
                valid += f" (oracle − chance {r.discrimination:+.3g} {interval(r.discrimination_low, r.discrimination_high)})"
            verdict = f"**{r.verdict}**" + (f": {r.reason}" if r.reason else "")
            effect = "—" if pd.isna(r.effect) else f"{number(r.effect)} {interval(r.ci_low, r.ci_high)}"
            lines.append(f"| {r.claim} ({r.paper}) | {r.statement} | {r.comparison} | {effect} | {seeds} | {valid} "
                         f"| {verdict} |")
        lines.append("")
    return "\n".join(lines)


def terminal(claims: pd.DataFrame, width: int = 100) -> str:
    """The claims table for a terminal, `width` columns wide: one line per claim, its reason wrapped below."""
    import textwrap
    lines = []
    for dataset, rows in _texts(claims).groupby("dataset", sort=False):
        tally = ", ".join(f"{n} {v}" for v, n in counts(rows).items() if n)
        level = f"{rows.confidence.iloc[0]:.0%} CI"
        lines += [f"{dataset}: {len(rows)} claims ({tally})",
                  f"{'claim':<32}{'effect':>9}  {level:<24}{'seeds':>6}  verdict"]
        for r in rows.itertuples():
            seeds = f"{r.seeds_agreeing}/{r.n_seeds}" if r.n_seeds else "—"
            lines.append(f"{r.claim:<32.32}{number(r.effect):>9}  {interval(r.ci_low, r.ci_high):<24.24}{seeds:>6}  "
                         f"{r.verdict}")
            lines += textwrap.wrap(r.reason, width, initial_indent="    ", subsequent_indent="    ")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, block: str, path: str = "the file") -> str:
    """`text` with what lies between the claims markers replaced by `block`."""
    start, end = MARKERS
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{path}: needs exactly one '{start}' line followed by one '{end}' line")
    head, rest = text.split(start)
    return f"{head}{start}\n{block.strip()}\n{end}{rest.split(end, 1)[1]}"
