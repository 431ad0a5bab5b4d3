"""Control explainers: maps that ignore the model, registered like any explainer so that every
family that scores maps scores them too (the floor of every table; docs/sanity_checks.md).

- `sobel`: the image's edge magnitude (scikit-image's `filters.sobel` of the luminance, tested equal).
  XAI-TRIS (2023) and Binder et al. (2022) found popular methods that do not beat it.
- `random`: i.i.d. uniform noise in [0,1), fixed per image: its generator is seeded by `seed` and the
  image's content, so the same image gets the same map in every batch and from every model.
- `constant`: all ones (no preference; the `baseline_uniform` reference map as an explainer).

All three are at input resolution (their native grid is the image) and never call the model, so a
test that compares maps of the same image under different models (randomisation, cross-run
stability) gives them similarity 1, and a test against the mask or the model's output gives
chance-level or trivial scores.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from . import register

# skimage.color.rgb2gray's luminance weights (ITU-R BT.709)
LUMINANCE = (0.2125, 0.7154, 0.0721)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] -> [B,H,W] grey levels, as skimage.color.rgb2gray."""
    return torch.einsum("bchw,c->bhw", images.float(), images.new_tensor(LUMINANCE, dtype=torch.float32))


def edge_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude of [B,H,W] images, as skimage.filters.sobel: the derivative [1,0,-1] along one
    axis, the smoothing [1,2,1]/4 along the other, sqrt((gy² + gx²)/2), borders by reflection (one pixel of
    scipy's 'reflect' repeats the edge pixel, which is torch's 'replicate')."""
    x = F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate")
    edge = x.new_tensor([1.0, 0.0, -1.0])
    smooth = x.new_tensor([1.0, 2.0, 1.0]) / 4
    gy = F.conv2d(x, (edge[:, None] * smooth[None, :])[None, None])
    gx = F.conv2d(x, (smooth[:, None] * edge[None, :])[None, None])
    return ((gy.square() + gx.square()) / 2).sqrt()[:, 0]


@register("sobel")
def sobel(model, images, targets):
    """The luminance's Sobel edge magnitude [B,H,W]; the model and targets are not used."""
    return edge_magnitude(luminance(images))


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A seed from `seed` and the image's bytes: the same image gets the same noise wherever it is."""
    return seed * 1_000_003 + zlib.crc32(image.detach().float().cpu().contiguous().numpy().tobytes())


@register("random")
def random(model, images, targets, seed: int = 0):
    """Uniform noise [B,H,W] in [0,1), per image seeded by `seed` and the image (not the model)."""
    h, w = images.shape[-2:]
    return torch.stack([torch.rand(h, w, generator=torch.Generator().manual_seed(image_seed(x, seed)))
                        for x in images]).to(images.device)


@register("constant")
def constant(model, images, targets):
    """All ones [B,H,W]: a map without preference."""
    return images.new_ones(images.shape[0], *images.shape[-2:], dtype=torch.float32)
