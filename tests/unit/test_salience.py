"""Paper E measures b-e: SSIM/Spearman against scikit-image/SciPy, and analytic cases of each family."""
import copy
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from xaibench import catalog, config, explain, metrics, paths
from xaibench.data import prepare, read_split
from xaibench.io import load_explanation
from xaibench.metrics import salience as sal
from xaibench.metrics.similarity import minmax, spearman, ssim
from xaibench.training.fit import load_model, train

from tests.conftest import TINY


# ---- similarity ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8), (64, 64), (7, 12), (23, 16)])
def test_ssim_matches_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.random((4, *shape))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    b[0] = a[0]  # identical pair
    b[1] = rng.random(shape)  # unrelated pair
    ours = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float(), data_range=1.0).numpy()
    ref = [structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ours[0] == pytest.approx(1.0, abs=1e-6)


def test_spearman_matches_scipy_including_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, (5, 9, 9)).astype(np.float32)  # heavy ties
    b = rng.integers(0, 6, (5, 9, 9)).astype(np.float32)
    b[0] = a[0] * 2 + 1  # monotone transform -> 1
    b[1] = -a[1]  # reversed -> -1
    ours = spearman(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ref = [spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert ours[0] == pytest.approx(1.0) and ours[1] == pytest.approx(-1.0)
    # a constant map has no ranking: NaN, as SciPy
    assert np.isnan(spearman(torch.ones(1, 4, 4), torch.rand(1, 4, 4)).item())


def test_minmax_constant_map_is_zero():
    out = minmax(torch.stack([torch.full((3, 3), 7.0), torch.arange(9.0).view(3, 3)]))
    assert (out[0] == 0).all() and out[1].min() == 0 and out[1].max() == 1


# ---- native-resolution entropy and stability ----------------------------------------------------

def test_native_entropy_one_hot_is_zero_and_uniform_is_max():
    """On the explainer's own grid a one-hot map has spatial entropy 0 and a uniform map 1; upsampled
    to the input, the same one-hot map spreads over many pixels and no longer scores 0."""
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 4] = 1.0
    uniform = torch.ones(1, 8, 8)
    h = sal.spatial_entropy(torch.cat([one_hot, uniform]))
    assert h[0].item() == pytest.approx(0.0, abs=1e-7) and h[1].item() == pytest.approx(1.0, abs=1e-6)
    assert sal.spatial_entropy(explain.upsample(one_hot, (64, 64))).item() > 0.3
    # histogram form: levels, not places. 64 distinct levels -> 1; a constant map -> one level -> 0;
    # a one-hot map -> two levels, H2(1/64) bits over log2(64)
    ramp = torch.arange(64.0).view(1, 8, 8)
    hist = sal.histogram_entropy(torch.cat([ramp, uniform, one_hot]))
    p = 1 / 64
    h2 = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    torch.testing.assert_close(hist, torch.tensor([1.0, 0.0, h2 / 6]))
    # 7x7 (the reference's grid): normalised by log2 49 = 5.6147 (the notebook's 5.614, rounded)
    assert sal.histogram_entropy(torch.arange(49.0).view(1, 7, 7)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(7, 7), (8, 8), (14, 14)])
def test_stability_ssim_is_skimage_defaults_on_uint8_maps(shape):
    """Explain2Me Measures/Stability/ssim.py: structural_similarity(cam_1, cam_2) on uint8 PNG maps."""
    rng = np.random.default_rng(shape[0])
    a = torch.from_numpy(rng.random((4, *shape))).float()
    b = (a + torch.from_numpy(rng.normal(0, 0.3, a.shape)).float()).relu()
    ours = sal.stability_ssim(a, b).numpy()
    qa, qb = sal.quantise(a).numpy().astype(np.uint8), sal.quantise(b).numpy().astype(np.uint8)
    ref = [structural_similarity(x, y) for x, y in zip(qa, qb)]  # defaults: data_range 255 from uint8
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # torchvision's to_pil_image truncates: pic.mul(255).byte()
    np.testing.assert_array_equal(qa, (sal.minmax(a.double()) * 255).numpy().astype(np.uint8))
    # 4x4 grids (32 px images): the largest odd window that fits
    assert sal.stability_ssim(a[:, :4, :4], a[:, :4, :4]).numpy() == pytest.approx(1.0)


