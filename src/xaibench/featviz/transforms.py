"""Transformation robustness (Olah et al. 2017): a random jitter, scale and rotation per image and step.

torch-lucent's `standard_transforms` are pad(12, value 0.5), jitter(8), scale ∈ {0.90, 0.92, …, 1.10},
rotate ∈ {−10…10}° (0° five extra times), jitter(4), each a separate resample, at its default 128 px
canvas. We draw the same quantities per image and apply them as one affine resample (bilinear; the
area outside the image reads 0.5, as Lucent's constant padding). The jitters are expressed as a
fraction of the side (8/128 and 4/128) so they keep their meaning at our 32-64 px images.
The ranges of leap-ie's `transform="xl"` are unpublished (research note §2.2); prototypes use these too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
ANGLES = tuple(range(-10, 11)) + (0,) * 5
JITTERS = (8 / 128, 4 / 128)


def random_affine(images: torch.Tensor, generator: torch.Generator, jitters=JITTERS, scales=SCALES,
                  angles=ANGLES, fill: float = 0.5) -> torch.Tensor:
    """Each image of [B,3,H,W] shifted, scaled and rotated by its own random draw (differentiable)."""
    b, _, h, w = images.shape
    shift = torch.zeros(b, 2)
    for j in jitters:  # each jitter: an integer shift of up to j·side pixels per axis
        px = int(round(j * max(h, w)))
        shift += torch.randint(-px, px + 1, (b, 2), generator=generator).float()
    s = torch.tensor(scales, dtype=torch.float32)[torch.randint(len(scales), (b,), generator=generator)]
    a = torch.tensor(angles, dtype=torch.float32)[torch.randint(len(angles), (b,), generator=generator)] * math.pi / 180
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, -2 * shift[:, 0] / w], 1),
                         torch.stack([sin, cos, -2 * shift[:, 1] / h], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
