"""Map-to-map similarity, batched in torch: SSIM (as scikit-image) and Spearman rank correlation (as SciPy).

Paper E compares salience maps with `skimage.metrics.structural_similarity` at its defaults
(research/salience_measures.md §3d, §7.4); these functions reproduce it exactly, vectorised over
a batch, so the tests can check them against the libraries image by image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map [B,H,W] to [0,1] (as torchcam does before the reference code's SSIM).

    A constant map has no preference and becomes all zeros (the reference code would divide by 0).
    """
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view_as(maps)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity of each pair of maps a[i], b[i] ([B,H,W] -> [B]).

    skimage.metrics.structural_similarity with its defaults: uniform win_size² window, sample
    covariance (× N/(N−1), N = win_size²), C1 = (k1·R)², C2 = (k2·R)² with R = `data_range`,
    S = (2μaμb + C1)(2σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2)), averaged over the pixels at
    least (win_size−1)/2 from every border. skimage filters with reflection and then crops exactly
    those border pixels, so only windows lying fully inside the map count: that is `avg_pool2d`
    without padding. Computed in float64 (the variance is a difference of near-equal means).
    Maps must be at least win_size on each side.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two [B,H,W] batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"ssim: maps of {tuple(a.shape[-2:])} are smaller than the {win_size}x{win_size} window")
    x, y = a[:, None].double(), b[:, None].double()
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)
    ux, uy, uxx, uyy, uxy = F.avg_pool2d(stack, win_size, stride=1).unbind(1)
    n = win_size * win_size
    cov_norm = n / (n - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dim of [B,N], ties given their average rank (scipy.stats.rankdata)."""
    vals, order = values.sort(-1)
    n = vals.shape[-1]
    pos = torch.arange(n, device=values.device).expand_as(vals)
    first = torch.ones_like(vals, dtype=torch.bool)
    first[..., 1:] = vals[..., 1:] != vals[..., :-1]
    last = torch.ones_like(first)
    last[..., :-1] = first[..., 1:]
    # position of the first and of the last member of each element's tie group
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(-1).values
    end = torch.where(last, pos, torch.full_like(pos, n)).flip(-1).cummin(-1).values.flip(-1)
    avg = (start + end).double() / 2 + 1
    return torch.empty_like(avg).scatter_(-1, order, avg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps a[i], b[i] (any [B,...] shape -> [B]).

    Pearson correlation of the average ranks (scipy.stats.spearmanr). NaN when either map is
    constant, as SciPy; such pairs are left out of means downstream rather than given a made-up value.
    """
    ra, rb = ranks(a.flatten(1)), ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    num = (ra * rb).sum(1)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan).float()
