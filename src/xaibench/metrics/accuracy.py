"""`accuracy`: every model's accuracy on val, test, the cue-agreeing and cue-conflicting parts of
test and the cue-free `nocue` split, how often it follows the cue when the cue conflicts, and its
confidence on ood, read from its summary.json (written by `training.fit.evaluate`).

Split names say the subset: `test_cue_agreeing`, `test_cue_conflicting`, `nocue`; metrics are
`accuracy`, `max_softmax`, `follows_cue` (prediction = the cue's class) and
`cue_changes_prediction` (the prediction differs from the one on the same image without the patch).
"""
from __future__ import annotations

import pandas as pd

from .. import paths
from ..io import load_json
from ..training.fit import EVAL_SPLITS
from . import register, rows


def split_key(key: str) -> tuple[str, str] | None:
    """'test_cue_conflicting_accuracy' -> ('test_cue_conflicting', 'accuracy'); longest split name wins."""
    for split in sorted(EVAL_SPLITS, key=len, reverse=True):
        if key.startswith(split + "_"):
            return split, key[len(split) + 1:]
    return None


@register("accuracy")
def accuracy(ctx) -> pd.DataFrame:
    path = paths.model_dir(ctx.dataset, ctx.variant, ctx.seed) / "summary.json"
    summary = load_json(path)
    out = [rows("model", *split_key(key), [value]).assign(image=-1)
           for key, value in summary.items() if isinstance(value, float) and split_key(key)]
    return pd.concat(out, ignore_index=True)
