"""Image parameterisations: plain pixels, and the decorrelated Fourier basis of Olah et al. 2017.

`FourierImage` is Lucid's / torch-lucent's `param.image(fft=True, decorrelate=True)`: a per-channel
real spectrum scaled by 1/max(|f|, 1/max(H,W))**decay_power (so every frequency has about equal
energy), inverse rFFT (norm="ortho") divided by Lucid's "magic" 4, colours mixed by the square
root of ImageNet's colour covariance (the SVD matrix below, columns normalised to max norm 1),
then a sigmoid to [0,1]. One departure: for odd widths Lucent keeps one extra frequency column and
crops a pixel; we use torch's rFFT size (W//2+1), which is the same basis without the crop.
"""
from __future__ import annotations

import torch
from torch import nn

# sqrt of ImageNet's RGB colour covariance (Lucid's `color_correlation_svd_sqrt`), columns normalised.
_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_MIX = _SVD_SQRT / _SVD_SQRT.norm(dim=0).max()
MAGIC = 4.0  # Lucid's constant; a larger value gives less saturated images


def frequency_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """[h, w//2+1] weights 1/max(|f|, 1/max(h,w))**decay_power of the rFFT coefficients."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return 1.0 / torch.maximum((fx * fx + fy * fy).sqrt(), torch.tensor(1.0 / max(h, w))) ** decay_power


class FourierImage(nn.Module):
    """A batch of images [B,3,H,W] in (0,1) parameterised by a whitened, colour-decorrelated spectrum."""

    def __init__(self, batch: int, size: int, sd: float = 0.01, decay_power: float = 1.0,
                 decorrelate: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        self.size, self.decorrelate = size, decorrelate
        self.register_buffer("scale", frequency_scale(size, size, decay_power)[None, None, ..., None])
        self.spectrum = nn.Parameter(torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator) * sd)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        img = torch.fft.irfftn(spec, s=(self.size, self.size), dim=(-2, -1), norm="ortho") / MAGIC
        if self.decorrelate:
            img = torch.einsum("bchw,dc->bdhw", img, COLOUR_MIX.to(img))
        return torch.sigmoid(img)

    @torch.no_grad()
    def set_image(self, images: torch.Tensor, eps: float = 1e-4) -> "FourierImage":
        """Set the spectrum so that `forward()` returns `images` (clipped to [eps, 1-eps]); the exact inverse."""
        if images.shape != (self.spectrum.shape[0], 3, self.size, self.size):
            raise ValueError(f"set_image: expected images of shape {(self.spectrum.shape[0], 3, self.size, self.size)}, "
                             f"got {tuple(images.shape)}")
        img = torch.logit(images.clamp(eps, 1 - eps).to(self.spectrum))
        if self.decorrelate:
            img = torch.einsum("bdhw,cd->bchw", img, torch.linalg.inv(COLOUR_MIX).to(img))
        spec = torch.fft.rfftn(img * MAGIC, dim=(-2, -1), norm="ortho")
        self.spectrum.copy_(torch.view_as_real(spec) / self.scale)
        return self


class PixelImage(nn.Module):
    """Images [B,3,H,W] optimised directly in pixel space, kept in [0,1] by projection after each step."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(images.clone().clamp_(0, 1))

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def project(self) -> None:
        self.pixels.clamp_(0, 1)
