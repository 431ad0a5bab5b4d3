"""`proto`: a ProtoPNet prototype's similarity map, and its activation region ("this looks like that").

Reference (cfchen-duke/ProtoPNet push.py, local_analysis.py, helpers.find_high_activation_crop; the
benchmark's adversarial_modification.py): the prototype's log-similarity map on the feature grid is
upsampled to the image size with cv2.resize(INTER_CUBIC); its activation region is the tight box
around the pixels at or above the 95th percentile, and the benchmark protects that box grown by
10 px on each side at 224 px.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register

SELECT = ("class_top", "top")


def upsample_bicubic(maps: torch.Tensor, size) -> torch.Tensor:
    """[B,h,w] -> [B,H,W] bicubic, half-pixel centres, a = -0.75: cv2.resize INTER_CUBIC's kernel (tested)."""
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bicubic", align_corners=False)[:, 0]


def margin_pixels(size: int, margin_at_224: float = 10) -> int:
    """The benchmark's 10 px margin at 224 px, scaled to an image side of `size` px (rounded)."""
    return int(round(margin_at_224 * size / 224))


def activation_region(maps: torch.Tensor, percentile: float = 95, margin: int | None = None,
                      reference_clip: bool = True) -> torch.Tensor:
    """Boxes [B,4] long (y0, y1, x0, x1; half-open) of upsampled maps [B,H,W].

    Tight box around pixels >= the `percentile`-th percentile (numpy's linear interpolation, as
    np.percentile in find_high_activation_crop), grown by `margin` px per side (default: 10 px at
    224 px, scaled to the map height). reference_clip: the ends are clipped to side-1, as the
    released benchmark does (min(y1 + m, img_size - 1) as a slice end, so the last row and column
    are never inside a grown box); False clips to the side. With margin 0 the box is returned
    unclipped (the find_high_activation_crop box itself).
    """
    if maps.ndim != 3:
        raise ValueError(f"activation_region needs maps [B,H,W], got shape {tuple(maps.shape)}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    B, H, W = maps.shape
    m = margin_pixels(H) if margin is None else int(margin)
    thr = torch.quantile(maps.reshape(B, -1).double(), percentile / 100, dim=1)
    hot = maps.double() >= thr[:, None, None]
    rows, cols = hot.any(2), hot.any(1)  # [B,H], [B,W]; never empty: the maximum is >= any percentile
    ar_h = torch.arange(H, device=maps.device)
    ar_w = torch.arange(W, device=maps.device)
    y0 = torch.where(rows, ar_h, H).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, W).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    if m:
        hi_h, hi_w = (H - 1, W - 1) if reference_clip else (H, W)
        y0, x0 = (y0 - m).clamp_min(0), (x0 - m).clamp_min(0)
        y1, x1 = (y1 + m).clamp_max(hi_h), (x1 + m).clamp_max(hi_w)
    return torch.stack([y0, y1, x0, x1], 1)


def box_mask(boxes: torch.Tensor, size) -> torch.Tensor:
    """Boxes [B,4] (y0, y1, x0, x1) -> bool [B,H,W], True inside."""
    H, W = size
    ys = torch.arange(H, device=boxes.device)[None, :, None]
    xs = torch.arange(W, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (ys >= b[:, 0]) & (ys < b[:, 1]) & (xs >= b[:, 2]) & (xs < b[:, 3])


def select_prototypes(model, sim: torch.Tensor, targets: torch.Tensor, prototype="class_top") -> torch.Tensor:
    """Prototype index [B] to show for each image.

    class_top (default): the target class's prototype most activated on the image (max over the
    map), so the map explains the explained class as the other explainers' maps do; top: the most
    activated of all P prototypes, whatever its class (the benchmark's top_proto); an int k: the
    k-th prototype of the target class.
    """
    score = sim.flatten(2).amax(2)  # [B,P]
    if prototype == "top":
        return score.argmax(1)
    m = model.prototypes_per_class
    if prototype == "class_top":
        own = model.prototype_class[None, :] == targets[:, None]
        return score.masked_fill(~own, float("-inf")).argmax(1)
    if isinstance(prototype, int) and not isinstance(prototype, bool) and 0 <= prototype < m:
        return targets * m + prototype
    raise ValueError(f"proto option prototype must be one of {SELECT} or an int in [0, {m}), got {prototype!r}")


@register("proto")
def proto(model, images, targets, prototype="class_top", upsample: bool = True):
    """Similarity map g(d) of one prototype per image (see select_prototypes), bicubic to input size.

    Returned at input size (bicubic, as the reference) because the activation region is defined on
    that map; upsample=False returns the native feature-grid map. Log similarities are > 0; bicubic
    overshoot can dip slightly below the smallest value, so the map is not clamped (the reference
    takes percentiles of the unclamped map).
    """
    if not hasattr(model, "prototype_maps"):
        raise ValueError(f"the proto explainer needs a ProtoPNet model (variants protopnet, protopnet_comp); "
                         f"got {type(model).__name__}")
    with torch.no_grad():
        sim, _ = model.prototype_maps(images)
        j = select_prototypes(model, sim, targets, prototype)
        maps = sim[torch.arange(len(j), device=sim.device), j]
    return upsample_bicubic(maps, images.shape[-2:]) if upsample else maps.float()
