"""`lap`: the self-explanation of a LAP-extended model (paper C), read from its own attention.

map_c = combine_l(upsample(s_l)) · upsample(s_head[c]): every LAP layer's score map, upsampled to
the input and combined (product by default: a pixel counts only where every layer attended to it,
the cascade reading of research/lap.md §3.3; `mean` as option), times the head's score map of the
explained class. All factors are in [0,1], so maps are non-negative. Nothing is computed post hoc:
these are the very maps that weighted the pooling in the forward pass.
"""
from __future__ import annotations

import torch

from . import register, upsample

COMBINES = ("product", "mean")


def combine_layers(layer_maps: list[torch.Tensor], size, how: str) -> torch.Tensor:
    """[B,1,h_l,w_l] per layer -> [B,H,W]; None when the model has no LAP layers (only the head map counts)."""
    if how not in COMBINES:
        raise ValueError(f"lap combine must be one of {COMBINES}, got {how!r}")
    ups = [upsample(m[:, 0].float(), size) for m in layer_maps]
    if not ups:
        return None
    stack = torch.stack(ups)
    return stack.prod(0) if how == "product" else stack.mean(0)


@register("lap")
def lap(model, images, targets, combine: str | None = None):
    """LAP self-explanation of class `targets` (one forward pass, no gradients)."""
    if not hasattr(model, "attention"):
        raise ValueError("the lap explainer needs a LAP-extended model (variant lap or lap_plugin); "
                         f"got {type(model).__name__}")
    how = combine or getattr(model, "combine", "product")  # default: the model's train.lap.combine
    with torch.no_grad():
        layer_maps, head, _ = model.attention(images)
        size = images.shape[-2:]
        cls = head[torch.arange(len(targets), device=head.device), targets]
        maps = upsample(cls.float(), size)
        layers = combine_layers(layer_maps, size, how)
    if layers is not None:
        maps = maps * layers
    return maps.clamp_min(0)  # bilinear upsampling of [0,1] maps stays in [0,1]; clamp guards rounding
