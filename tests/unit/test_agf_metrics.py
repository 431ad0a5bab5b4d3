"""Paper D's perturbation and segmentation tests: analytic cases on constructed models and maps,
agreement with scikit-learn. (Quantus has no metric with the same definition: its PixelFlipping
records the class score cumulatively to 100% with a per-image-minimum "black", not top-1 accuracy
at 10..90%; its localisation metrics have no thresholded pixel accuracy, mIoU or mAP.)"""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, jaccard_score
from torch import nn

from xaibench.metrics.perturbation import FRACTIONS, auc, perturbation_curves, removal_counts
from xaibench.metrics.segmentation import pooled_scores, segmentation_counts, segmentation_scores

torch.set_num_threads(1)


class RegionEvidence(nn.Module):
    """A real two-class model whose class-1 evidence is the mean image value over one region."""

    def __init__(self, region: torch.Tensor, threshold: float):
        super().__init__()
        self.register_buffer("region", region.float())
        self.threshold, self.calls = threshold, 0

    def forward(self, x):
        self.calls += 1
        evidence = (x * self.region).sum((1, 2, 3)) / (x.shape[1] * self.region.sum())
        return torch.stack([torch.zeros_like(evidence), evidence - self.threshold], 1)


def _object_images(b=6, size=16):
    g = torch.Generator().manual_seed(0)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[4:12, 2:10] = True                                  # a quarter of the image
    x = torch.where(region, 1.0, torch.rand(b, 3, size, size, generator=g))
    return region, x


def test_decisive_pixel_is_removed_first():
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[5, 7] = True
    model = RegionEvidence(region, 0.5)
    x, y = torch.full((3, 3, 16, 16), 0.9), torch.ones(3, dtype=torch.long)
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps[:, 5, 7] = 2.0                                        # ranks the decisive pixel first
    pos = perturbation_curves(model, x, y, maps, order="positive")
    neg = perturbation_curves(model, x, y, maps, order="negative")
    assert pos.shape == (3, 9) and not pos.any()               # flipped at the first step already
    assert neg.all()                                           # last-ranked pixel never reached by 90%
    assert torch.allclose(auc(FRACTIONS, pos), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(auc(FRACTIONS, neg), torch.full((3,), 0.8, dtype=torch.float64))


def test_oracle_curves_are_exact_and_beat_a_random_map():
    region, x = _object_images()
    model, y, r, n = RegionEvidence(region, 0.6), torch.ones(6, dtype=torch.long), int(region.sum()), region.numel()
    oracle = region.float().expand(6, -1, -1)
    k = removal_counts(FRACTIONS, n)
    # positive: the object goes first; evidence (r - k)/r must stay above 0.6
    expect_pos = ((r - k.clamp(max=r)) / r > 0.6).expand(6, -1)
    # negative: background first, then the object
    expect_neg = ((r - (k - (n - r)).clamp(min=0)) / r > 0.6).expand(6, -1)
    model.calls = 0
    pos = perturbation_curves(model, x, y, oracle, order="positive")
    assert model.calls == len(FRACTIONS)                       # one batched forward pass per step
    neg = perturbation_curves(model, x, y, oracle, order="negative")
    assert torch.equal(pos, expect_pos) and torch.equal(neg, expect_neg)
    rand = torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(3))
    pos_r = perturbation_curves(model, x, y, rand, order="positive")
    neg_r = perturbation_curves(model, x, y, rand, order="negative")
    assert (auc(FRACTIONS, pos) < auc(FRACTIONS, pos_r)).all()  # positive: lower is better
    assert (auc(FRACTIONS, neg) > auc(FRACTIONS, neg_r)).all()  # negative: higher is better


def test_baseline_batching_and_seed():
    region, x = _object_images()
    model, y = RegionEvidence(region, 0.6), torch.ones(6, dtype=torch.long)
    oracle = region.float().expand(6, -1, -1)                  # many ties: the tie-break matters
    # the object is already all ones: a baseline of ones removes nothing the model uses
    assert perturbation_curves(model, x, y, oracle, baseline="mean", dataset_mean=(1.0, 1.0, 1.0)).all()
    ties = torch.zeros(6, 16, 16)
    full = perturbation_curves(model, x, y, ties, seed=4)
    one = torch.cat([perturbation_curves(model, x[i:i + 1], y[i:i + 1], ties[i:i + 1], seed=4) for i in range(6)])
    assert torch.equal(full, one) and torch.equal(full, perturbation_curves(model, x, y, ties, seed=4))
    with pytest.raises(ValueError, match="dataset_mean"):
        perturbation_curves(model, x, y, oracle, baseline="mean")
    with pytest.raises(ValueError, match="order"):
        perturbation_curves(model, x, y, oracle, order="both")
    with pytest.raises(ValueError, match="maps"):
        perturbation_curves(model, x, y, oracle[:, :8])
    with pytest.raises(ValueError, match="fractions"):
        perturbation_curves(model, x, y, oracle, fractions=[0.0, 0.5])


