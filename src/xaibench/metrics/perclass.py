"""`perclass`: the saliency-bias test of paper D on two-object images (research/agf.md §3.5).

AGF's claim: common explainers show the evidence of the dominant object whatever class they are
asked about ("saliency bias"); AGF's logit correction makes a map of a non-top class show that
class's object. The paper's exact statistic is unknown (§3.5, UNVERIFIED); our reading, on the
`pairs` split (objects A and B of different classes, masks `masks`/`masks2`, labels
`labels`/`labels2`): order the two present classes by the model's logits into `top` and `second`,
explain each with every configured explainer (same options as the explain step), and score each
map on its own object against the other one:

- `mass_on_explained`: share of the map's positive mass on the explained class's object (higher);
- `mass_on_other`: share on the other object (lower);
- `object_preference`: mass_on_explained / (mass_on_explained + mass_on_other), in [0,1], 0.5 = no
  preference between the objects (background mass left out; NaN when neither object gets any).

Signed maps (AGF, gradient × input) count their positive part, the evidence for the class (the
localisation convention). A method without saliency bias has `object_preference` of the `second`
class well above 0.5. Reference lines: `chance` (uniform random map: mass ∝ object area,
preference ≈ 0.5) and `oracle` (the explained object's mask: 1, 0, 1), as rows `baseline_random`
and `baseline_oracle` (the names of localization.baseline_maps).

The family reads the pairs split itself (it need not be in explain.splits) and runs the model:
it explains classes the explain step does not (the second class).
"""
from __future__ import annotations

import pandas as pd
import torch

from . import register, rows
from ..tidy import ROW_COLUMNS
from .localization import relevance_mass
from .localization import baseline_maps


def object_scores(maps: torch.Tensor, own: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B] mass on the explained object, on the other one, and the preference between the two."""
    pos = maps.clamp_min(0)
    e, o = relevance_mass(pos, own), relevance_mass(pos, other)
    both = e + o
    pref = torch.where(both > 0, e / both.clamp_min(1e-12), torch.nan)
    return {"mass_on_explained": e, "mass_on_other": o, "object_preference": pref}


@register("perclass")
def perclass(ctx) -> pd.DataFrame:
    from ..explain import maps_for
    if not ctx.meta()["splits"].get("pairs"):
        print(f"perclass: {ctx.dataset} has no pairs split; skipped", flush=True)
        return pd.DataFrame(columns=ROW_COLUMNS)
    cap = ctx.cfg["metrics"]["perclass"]["max_images"]
    data = ctx.split("pairs")
    n = len(data) if cap is None else min(cap, len(data))
    step = ctx.cfg["explain"]["batch_size"]
    options = ctx.cfg["explain"].get("options", {})
    model = ctx.model(ctx.seed).eval()
    parts: dict = {}
    for i in range(0, n, step):
        sl = slice(i, min(i + step, n))
        x = data.tensors(sl).to(ctx.device)
        a, b = torch.from_numpy(data.labels[sl]), torch.from_numpy(data.extras["labels2"][sl])
        ma, mb = torch.from_numpy(data.masks[sl]) > 127, torch.from_numpy(data.extras["masks2"][sl]) > 127
        with torch.no_grad():
            logits = model(x).cpu()
        a_top = logits.gather(1, a[:, None])[:, 0] >= logits.gather(1, b[:, None])[:, 0]
        first = a_top[:, None, None]
        kinds = {"top": (torch.where(a_top, a, b), torch.where(first, ma, mb), torch.where(first, mb, ma)),
                 "second": (torch.where(a_top, b, a), torch.where(first, mb, ma), torch.where(first, ma, mb))}
        for method in [*ctx.methods, "baseline_random", "baseline_oracle"]:
            for kind, (cls, own, other) in kinds.items():
                if method.startswith("baseline_"):
                    maps = baseline_maps(method[len("baseline_"):], own, seed=int(ctx.seed) * 1_000_003 + i)
                else:
                    maps = maps_for(model, x, cls.to(ctx.device), method, options.get(method, {})).cpu()
                for metric, values in object_scores(maps, own, other).items():
                    empty = ~(own.flatten(1).any(1) & other.flatten(1).any(1))
                    parts.setdefault((method, metric, kind), []).append(values.float().masked_fill(empty, torch.nan))
    out = [rows(method, "pairs", metric, torch.cat(v).numpy(), setting=kind) for (method, metric, kind), v in parts.items()]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)
