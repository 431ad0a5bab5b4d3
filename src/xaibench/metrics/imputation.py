"""ROAD's noisy linear imputation (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML; the authors' `imputations.py`, shipped
as `pytorch_grad_cam.metrics.road.NoisyLinearImputer`), batched in torch.

Each removed pixel takes the weighted mean of its 8 neighbours inside the image (weight 1/6 for the
4 direct neighbours, 1/12 for the diagonal ones, renormalised at the border), where a neighbour
that is itself removed is an unknown of the same system; kept pixels are fixed. So the removed
region is filled by the discrete harmonic interpolation of its surroundings, which keeps no trace
of the removal's shape (the paper's point: black or mean patches leak the mask's shape to the
model). Then Gaussian noise of sd `noise` is added to the removed pixels.

The reference solves one sparse system per image with scipy's `spsolve`. Here every image and
channel is one system of a batched conjugate-gradient solve (the system is symmetric positive
definite whenever an image keeps at least one pixel), started from a coarse-to-fine guess: the
same problem on 2×2-pooled grids, solved first and upsampled. Iterations stop when each system's
residual RMS is below `tol`; at the default the fill agrees with the reference's to ~1e-4 on
64 px images (tests/unit/test_imputation.py: ≤ 1e-3 asserted). An image with every pixel removed
has nothing to interpolate from (the reference's system is singular there): its pixels become 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DIRECT, DIAGONAL = 1 / 6, 1 / 12  # the reference's `neighbors_weights`


def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """[N,H,W] -> Σ over the 8 neighbours inside the image of weight · value (zero outside)."""
    rows = x.clone()
    rows[:, :, 1:] += x[:, :, :-1]
    rows[:, :, :-1] += x[:, :, 1:]                  # 1-1-1 along each row
    box = rows.clone()
    box[:, 1:] += rows[:, :-1]
    box[:, :-1] += rows[:, 1:]                      # 3×3 box sum
    cross = x.new_zeros(x.shape)
    cross[:, 1:] += x[:, :-1]
    cross[:, :-1] += x[:, 1:]
    cross[:, :, 1:] += x[:, :, :-1]
    cross[:, :, :-1] += x[:, :, 1:]                 # 4 direct neighbours
    # direct·cross + diagonal·(box − cross − x), with direct = 2·diagonal
    return DIAGONAL * (box + cross - x)


def _solve(values: torch.Tensor, known: torch.Tensor, guess: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Conjugate gradient for the removed pixels of [N,H,W] systems; kept pixels stay `values`."""
    free = (~known).to(values.dtype)
    degree = neighbour_sum(torch.ones_like(values[:1]))          # weights inside the image
    apply = lambda p: free * (degree * p - neighbour_sum(p))      # noqa: E731  (p is 0 on kept pixels)
    x = guess * free
    r = free * neighbour_sum(values * known) - apply(x)
    p, rr = r, (r * r).sum((1, 2))
    bound = tol ** 2 * free.sum((1, 2))                             # residual RMS over the removed pixels
    for _ in range(max_iter):
        if bool((rr <= bound).all()):
            break
        q = apply(p)
        pq = (p * q).sum((1, 2))
        alpha = torch.where(pq > 0, rr / torch.where(pq > 0, pq, 1), 0)[:, None, None]
        x = x + alpha * p
        r = r - alpha * q
        rr_new = (r * r).sum((1, 2))
        p = r + torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, 1), 0)[:, None, None] * p
        rr = rr_new
    return torch.where(known, values, x)


def _coarse_to_fine(values: torch.Tensor, known: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Solve on the grid pooled 2×2 (a coarse pixel is kept if any of its pixels is, with their
    mean), upsample as the start, then solve on this grid."""
    h, w = values.shape[-2:]
    if min(h, w) <= 4:
        k = known.to(values.dtype)
        mean = (values * k).sum((1, 2), keepdim=True) / k.sum((1, 2), keepdim=True).clamp_min(1)
        guess = mean.expand_as(values)
    else:
        k = F.avg_pool2d(known[:, None].to(values.dtype), 2, ceil_mode=True)
        v = F.avg_pool2d((values * known)[:, None], 2, ceil_mode=True) / k.clamp_min(1e-12)
        coarse = _coarse_to_fine(v[:, 0], k[:, 0] > 0, tol, max_iter)
        guess = F.interpolate(coarse[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0, :h, :w]
    return _solve(values, known, guess, tol, max_iter)


def linear_imputation(images: torch.Tensor, removed: torch.Tensor, tol: float = 1e-6,
                      max_iter: int = 500) -> torch.Tensor:
    """images [B,C,H,W], removed [B,H,W] bool -> images with the removed pixels imputed (no noise)."""
    b, c, h, w = images.shape
    if removed.shape != (b, h, w) or removed.dtype != torch.bool:
        raise ValueError(f"linear_imputation: removed must be bool [B,H,W]={b, h, w}, got "
                         f"{tuple(removed.shape)} {removed.dtype}")
    known = (~removed)[:, None].expand(b, c, h, w).reshape(b * c, h, w)
    if bool(known.all()):
        return images.clone()
    return _coarse_to_fine(images.reshape(b * c, h, w), known, tol, max_iter).view(b, c, h, w)


def noisy_linear_imputation(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None, tol: float = 1e-6) -> torch.Tensor:
    """ROAD's fill: linear imputation plus N(0, noise²) on the removed pixels. The noise is one
    [C,H,W] field from `generator` shared by the images of the batch, so an image's fill does not
    depend on the batch it is in (the convention of explain.attribution's SmoothGrad)."""
    out = linear_imputation(images, removed, tol)
    if noise > 0:
        field = torch.randn(images.shape[1:], generator=generator, dtype=images.dtype).to(images.device)
        out = torch.where(removed[:, None], out + noise * field, out)
    return out
