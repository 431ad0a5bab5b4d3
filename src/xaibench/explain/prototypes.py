"""`proto`: a ProtoPNet prototype's similarity map, and its activation region ("this looks like that").

Reference (cfchen-duke/ProtoPNet push.py, local_analysis.py, helpers.find_high_activation_crop; the
benchmark's adversarial_modification.py): the prototype's log-similarity map on the feature grid is
upsampled to the image size with cv2.resize(INTER_CUBIC); its activation region is the tight box
around the pixels at or above the 95th percentile, and the benchmark protects that box grown by
10 px on each side at 224 px.
"""
from __future__ import annotations

import torch

from ..models.protopnet import activation_region, box_mask, margin_pixels, upsample_bicubic  # noqa: F401
from . import register

SELECT = ("class_top", "top")


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
