"""The learnability gate: whether a model learned the task, so that its explanations may be compared.

A model whose accuracy on `gate.split` (default `nocue`: the test images without the planted cue)
is under `gate.threshold` has not learned the shapes; a claim about its explanations is untestable
there (docs/claims.md). Torch-free: it reads the model's summary.json only.
"""
from __future__ import annotations


def learned(model_summary: dict, cfg: dict) -> tuple[bool, str]:
    """(passed, reason) for one model's summary.json (variant, `{split}_accuracy`) under `cfg['gate']`.

    Variants outside `gate.variants` (when set) pass unchecked; a summary without the split's accuracy
    (a dataset without the split) passes with a reason that says it was not checked.
    """
    gate = cfg["gate"]
    variant = model_summary.get("variant", "?")
    if gate["variants"] is not None and variant not in gate["variants"]:
        return True, f"{variant}: not gated (gate.variants)"
    key = f"{gate['split']}_accuracy"
    if key not in model_summary:
        return True, f"{variant}: no {key} in its summary; gate not checked"
    value = float(model_summary[key])
    passed = value >= gate["threshold"]
    return passed, f"{variant} seed {model_summary.get('seed', '?')}: {key} {value:.3f} {'>=' if passed else '<'} {gate['threshold']}"
