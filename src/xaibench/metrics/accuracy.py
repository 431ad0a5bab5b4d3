"""`accuracy`: clean, cue-conflicting and ood behaviour of every model, from its summary.json."""
from __future__ import annotations

import pandas as pd

from .. import paths
from ..io import load_json
from . import register, rows


@register("accuracy")
def accuracy(ctx) -> pd.DataFrame:
    path = paths.model_dir(ctx.dataset, ctx.variant, ctx.seed) / "summary.json"
    summary = load_json(path)
    out = []
    for key, value in summary.items():
        if key.endswith(("_accuracy", "_max_softmax")) or key == "test_follows_cue":
            split, metric = key.split("_", 1)
            out.append(rows("model", split, metric, [value]).assign(image=-1))
    return pd.concat(out, ignore_index=True)
