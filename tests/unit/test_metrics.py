"""Metrics: analytic cases, and agreement with scikit-learn, scikit-image and Quantus."""
import math

import numpy as np
import pytest
import torch

from xaibench.tidy import aggregate, rows
from xaibench.metrics.localization import (baseline_maps, box_masks, cue_mass, pixel_average_precision, pointing_game,
                                           relevance_mass)
from xaibench.metrics.salience import histogram_entropy, spatial_entropy


def test_spatial_entropy_analytic():
    uniform = torch.ones(1, 8, 8)
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 4] = 5.0
    two = torch.zeros(1, 8, 8)
    two[0, 0, :2] = 1.0
    h = spatial_entropy(torch.cat([uniform, one_hot, two]))
    torch.testing.assert_close(h, torch.tensor([1.0, 0.0, math.log(2) / math.log(64)]))
    assert spatial_entropy(torch.zeros(1, 4, 4)).item() == 1.0  # no preference at all


def test_histogram_entropy_matches_skimage_and_hand_example():
    from skimage.measure import shannon_entropy

    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((5, 8, 8))).float()
    ours = histogram_entropy(maps)
    for m, h in zip(maps.numpy(), ours):
        q = np.floor((m - m.min()) / (m.max() - m.min()) * 255).astype(np.uint8)
        assert h.item() == pytest.approx(shannon_entropy(q) / math.log2(64), abs=1e-5)
    # hand-computed: half the cells at 0 and half at 255 -> 1 bit; normalised by log2(4 cells) = 2 bits
    half = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert histogram_entropy(half).item() == pytest.approx(0.5)
    # the histogram ignores *where* the relevance is: a shuffled map has the same entropy
    perm = torch.randperm(64)
    shuffled = maps.flatten(1)[:, perm].view_as(maps)
    torch.testing.assert_close(histogram_entropy(shuffled), ours)


def test_localization_analytic():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:5, 2:5] = True
    inside = mask.float()
    outside = (~mask).float()
    assert relevance_mass(inside, mask).item() == 1.0 and pointing_game(inside, mask).item() == 1.0
    assert relevance_mass(outside, mask).item() == 0.0 and pointing_game(outside, mask).item() == 0.0
    assert pixel_average_precision(inside, mask).item() == 1.0


def _blob_masks():
    """Masks of different sizes and places on 16x16: a 4x4 square in a corner, a 6x5 block, a 3x8 bar."""
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 0:4, 0:4] = True
    masks[1, 6:12, 5:10] = True
    masks[2, 10:13, 8:16] = True
    return masks


def test_baseline_maps_analytic_values():
    masks = _blob_masks()
    area = masks.flatten(1).float().mean(1)
    uniform = baseline_maps("uniform", masks)
    torch.testing.assert_close(relevance_mass(uniform, masks), area)
    torch.testing.assert_close(pixel_average_precision(uniform, masks), area)
    assert (pointing_game(uniform, masks) == 1).all()  # every pixel ties at the max; any tie inside counts
    oracle = baseline_maps("oracle", masks)
    for fn in (pointing_game, relevance_mass, pixel_average_precision):
        assert (fn(oracle, masks) == 1).all()
    gauss = baseline_maps("gaussian", masks, sigma=0.25)
    # the centred Gaussian peaks at the 4 centre pixels (7..8, 7..8): a hit only for the mask covering them
    torch.testing.assert_close(pointing_game(gauss, masks), torch.tensor([0.0, 1.0, 0.0]))
    assert relevance_mass(gauss, masks)[1] > area[1] > relevance_mass(gauss, masks)[0]
    rand = baseline_maps("random", masks.repeat(200, 1, 1), seed=3)
    torch.testing.assert_close(rand, baseline_maps("random", masks.repeat(200, 1, 1), seed=3))  # seeded
    hits = pointing_game(rand, masks.repeat(200, 1, 1)).view(200, 3).mean(0)
    torch.testing.assert_close(hits, area, atol=0.07, rtol=0)  # chance = the mask's area fraction
    with pytest.raises(ValueError, match="unknown baseline map 'flat'; choose from: uniform"):
        baseline_maps("flat", masks)


