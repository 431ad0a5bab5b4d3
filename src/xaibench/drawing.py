"""Drawing helpers shared by the figures and by paper B's prototype grids (matplotlib only): a tile is
an image and/or heat map as RGB, a mosaic a grid of tiles drawn as one image. Kept apart from
`figures` so the generate step draws its grid without importing the figure registry."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(image=None, heat=None, cmap: str = "jet", alpha: float = 0.5, scale=None, border=None) -> np.ndarray:
    """One RGB tile [H,W,3] in [0,1]: an image, a heat map, or a heat map laid over an image.

    `heat` is min-max scaled unless `scale=(lo, hi)` fixes its range; `border` colours a 2 px frame
    (e.g. red for a wrong prediction).
    """
    out = np.zeros((*np.shape(image if image is not None else heat)[:2], 3))
    if image is not None:
        img = np.asarray(image, dtype=float)
        out = (img / 255.0 if img.max() > 1 else img)
        out = np.repeat(out[..., None], 3, -1) if out.ndim == 2 else out
    if heat is not None:
        h = np.asarray(heat, dtype=float)
        lo, hi = scale if scale is not None else (h.min(), h.max())
        rgb = matplotlib.colormaps[cmap](np.clip((h - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]
        out = rgb if image is None else (1 - alpha) * out + alpha * rgb
    out = np.array(out, dtype=float)
    if border is not None:
        rgb = matplotlib.colors.to_rgb(border)
        out[:2], out[-2:], out[:, :2], out[:, -2:] = rgb, rgb, rgb, rgb
    return out


def mosaic(tiles: list[list[np.ndarray | None]], col_titles: list[str], row_titles: list[str], title: str,
           row_colours: list[str] | None = None, cell: float = 1.5):
    """Draw a grid of tiles as one image (one axes), so a gallery costs one imshow, not hundreds."""
    h, w = next(t for row in tiles for t in row if t is not None).shape[:2]
    pad = max(2, h // 16)
    canvas = np.ones((len(tiles) * (h + pad) + pad, len(tiles[0]) * (w + pad) + pad, 3))
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            if t is not None:
                y, x = pad + r * (h + pad), pad + c * (w + pad)
                canvas[y:y + h, x:x + w] = t
    fig, ax = plt.subplots(figsize=(cell * len(tiles[0]) + 1, cell * len(tiles) + 0.8))
    ax.imshow(canvas, interpolation="none")
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(len(tiles[0]))], col_titles, fontsize=7)
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(len(tiles))], row_titles, fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for label, label_colour in zip(ax.get_yticklabels(), row_colours or []):
        label.set_color(label_colour)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9, pad=22)
    return fig
