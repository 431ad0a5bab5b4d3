"""The learnability gate: has a model learned the task before its explanations are compared?

A model passes when its accuracy on `gate.split` is at least `gate.threshold` (default `nocue`, the
test images without the planted cue: a model that reads only the cue is at chance there). Only the
variants in `gate.variants` are judged (null: every variant). Why here and not in training: the gate
reads the accuracies every model's summary.json already records, so it is evaluated where it is used
(results/summary.json, the tables and figures that show explanations) and changing it redraws those
without retraining or re-measuring anything. Torch- and pandas-free, so any step can use it.
"""
from __future__ import annotations

from typing import Iterable, Mapping

MARK = "†"  # after a variant's name in tables and legends: one of its models failed the gate


def gated(cfg: dict, variant: str) -> bool:
    """Whether `variant`'s models are judged (gate.variants null = every variant)."""
    only = cfg["gate"]["variants"]
    return only is None or variant in only


def learned(model_summary: Mapping, cfg: dict) -> tuple[bool, str]:
    """(passed, reason) for one model from its summary (the `{split}_accuracy` keys of summary.json).

    Data without a planted cue have no `nocue` split; their test split is cue-free, so the gate reads
    `test` there (recognised by the absence of the cue subsets' keys). A model whose summary holds
    neither fails, with the reason saying so.
    """
    g = cfg["gate"]
    variant = model_summary.get("variant", "?")
    if not gated(cfg, variant):
        return True, f"{variant} is not gated (gate.variants)"
    split = g["split"]
    if f"{split}_accuracy" not in model_summary and split == "nocue" \
            and not any(str(k).startswith("test_cue_") for k in model_summary):
        split = "test"
    acc = model_summary.get(f"{split}_accuracy")
    if acc is None:
        return False, f"no {split} accuracy in the model's summary"
    passed = acc >= g["threshold"]
    return passed, f"{split} accuracy {acc:.3f} {'>=' if passed else '<'} gate.threshold {g['threshold']}"


def summaries_from_rows(rows: Iterable[Mapping]) -> dict[tuple[str, int], dict]:
    """Per-model summaries {(variant, seed): {"variant", "seed", "{split}_{metric}": value}} from the
    rows of the tidy `accuracy` table (what the figures read; the same numbers as summary.json)."""
    out: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["variant"], int(r["seed"]))
        out.setdefault(key, {"variant": key[0], "seed": key[1]})[f"{r['split']}_{r['metric']}"] = float(r["value"])
    return out


def failures(summaries: Mapping[tuple[str, int], Mapping], cfg: dict) -> dict[str, dict[int, str]]:
    """variant -> {seed: reason} of its models that fail the gate (variants without one are left out)."""
    out: dict[str, dict[int, str]] = {}
    for (variant, seed), summary in sorted(summaries.items()):
        passed, reason = learned(summary, cfg)
        if not passed:
            out.setdefault(variant, {})[seed] = reason
    return out


def mark(variant: str, failed: Mapping, seed: int | None = None) -> str:
    """`variant` with the gate mark when one of its models (or, given `seed`, that model) failed."""
    hit = variant in failed and (seed is None or seed in failed[variant])
    return f"{variant}{MARK}" if hit else variant


def footnote(failed: Mapping[str, Mapping[int, str]] | None, shown: Iterable[str] | None = None) -> str:
    """The line under a table: which of the `shown` variants' models (default: all) failed and why
    (None: the gate could not be evaluated)."""
    if failed is not None and shown is not None:
        failed = {v: seeds for v, seeds in failed.items() if v in set(shown)}
    if failed is None:
        return "Learnability gate not evaluated: the `accuracy` family is not measured in this run."
    if not failed:
        return "Every model shown passed the learnability gate (`gate` settings)."
    return (f"{MARK} the variant has models that failed the learnability gate (`gate` settings), so these "
            "explanations are partly of models that did not learn the task: "
            + "; ".join(f"{v} seed {seed}: {why}" for v, seeds in failed.items() for seed, why in seeds.items()) + ".")