def test_reference_protocol_defaults():
    """Defaults equal the reference code's (taisubmission23/Explain2Me @ 86318cc)."""
    s = config.validate({})["metrics"]["salience"]
    # Measures/Noise/noise-varying-intensities.py, line 146:
    #   levels = ['0.00', '0.01', '0.05', '0.10', '0.25', '0.50', '0.75', '1.0']
    assert s["noise_amounts"] == [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
    # Measures/Transformations/Transformations Example Notebook.ipynb, cell 16:
    #   cv2.copyMakeBorder(img, 16, 16, 16, 16, cv2.BORDER_REPLICATE) on im_size = 224 images
    assert s["shift_fraction"] == pytest.approx(16 / 224)
    shifts = [n for n, _, _ in sal.geometric_transforms(224, 224, s["shift_fraction"]) if n.startswith("shift")]
    assert sorted(shifts) == sorted(f"shift_x{dx}_y{dy}".replace("x16", "x+16").replace("y16", "y+16")
                                    for dx in (-16, 0, 16) for dy in (-16, 0, 16) if dx or dy)
    assert s["resolution"] == "native"  # entropy on the 7x7 CAM (Measures/Entropy), SSIM on small/ maps


# ---- transforms, noise and blur as functions ---------------------------------------------------

def test_shifts_match_reference_crops_and_invert():
    """Reference notebook: pad by d with edge replication, crop x{a}_y{b} at rows d-b, cols d-a."""
    h = w = 32
    img = torch.rand(1, 3, h, w)
    padded = np.pad(img[0].numpy(), ((0, 0), (8, 8), (8, 8)), mode="edge")
    shifts = [t for t in sal.geometric_transforms(h, w, 0.25) if t[0].startswith("shift")]
    assert len(shifts) == 8
    for name, forward, back in shifts:
        a, b = (int(v) for v in name[len("shift_x"):].split("_y"))
        np.testing.assert_array_equal(forward(img)[0].numpy(), padded[:, 8 - b:8 - b + h, 8 - a:8 - a + w], err_msg=name)
        m = img[:, 0]
        restored, (y0, y1, x0, x1) = back(forward(m[:, None])[:, 0])
        assert (y1 - y0) * (x1 - x0) == (h - 8 * abs(np.sign(b))) * (w - 8 * abs(np.sign(a)))
        torch.testing.assert_close(restored[:, y0:y1, x0:x1], m[:, y0:y1, x0:x1], rtol=0, atol=0)


def test_salt_and_pepper_statistics_and_nesting():
    x = torch.full((4, 3, 32, 32), 0.5)
    u = torch.rand((4, 2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(sal.salt_and_pepper(x, 0.0, u), x)
    noisy = sal.salt_and_pepper(x, 0.3, u)
    changed = noisy != 0.5
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert (noisy[changed] == 1).float().mean().item() == pytest.approx(0.5, abs=0.03)
    # per array element: channels of one pixel are noised independently (coloured noise)
    assert (changed.any(1) & ~changed.all(1)).any()
    assert (changed <= (sal.salt_and_pepper(x, 0.6, u) != 0.5)).all()  # nested amounts
    assert not (sal.salt_and_pepper(x, 1.0, u) == 0.5).any()


@pytest.mark.parametrize("sigma", [0.1, 0.4, 1.3, 3.0, 10.0])
def test_gaussian_blur_matches_scipy(sigma):
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma))  # mode reflect, truncate 4
    np.testing.assert_allclose(sal.gaussian_blur(x, sigma).numpy(), ref, atol=1e-10)


def _reference_degradation(image: np.ndarray, q: np.ndarray, scale: float) -> np.ndarray:
    """The reference loop: one full-image blur per distinct level, kept at that level's pixels."""
    out = np.empty_like(image)
    for level in np.unique(q):
        sigma = scale * (10 - level / 10) ** 4 / 1000
        blurred = ndimage.gaussian_filter(image, sigma=(0, sigma, sigma)) if sigma > 0 else image
        out[:, q == level] = blurred[:, q == level]
    return out


def test_guided_blur_with_101_levels_is_the_reference():
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.random((2, 3, 24, 24)))
    maps = torch.from_numpy(rng.random((2, 6, 6))).repeat_interleave(4, 1).repeat_interleave(4, 2)
    q = sal.salience_steps(maps, "background")
    assert q.min() >= 0 and q.max() == 100 and torch.equal(q, q.round())
    ours = sal.guided_blur(images, {"k": q}, 0.5, levels=101)["k"].numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], _reference_degradation(images[i].numpy(), q[i].numpy(), 0.5), atol=1e-9)
    coarse = sal.guided_blur(images, {"k": q}, 0.5, levels=11)["k"].numpy()
    assert 0 < np.abs(coarse - ours).mean() < 0.05  # an approximation, and a close one


