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
    without padding (a depthwise box convolution). Computed in float32, in place where possible
    (this runs for every altered batch): C2 = 9e-4 dwarfs the float32 rounding of E[x²] − E[x]²,
    so on [0,1] maps it is within ~1e-6 of skimage's float64, and within 1e-4 even for maps
    that vary by 1e-3 just below 1 (4e-5 measured). Maps must be at least win_size a side.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two [B,H,W] batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"ssim: maps of {tuple(a.shape[-2:])} are smaller than the {win_size}x{win_size} window")
    x, y = a[:, None].float(), b[:, None].float()
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)
    n = win_size * win_size
    box = stack.new_full((5, 1, win_size, win_size), 1.0 / n)
    ux, uy, uxx, uyy, uxy = F.conv2d(stack, box, groups=5).unbind(1)
    cov_norm = n / (n - 1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    p = ux * uy
    sq = ux.square_().add_(uy.square_())                              # μx² + μy²
    num2 = uxy.sub_(p).mul_(2 * cov_norm).add_(c2)                    # 2σxy + C2
    den2 = uxx.add_(uyy).sub_(sq).mul_(cov_norm).add_(c2)             # σx² + σy² + C2
    s = p.mul_(2).add_(c1).mul_(num2).div_(sq.add_(c1).mul_(den2))   # (2μxμy + C1)(…) / ((μx² + μy² + C1)(…))
    return s.flatten(1).mean(1, dtype=torch.float64).float()


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dim of [B,N], ties given their average rank (scipy.stats.rankdata).

    One sort; each element's tie group spans sorted positions start..end (found with a running
    max / reversed running min over group boundaries), and its rank is (start + end)/2 + 1.
    """
    vals, order = values.sort(-1)
    n = vals.shape[-1]
    pos = torch.arange(n, device=values.device).expand_as(vals)
    first = torch.ones_like(vals, dtype=torch.bool)
    first[..., 1:] = vals[..., 1:] != vals[..., :-1]
    last = torch.ones_like(first)
    last[..., :-1] = first[..., 1:]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(-1).values
    end = torch.where(last, pos, torch.full_like(pos, n)).flip(-1).cummin(-1).values.flip(-1)
    avg = (start + end).float() / 2 + 1  # half-integers: exact in float32 below 2^23 elements
    return torch.empty_like(avg).scatter_(-1, order, avg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps a[i], b[i] (any [B,...] shape -> [B]).

    Pearson correlation of the average ranks (scipy.stats.spearmanr). NaN when either map is
    constant, as SciPy; such pairs are left out of means downstream rather than given a made-up value.
    """
    return rank_correlation(ranks(a.flatten(1)), ranks(b.flatten(1)))


def rank_correlation(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of rank rows [B,N] (`ranks`): Spearman's, for a caller that ranks one side once."""
    ra, rb = ra.double(), rb.double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    num = (ra * rb).sum(1)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan).float()