def test_cue_mass_on_the_patch_box():
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 0, 0]])
    cues = box_masks(boxes, 16, 16)
    expect = torch.zeros(3, 16, 16, dtype=torch.bool)
    expect[:2, :4, :4] = True
    assert torch.equal(cues, expect)
    on_patch = cues.float() * 3.0
    on_patch[2, 5, 5] = 1.0
    off_patch = torch.zeros(3, 16, 16)
    off_patch[:, 8:, 8:] = 1.0
    half = on_patch + off_patch * (16 * 3 / 64)  # as much relevance off the patch as on it
    assert cue_mass(on_patch, cues)[:2].tolist() == [1.0, 1.0] and cue_mass(on_patch, cues)[2].isnan()
    assert cue_mass(off_patch, cues)[:2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(cue_mass(half, cues)[:2], torch.tensor([0.5, 0.5]))


def test_pixel_ap_matches_sklearn_including_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    maps = rng.integers(0, 6, (6, 10, 10)).astype(np.float32)  # many ties
    masks = rng.random((6, 10, 10)) > 0.7
    ours = pixel_average_precision(torch.from_numpy(maps), torch.from_numpy(masks)).numpy()
    ref = [average_precision_score(m.ravel(), a.ravel()) for a, m in zip(maps, masks)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_localization_agrees_with_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(2)
    a = rng.random((8, 1, 12, 12)).astype(np.float32)
    a[:4] **= 4
    s = np.zeros((8, 1, 12, 12), np.float32)
    s[:, :, 3:8, 2:9] = 1
    x = rng.random((8, 3, 12, 12)).astype(np.float32)
    y = np.zeros(8, np.int64)
    kw = dict(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
    mass_q = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False)(**kw)
    point_q = quantus.PointingGame(disable_warnings=True, display_progressbar=False)(**kw)
    maps, masks = torch.from_numpy(a[:, 0]), torch.from_numpy(s[:, 0] > 0)
    np.testing.assert_allclose(relevance_mass(maps, masks).numpy(), mass_q, atol=1e-5)
    np.testing.assert_allclose(pointing_game(maps, masks).numpy(), np.asarray(point_q, float))
    complexity_q = quantus.Complexity(disable_warnings=True, display_progressbar=False, normalise=False)(**kw)
    np.testing.assert_allclose(spatial_entropy(maps).numpy() * math.log(144), complexity_q, rtol=1e-4)


def test_aggregate_is_tidy_mean_over_images():
    frame = rows("gradcam", "test", "relevance_mass", [0.2, 0.4])
    frame.insert(0, "dataset", "shapes"), frame.insert(1, "variant", "standard"), frame.insert(2, "seed", 0)
    table = aggregate([frame])
    assert list(table.columns) == ["dataset", "variant", "seed", "method", "split", "metric", "setting", "level", "value"]
    assert len(table) == 1 and table.value.iloc[0] == pytest.approx(0.3)


def test_localization_family_rows_baselines_and_cue_subsets(tiny_project, tiny_cfg, monkeypatch):
    """Constructed explanation files: a map equal to the object mask and one equal to the cue patch.
    The family writes both beside the baseline maps, on test and on its cue subsets."""
    from xaibench import catalog, metrics, paths
    from xaibench.data import read_split
    from xaibench.explain import save
    from xaibench.figures import localization_table

    test = read_split(paths.prepared("shapes"), "test")
    patch = box_masks(torch.from_numpy(test.extras["cue_box"]), 32, 32).float().numpy()
    signed = test.masks / 255.0 - 2 * patch  # a signed map (as gxi, agf): evidence on the object, against on the patch
    for method, maps in {"maskmap": test.masks / 255.0, "cuemap": patch, "signedmap": signed}.items():
        monkeypatch.setitem(catalog.EXPLAINERS, method, {})  # constructed maps, listed for this test only
        save(paths.explanation("shapes", "standard", 0, method, "test"),
             {"maps": maps.astype(np.float16), "targets": test.labels, "predictions": test.labels})
    cfg = dict(tiny_cfg, explain=dict(tiny_cfg["explain"], methods=["maskmap", "cuemap", "signedmap"]))
    frame = metrics.run("localization", metrics.Context(cfg, "shapes", "standard", [0]))
    mean = frame.groupby(["method", "split", "metric"])["value"].mean()
    conflict = test.extras["cue"] != test.labels
    assert set(frame.split) == {"test", "test_cue_agreeing", "test_cue_conflicting"}
    assert (frame[frame.split == "test_cue_conflicting"].groupby(["method", "metric"]).size() == conflict.sum()).all()
    for method in ("maskmap", "baseline_oracle", "signedmap"):  # signed maps: scored on their positive part
        for metric in ("pointing_game", "relevance_mass", "pixel_ap"):
            assert mean[method, "test", metric] == pytest.approx(1.0)
        assert mean[method, "test", "cue_mass"] == 0.0  # objects never lie on the patch
    assert mean["cuemap", "test", "cue_mass"] == pytest.approx(1.0) and mean["cuemap", "test", "relevance_mass"] == 0
    area = (test.masks > 127).mean()
    assert mean["baseline_uniform", "test", "relevance_mass"] == pytest.approx(area, rel=1e-5)
    assert {f"baseline_{k}" for k in ("uniform", "gaussian", "random", "oracle")} <= set(frame.method)
    # the table pools baselines over models (variant "—") and keeps the explainers per variant
    out = paths.metric_table("shapes", "localization")
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics.aggregate([frame]).to_csv(out, index=False)
    stats = localization_table("shapes")
    assert set(stats[stats.method.str.startswith("baseline_")].variant) == {"—"}
    assert set(stats[~stats.method.str.startswith("baseline_")].variant) == {"standard"}