def test_degradation_of_all_equal_salience_is_a_plain_blur():
    """A map with no preference: background mode blurs everything with the largest σ; object mode
    (inverted map, all salient-free) blurs nothing; a uniform level gives that level's plain blur."""
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    flat = torch.full((3, 32, 32), 0.7, dtype=torch.float64)
    scale = 32 / 224 * 2.0
    q = {mode: sal.salience_steps(flat, mode) for mode in ("background", "object")}
    out = sal.guided_blur(x, q, scale, levels=21)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 10 * scale, 10 * scale))
    np.testing.assert_allclose(out["background"].numpy(), ref, atol=1e-10)
    torch.testing.assert_close(out["object"], x)
    half = sal.guided_blur(x, {"k": torch.full((3, 32, 32), 50.0, dtype=torch.float64)}, scale, levels=21)["k"]
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 0.625 * scale, 0.625 * scale))
    np.testing.assert_allclose(half.numpy(), ref, atol=1e-10)


# ---- the families on a tiny real project --------------------------------------------------------

def pixel_mean(model, images, targets):
    """An equivariant explainer: the map is a fixed per-pixel function of the image."""
    return images.mean(1)


def off_centre_bump(model, images, targets):
    """A non-equivariant explainer: the same off-centre bump whatever the image."""
    h, w = images.shape[-2:]
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    bump = torch.exp(-((y - 0.3 * h) ** 2 + (x - 0.2 * w) ** 2) / (2 * (0.2 * h) ** 2))
    return bump.expand(len(images), h, w).clone()


