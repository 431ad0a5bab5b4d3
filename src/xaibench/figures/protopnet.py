"""Paper A figures: the misalignment benchmark (table in the paper's layout) and a prototype gallery."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..tidy import over_units
from . import NotApplicable, gate_failures, plt, register, save, seed_points, table, tile  # noqa: F401
from .. import catalog, gate, paths
from ..io import atomic_path, save_csv

PROTO_VARIANTS = ("protopnet", "protopnet_comp")
METRICS = [("PLC", "PLC, %\nlocation change of the top-10% map"),
           ("PRC", "PRC, prototypes\nrank change among other classes'"),
           ("PAC", "PAC, %\nactivation drop of the attacked prototype"), ("AC", "AC, points\naccuracy drop")]


def _proto_variants(cfg) -> list[str]:
    return [v for v in cfg["train"]["variants"] if v in PROTO_VARIANTS]


def misalignment_table(data: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds (each seed = mean over its images) per variant × perturbation × metric."""
    return over_units(data, ["variant", "setting", "metric"]).rename(columns={"setting": "perturbation", "n": "seeds"})


def _cell(stats, variant, kind, metric, digits=1) -> str:
    row = stats[(stats.variant == variant) & (stats.perturbation == kind) & (stats.metric == metric)]
    if row.empty:
        return "–"
    mean, sd = row["mean"].iloc[0], row["sd"].iloc[0]
    return f"{mean:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}")


@register("misalignment")
def misalignment(cfg, dataset):
    """PAC, PRC, PLC and AC per variant and perturbation (seeds as dots), plus the paper-layout table."""
    data = table(dataset, "misalignment")
    data = data[data.split == "test"]
    variants = [v for v in _proto_variants(cfg) if v in set(data.variant)]
    if data.empty or not variants:
        raise NotApplicable("no ProtoPNet variant (protopnet, protopnet_comp) in train.variants")
    stats = misalignment_table(data)
    kinds = [k for k in cfg["metrics"]["misalignment"]["kinds"] if k in set(data.setting)]
    out = paths.tables(dataset)
    save_csv(out / "misalignment.csv", stats)
    s = cfg["metrics"]["misalignment"]
    failed = gate_failures(cfg, dataset)
    lines = [f"# {dataset}: spatial misalignment benchmark (paper A), mean ± sd over seeds", "",
             f"attack {s['attack']}, eps {s['eps']} (normalised units), PGD {s['iters']} steps of {s['step']}; "
             f"lower is better for PLC, PRC, PAC, AC", "",
             "| model | perturbation | PLC ↓ | PRC ↓ | PAC ↓ | accuracy before → after | AC ↓ | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        for k in kinds:
            n = stats[(stats.variant == v) & (stats.perturbation == k)]["seeds"].max()
            lines.append(f"| {gate.mark(v, failed or ())} | {k} | {_cell(stats, v, k, 'PLC')} | {_cell(stats, v, k, 'PRC')} | "
                         f"{_cell(stats, v, k, 'PAC')} | {_cell(stats, v, k, 'accuracy_before')} → "
                         f"{_cell(stats, v, k, 'accuracy_after')} | {_cell(stats, v, k, 'AC')} | {n} |")
    lines += ["", gate.footnote(failed, variants)]
    with atomic_path(out / "misalignment.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")

    per_seed = data.groupby(["variant", "seed", "setting", "metric"])["value"].mean().reset_index()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (metric, label) in zip(axes, METRICS):
        d = per_seed[per_seed.metric == metric]
        seed_points(ax, d, "setting", "value", "variant", order=kinds, hue_order=variants, failed=failed or ())
        ax.axhline(0, c="grey", lw=0.8)
        ax.set_title(label + catalog.arrow("misalignment", metric), fontsize=9)
        ax.set(xlabel="perturbation outside the region", ylabel="")
        if ax.legend_ and ax is not axes[-1]:
            ax.legend_.remove()
    axes[-1].legend(title="variant (compensation: _comp)", fontsize=7, title_fontsize=7, loc="upper left",
                    bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{dataset}: how far a prototype's explanation moves when only pixels outside its region change\n"
                 f"(test split, first {s['max_images'] or 'all'} images; bars mean ± sd over seeds, dots = seeds; "
                 f"lower is better, 0 = unperturbed)", y=1.06, fontsize=10)
    return save(fig, cfg, dataset, "misalignment")


def _frame(img: np.ndarray, box, colour, width: int = 1) -> np.ndarray:
    """img [H,W,3] with the outline of box (y0, y1, x0, x1; half-open) drawn in `colour`."""
    import matplotlib.colors
    out = img.copy()
    y0, y1, x0, x1 = (int(v) for v in box)
    if y1 <= y0 or x1 <= x0:
        return out
    rgb = matplotlib.colors.to_rgb(colour)
    out[y0:y0 + width, x0:x1] = rgb
    out[y1 - width:y1, x0:x1] = rgb
    out[y0:y1, x0:x0 + width] = rgb
    out[y0:y1, x1 - width:x1] = rgb
    return out


def _panel(ax, tiles, col_titles, row_titles, title):
    """Tiles (rows of [H,W,3] or None) as one image on `ax` (as figures.mosaic, on a given axes)."""
    h, w = next(t for row in tiles for t in row if t is not None).shape[:2]
    pad = max(2, h // 16)
    ncol = max(len(r) for r in tiles)
    canvas = np.ones((len(tiles) * (h + pad) + pad, ncol * (w + pad) + pad, 3))
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            if t is not None:
                canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = t
    ax.imshow(canvas, interpolation="none")
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(len(col_titles))], col_titles, fontsize=7)
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(len(row_titles))], row_titles, fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9, pad=18)


