"""Explanations of a LAP-extended model (paper C) read from the weights that pooled its features.

The head computes logit_k = Σ_p a_k(p)·CAM_k(p) + b_k with attention a_k = softmax_p(β·s_k) and
CAM_k = W_k·f (models/lap.py, `LAPHead.parts`): a_k(p) is the weight location p's evidence got, and
c_k(p) = a_k(p)·CAM_k(p) are per-location contributions that sum to the logit less its bias. Each
LAP layer pooled its input with window weights softmax(β·s); these ignore any constant added to s
within a window, so the raw score map s is not what pooled the features, the weights are.

`lap` (the model's self-explanation), option `combine`:
  * `cascade` (default): a_k carried back through every LAP layer, last to first, by the window
    weights that layer pooled with (`LAPPool2d.backproject`): the share of class k's pooling
    weight each position of the first LAP layer's input received along the pooling path. The
    convolutions between LAP layers are not followed (the map shows what pooling selected). It
    sums to 1 per image. Native resolution: the first LAP layer's input (the image for small_cnn).
  * `head`: a_k alone, on the feature grid.
  * `product` / `mean`: a looser reading kept for comparison (the former explainer's rule, now on
    weights instead of raw scores): each layer's received window weight (Σ over the windows that
    hold a position) upsampled to the first layer's input, multiplied / averaged over layers,
    times the upsampled a_k.
Option `value`: `attention` (default: the weights above) or `contribution` (c_k instead of a_k,
carried back the same way; signed; sums to logit − bias: the completeness the tests check; only
with `cascade` or `head`).

`attention_cam`: the white-box baseline on LAP models, a_k · ReLU(CAM_k) on the feature grid (the
positive part of the head's contributions; ReLU as CAM and Grad-CAM). Plain Grad-CAM on a LAP model
weighs channels by ∂logit/∂f averaged over positions, ≈ W_k/P, and so ignores the attention.
"""
from __future__ import annotations

import torch

from . import register, upsample

COMBINES = ("cascade", "head", "product", "mean")
VALUES = ("attention", "contribution")


def _head(model, images, targets):
    """(a_k, CAM_k) of the target class on the feature grid, [B,h,w] each; runs the trunk once."""
    if not hasattr(model, "lap_layers"):
        raise ValueError("this explainer needs a LAP-extended model (variant lap or lap_plugin); "
                         f"got {type(model).__name__}")
    f = model.features(images)
    attn, cams = model.head.parts(f, model.fc)
    pick = torch.arange(len(targets), device=attn.device), targets
    shape = (len(targets), *f.shape[-2:])
    return attn[pick].view(shape), cams[pick].view(shape)


@register("lap")
def lap(model, images, targets, combine: str = "cascade", value: str = "attention"):
    """LAP self-explanation of class `targets` at its native resolution (one forward, no gradients)."""
    if combine not in COMBINES:
        raise ValueError(f"lap combine must be one of {', '.join(COMBINES)}; got {combine!r}")
    if value not in VALUES:
        raise ValueError(f"lap value must be one of {', '.join(VALUES)}; got {value!r}")
    if value == "contribution" and combine not in ("cascade", "head"):
        raise ValueError(f"lap value 'contribution' needs combine cascade or head (got {combine!r}): "
                         "only those keep the contributions summing to the logit")
    with torch.no_grad():
        attn, cam = _head(model, images, targets)
        top = attn if value == "attention" else attn * cam
        layers = model.lap_layers()
        if combine == "head" or not layers:
            return top.float()
        if combine == "cascade":
            m = top
            for layer in reversed(layers):
                m = layer.backproject(m)
            return m.float()
        size = layers[0].in_size
        received = [upsample(layer.backproject(top.new_ones(len(top), *layer.out_size)).float(), size)
                    for layer in layers]
        stack = torch.stack(received)
        layer_map = stack.prod(0) if combine == "product" else stack.mean(0)
        return layer_map * upsample(top.float(), size)


@register("attention_cam")
def attention_cam(model, images, targets):
    """a_k · ReLU(CAM_k) of the LAP head on the feature grid (white-box baseline for LAP models)."""
    with torch.no_grad():
        attn, cam = _head(model, images, targets)
    return (attn * cam.relu()).float()