TEST_EXPLAINERS = {"pixel_mean": pixel_mean, "off_centre_bump": off_centre_bump}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny prepared data, two trained seeds, saved test maps of every explainer (real and test-only)."""
    root = tmp_path_factory.mktemp("salience")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, fn in TEST_EXPLAINERS.items():  # registered for this module only
            mp.setitem(catalog.EXPLAINERS, name, {})
            mp.setitem(explain.EXPLAINERS._objects, name, fn)
        cfg = config.validate(copy.deepcopy(TINY))
        cfg["train"]["epochs"] = 1
        prepare("shapes", cfg["data"], paths.prepared("shapes"))
        split = read_split(paths.prepared("shapes"), "test")
        for seed in (0, 1):
            out = paths.model_dir("shapes", "standard", seed)
            train(cfg, paths.prepared("shapes"), "standard", seed, out, "cpu")
            model, _ = load_model(out / "model.pt")
            for method in ["gradcam", "cam", *TEST_EXPLAINERS]:
                arrays = explain.explain_split(model, split, method, "predicted", cfg["explain"]["batch_size"], "cpu")
                explain.save(paths.explanation("shapes", "standard", seed, method, "test"), arrays)
        yield cfg


def _ctx(cfg, methods, seeds=(0,), **salience):
    cfg = copy.deepcopy(cfg)
    cfg["explain"]["methods"] = list(methods)
    cfg["metrics"]["salience"].update(salience)
    return metrics.Context(cfg, "shapes", "standard", list(seeds))


def _values(frame, **where):
    sel = np.ones(len(frame), bool)
    for k, v in where.items():
        sel &= (frame[k] == v).to_numpy()
    return frame[sel].sort_values("image")["value"].to_numpy()


def test_feature_reuse_gives_the_same_maps_and_notices_changes(project):
    ctx = _ctx(project, ["gradcam"])
    plain = ctx.model(0)
    proxy = sal._ReuseFeatures(ctx.model(0))
    x = ctx.split("test").tensors(slice(0, 8))
    t = torch.arange(8) % 4
    with torch.no_grad():
        torch.testing.assert_close(proxy(x), plain(x))
    assert proxy.features(x) is proxy._feats  # reused, not recomputed
    for method in ("gradcam", "cam"):
        torch.testing.assert_close(explain.get(method)(proxy, x, t), explain.get(method)(plain, x, t))
    x.mul_(0.5)  # altered in place: the cached features no longer apply
    torch.testing.assert_close(explain.gradcam(proxy, x, t), explain.gradcam(plain, x, t))


def test_families_are_catalogued_and_registered():
    for name in ("noise", "equivariance", "stability", "degradation"):
        assert name in catalog.FAMILIES and callable(metrics.FAMILIES.get(name))
    defaults = config.validate({})["metrics"]["salience"]
    assert defaults["noise_amounts"][0] == 0 and defaults["target"] == "predicted"


def test_equivariance_of_equivariant_and_positional_explainers(project):
    frame = metrics.run("equivariance", _ctx(project, TEST_EXPLAINERS, shift_fraction=0.25))  # 8 px: the bump moves
    names = [t[0] for t in sal.geometric_transforms(32, 32, 0.25)]
    assert set(frame.setting) == set(names) and len(names) == 12
    for name in names:
        for metric in ("map_ssim", "map_spearman"):
            v = _values(frame, method="pixel_mean", setting=name, metric=metric)
            assert len(v) == 48 and v == pytest.approx(1.0, abs=1e-6), (name, metric)
            bump = _values(frame, method="off_centre_bump", setting=name, metric=metric)
            assert (bump < 0.95).all(), (name, metric, bump.max())


def test_entropy_family_reads_native_maps_unless_told(project):
    arrays = load_explanation(paths.explanation("shapes", "standard", 0, "gradcam", "test"))
    for res, key in (("native", "native"), ("input", "maps")):
        frame = metrics.run("entropy", _ctx(project, ["gradcam"], resolution=res))
        maps = torch.from_numpy(arrays[key]).float()
        np.testing.assert_allclose(_values(frame, metric="spatial_entropy"), sal.spatial_entropy(maps).numpy(), rtol=1e-6)
        np.testing.assert_allclose(_values(frame, metric="histogram_entropy"), sal.histogram_entropy(maps).numpy(), rtol=1e-6)


def test_stability_of_identical_and_of_independent_runs(project):
    root = paths.explanation("shapes", "standard", 0, "gradcam", "test").parents[2]
    shutil.copytree(root / "seed0", root / "seed7", dirs_exist_ok=True)  # a run identical to seed 0
    frame = metrics.run("stability", _ctx(project, ["gradcam", "cam"], seeds=(0, 1, 7)))
    assert set(frame.setting) == {"0-1", "0-7", "1-7"} and (frame.seed == -1).all()
    for method in ("gradcam", "cam"):
        same = _values(frame, method=method, setting="0-7", metric="map_ssim")
        assert len(same) == 48 and same == pytest.approx(1.0, abs=1e-6)
        rho = _values(frame, method=method, setting="0-7", metric="map_spearman")
        assert rho[~np.isnan(rho)] == pytest.approx(1.0, abs=1e-6)
        # NaN only for maps with no ranking at all (constant maps)
        maps = load_explanation(paths.explanation("shapes", "standard", 0, method, "test"))["maps"]
        np.testing.assert_array_equal(np.isnan(rho), np.ptp(maps.reshape(48, -1), axis=1) == 0)  # exact: a float16 std underflows
        assert np.nanmean(_values(frame, method=method, setting="0-1", metric="map_ssim")) < 0.999


def test_noise_amount_zero_changes_nothing_and_full_noise_does(project):
    ctx = _ctx(project, ["gradcam", "pixel_mean"], noise_amounts=[0.0, 1.0])
    frame = metrics.run("noise", ctx)
    model = ctx.model(0)
    split = ctx.split("test")
    with torch.no_grad():
        probs = model(split.tensors()).softmax(1)
    clean = probs.max(1).values.numpy()  # score of the clean predicted class (explain.target = predicted)
    np.testing.assert_allclose(_values(frame, metric="score", level=0.0), clean, rtol=1e-5)
    assert (_values(frame, metric="prediction_changed", level=0.0) == 0).all()
    for method in ("gradcam", "pixel_mean"):
        assert _values(frame, method=method, metric="map_ssim", level=0.0) == pytest.approx(1.0, abs=1e-4)
    assert _values(frame, method="pixel_mean", metric="map_ssim", level=1.0).max() < 0.5
    assert not np.allclose(_values(frame, metric="score", level=1.0), clean)
    # ood side: the tiny data has an ood split; both splits get per-image rows
    ood = frame[frame.setting == "ood"]
    assert set(ood.split) == {"test", "ood"} and {"max_softmax", "spatial_entropy", "histogram_entropy"} <= set(ood.metric)
    # seeded: a rerun gives the same rows
    again = metrics.run("noise", ctx)
    np.testing.assert_array_equal(frame.value.to_numpy(), again.value.to_numpy())


def test_degradation_family_rows(project):
    ctx = _ctx(project, ["gradcam"], degradation_strengths=[1.0, 3.0], degradation_levels=11, max_images=40, target="fixed")
    frame = metrics.run("degradation", ctx)
    assert set(frame.setting) == {"background", "object"} and set(frame.level) == {0.0, 1.0, 3.0}
    assert len(_values(frame, metric="score", setting="object", level=3.0)) == 40
    assert set(frame[frame.level == 0].metric) == {"score", "accuracy"}
    acc0 = _values(frame, metric="accuracy", setting="object", level=0.0)
    split = ctx.split("test")
    with torch.no_grad():
        pred = ctx.model(0)(split.tensors(slice(0, 40))).argmax(1).numpy()
    np.testing.assert_array_equal(acc0, pred == split.labels[:40])
    v = frame[frame.metric != "map_ssim"].value
    assert ((v >= 0) & (v <= 1)).all()


def test_figures_and_summary_table_draw_from_tidy_tables(project):
    """Every paper-E figure draws from the aggregated tables (and saved maps), never from a model."""
    from xaibench import figures
    from xaibench.io import save_csv

    cfg = copy.deepcopy(project)
    cfg["explain"]["methods"] = ["gradcam", "cam"]
    cfg["figures"]["formats"] = ["png"]
    cfg["train"]["variants"] = ["standard"]
    cfg["metrics"]["families"] = ["entropy", "noise", "equivariance", "stability", "degradation"]
    cfg["metrics"]["salience"].update(noise_amounts=[0.0, 0.5], degradation_strengths=[1.0], max_images=16)
    for family in cfg["metrics"]["families"]:
        seeds = [[0], [1]] if catalog.FAMILIES[family]["scope"] == "model" else [[0, 1]]
        frames = [metrics.run(family, metrics.Context(cfg, "shapes", "standard", s)) for s in seeds]
        save_csv(paths.metric_table("shapes", family), metrics.aggregate(frames))
        pd.concat(frames, ignore_index=True).to_parquet(paths.metric_table("shapes", family, "parquet"), index=False)
    names = [n for n in catalog.FIGURES if n.startswith("salience_")]
    assert set(names) <= set(figures.wanted(cfg))
    written = figures.draw(cfg, "shapes", names)
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in names)
    summary = pd.read_csv(paths.tables("shapes") / "salience_summary.csv")
    assert {"variant", "method", "measure", "mean", "sd", "n"} <= set(summary.columns)
    assert (summary[summary.measure.str.startswith("(d)")].n == 1).all()  # one pair of seeds
    assert (summary[~summary.measure.str.startswith("(d)")].n == 2).all()  # two seeds
    # summary.json applies the table's filters: same numbers (level 0 of noise left out, sd over pairs)
    cfg["datasets"] = ["shapes"]
    headline = metrics.summarize(cfg)["shapes"]["standard"]
    for spec in catalog.SALIENCE_SUMMARY:
        for _, row in summary[summary.measure == spec["label"]].iterrows():
            key = f"{spec['family']}/{spec['name']}" if row["method"] == "model" else \
                f"{spec['family']}/{row['method']}/{spec['name']}"
            got = headline[spec["split"]][key]
            assert got["mean"] == pytest.approx(row["mean"], abs=1e-4), key
            assert (got["sd"] is None) == pd.isna(row["sd"]), key
    noise = pd.read_csv(paths.metric_table("shapes", "noise"))
    positive = noise[(noise.metric == "map_ssim") & (noise.method == "gradcam") & (noise.level > 0)]
    assert headline["test"]["noise/gradcam/map_ssim"]["mean"] == pytest.approx(
        positive.groupby("seed").value.mean().mean(), abs=1e-4)
    assert "| measure | explainer | standard |" in (paths.tables("shapes") / "salience_summary.md").read_text()