@register("protopnet_gallery")
def protopnet_gallery(cfg, dataset):
    """Per ProtoPNet variant (first seed): each class's prototypes on their push source image with the
    source activation box, and test images with the top prototype's activation region before and
    after the benchmark's two perturbations (the one figure of paper A that runs the model)."""
    import torch

    from ..data import read_meta, read_split
    from ..models.protopnet import activation_region, upsample_bicubic
    from ..metrics.misalignment import benchmark
    from ..training.fit import load_model

    variants = _proto_variants(cfg)
    if not variants:
        raise NotApplicable("no ProtoPNet variant (protopnet, protopnet_comp) in train.variants")
    meta = read_meta(paths.prepared(dataset))
    train, test = read_split(paths.prepared(dataset), "train"), read_split(paths.prepared(dataset), "test")
    classes, s = meta["classes"], cfg["metrics"]["misalignment"]
    n_cols = 6
    n_ex = min(3, cfg["figures"]["gallery_images"], len(test))
    idx = np.linspace(0, len(test) - 1, n_ex).astype(int)
    gallery, g_rows, examples, e_rows = [], [], [], []
    failed = gate_failures(cfg, dataset) or {}
    for v in variants:
        seed = catalog.seeds_for(cfg, v)[0]
        model, _ = load_model(paths.model_dir(dataset, v, seed) / "model.pt",
                              expect={"dataset": dataset, "data_sha256": meta["content_sha256"]})
        model.eval()
        m = model.prototypes_per_class
        for c in range(model.num_classes):
            row = []
            for j in range(c * m, c * m + min(m, n_cols)):
                src, box = model.proto_source[j].tolist(), model.proto_box[j].tolist()
                row.append(None if src[0] < 0 else _frame(tile(train.images[src[0]]), box, "yellow"))
            gallery.append(row)
            g_rows.append(f"{gate.mark(v, failed, seed)} s{seed}\n{classes[c]}")
        x, y = test.tensors(idx), torch.from_numpy(test.labels[idx])
        res = {k: benchmark(model, x, y, kind=k, attack=s["attack"], eps=s["eps"], step=s["step"], iters=s["iters"],
                            percentile=s["percentile"], margin=s["margin"], clip=s["clip"], seed=s["seed"])
               for k in ("noise", "pgd")}
        j = res["noise"]["prototype"]
        with torch.no_grad():
            def region(images):
                sim, _ = model.prototype_maps(images)
                up = upsample_bicubic(sim[torch.arange(len(j)), j], images.shape[-2:])
                return up, activation_region(up, s["percentile"], margin=0)
            before, box0 = region(x)
            after = {k: region(r["perturbed"]) for k, r in res.items()}
        prot = res["noise"]["protected"]
        for r, i in enumerate(idx):
            img = test.images[i]
            # protected area (never changed) shown as the box of the mask
            ys, xs = np.nonzero(prot[r].numpy())
            pbox = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if len(ys) else (0, 0, 0, 0)
            row = [_frame(tile(img), pbox, "lime"), _frame(tile(img, before[r].numpy()), box0[r].tolist(), "white")]
            for k in ("noise", "pgd"):
                pert = res[k]["perturbed"][r].permute(1, 2, 0).clamp(0, 1).numpy()
                up, box = after[k]
                row += [tile(pert), _frame(_frame(tile(img, up[r].numpy()), box0[r].tolist(), "white"),
                                           box[r].tolist(), "red")]
            examples.append(row)
            owner = classes[int(model.prototype_class[j[r]])]
            e_rows.append(f"{gate.mark(v, failed, seed)} s{seed}: {classes[y[r]]}\nproto {int(j[r])} ({owner})\n"
                          f"PAC noise {res['noise']['PAC'][r]:.0f}%, pgd {res['pgd']['PAC'][r]:.0f}%")
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(1.4 * n_cols + 2.2, 1.25 * (len(gallery) + len(examples)) + 1.6),
                                 gridspec_kw={"height_ratios": [len(gallery), len(examples)]})
    _panel(a1, gallery, [f"prototype {k + 1}" for k in range(n_cols)], g_rows,
           "prototypes after push: source training image, yellow = its activation region (95th percentile box)")
    _panel(a2, examples, ["image\ngreen = protected", "map before\nwhite = region", "noise outside",
                          "map after noise\nred = region after", f"PGD outside\n({s['iters']} steps)",
                          "map after PGD\nred = region after"],
           e_rows, "test images: the top prototype's map and region before and after perturbing only outside "
                   "the protected box")
    fig.suptitle(f"{dataset}: ProtoPNet prototypes and spatial misalignment (eps {s['eps']} normalised units)", y=1.0)
    fig.tight_layout()
    return save(fig, cfg, dataset, "protopnet_gallery")