def test_auc_of_constant_and_linear_curves():
    f = [0.1, 0.3, 0.5, 0.9]
    const = torch.full((2, 4), 0.7)
    torch.testing.assert_close(auc(f, const), torch.full((2,), 0.7 * 0.8, dtype=torch.float64))
    torch.testing.assert_close(auc(f, const, normalise=True), torch.full((2,), 0.7, dtype=torch.float64))
    lin = torch.tensor(f)                                      # y = x: area (0.9² - 0.1²)/2
    torch.testing.assert_close(auc(f, lin), torch.tensor(0.4, dtype=torch.float64))
    with pytest.raises(ValueError, match="increasing"):
        auc([0.5, 0.1], torch.ones(2))


def _masks(b=5, size=32):
    m = torch.zeros(b, size, size, dtype=torch.bool)
    for i in range(b):
        m[i, 4 + i:20 + i, 6:14 + 2 * i] = True
    return m


def test_segmentation_oracle_uniform_and_inverted():
    masks = _masks()
    f = masks.flatten(1).float().mean(1)
    for ap in ("binary", "continuous"):
        oracle = segmentation_scores(masks.float() * 3 + 1, masks, ap=ap)
        for name in ("pixel_accuracy", "miou", "map"):
            torch.testing.assert_close(oracle[name], torch.ones(5))
        uniform = segmentation_scores(torch.full(masks.shape, 0.3), masks, ap=ap)  # no foreground at all
        torch.testing.assert_close(uniform["pixel_accuracy"], 1 - f)
        torch.testing.assert_close(uniform["miou"], (1 - f) / 2)
        torch.testing.assert_close(uniform["map"], (1 - f) ** 2 + f / 2)
    inverted = segmentation_scores((~masks).float(), masks)
    torch.testing.assert_close(inverted["pixel_accuracy"], torch.zeros(5))
    torch.testing.assert_close(inverted["miou"], torch.zeros(5))


def test_segmentation_chance_agrees_with_sklearn():
    masks = _masks()
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.standard_normal(masks.shape)).float()
    for threshold in ("mean", "zero", 0.5):
        s = segmentation_scores(maps, masks, threshold=threshold)
        sc = segmentation_scores(maps, masks, threshold=threshold, ap="continuous")
        thr = {"mean": maps.flatten(1).mean(1).view(-1, 1, 1), "zero": 0.0, 0.5: 0.5}[threshold]
        pred = (maps > thr).numpy()
        lo, hi = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
        r = (maps - lo) / (hi - lo)
        for i in range(5):
            gt, p = masks[i].numpy().ravel(), pred[i].ravel()
            onehot = np.concatenate([~gt, gt]).astype(int)
            assert s["pixel_accuracy"][i] == pytest.approx(accuracy_score(gt, p), abs=1e-6)
            assert s["miou"][i] == pytest.approx(jaccard_score(gt, p, average="macro"), abs=1e-6)
            assert s["map"][i] == pytest.approx(average_precision_score(onehot, np.concatenate([~p, p])), abs=1e-6)
            ri = r[i].numpy().ravel()
            ap_c = average_precision_score(onehot, np.concatenate([1 - ri, ri]))
            assert sc["map"][i] == pytest.approx(ap_c, abs=1e-5)
        a = s["pixel_accuracy"].double()                      # the reference's binarised mAP is a function of accuracy
        torch.testing.assert_close(s["map"].double(), a ** 2 + (1 - a) / 2, atol=1e-6, rtol=0)
    chance = segmentation_scores(maps, masks)                 # a chance map: about half the pixels right
    assert (chance["pixel_accuracy"] - 0.5).abs().max() < 0.05 and (chance["miou"] < 0.5).all()
    pooled = pooled_scores(segmentation_counts(maps, masks))
    gt_all, p_all = masks.numpy().ravel(), (maps > maps.flatten(1).mean(1).view(-1, 1, 1)).numpy().ravel()
    assert pooled["pixel_accuracy"] == pytest.approx(accuracy_score(gt_all, p_all))
    assert pooled["miou"] == pytest.approx(jaccard_score(gt_all, p_all, average="macro"))
    with pytest.raises(ValueError, match="threshold"):
        segmentation_scores(maps, masks, threshold="median")
    with pytest.raises(ValueError, match="bool masks"):
        segmentation_scores(maps, masks.float())
