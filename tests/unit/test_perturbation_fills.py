"""The fills of paper D's perturbation test (black, mean, blur, ROAD) and the discrimination index:
ROAD's imputation against the authors' code as pytorch-grad-cam ships it, the blur against
torchvision, analytic cases, and the index on rows with a known answer."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur as tv_blur

from xaibench.metrics.discrimination import discrimination, discrimination_table, trivial_check
from xaibench.metrics.imputation import linear_imputation, noisy_linear_imputation
from xaibench.metrics.perturbation import FILLS, perturbation_curves, removal_counts, removal_rank

torch.set_num_threads(1)
road = pytest.importorskip("pytorch_grad_cam.metrics.road")


class Recorder(nn.Module):
    """A tiny real classifier (conv, pooling, linear) that keeps every batch it is asked about."""

    def __init__(self, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, classes))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.net(x)


def _images(b=3, size=24, seed=0):
    """Smooth random images in [0,1] (imputation is meant for natural, locally smooth images)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _removed_sets(size=24):
    """A block, a block at the border, scattered pixels and 90% removed."""
    g = torch.Generator().manual_seed(1)
    m = torch.zeros(4, size, size, dtype=torch.bool)
    m[0, 5:17, 3:15] = True
    m[1, :10, size - 9:] = True
    m[2] = torch.rand(size, size, generator=g) < 0.4
    m[3] = torch.rand(size, size, generator=g) < 0.9
    return m


def test_linear_imputation_equals_pytorch_grad_cam():
    x = _images(4)
    removed = _removed_sets()
    ours = linear_imputation(x, removed)
    imputer = road.NoisyLinearImputer(noise=0.0)
    for i in range(4):
        ref = imputer(x[i], (~removed[i]).float())      # its mask: 1 = kept
        torch.testing.assert_close(ours[i], ref, atol=1e-3, rtol=0)
    assert torch.equal(ours[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_linear_imputation_analytic_cases():
    size = 20
    yy, xx = torch.meshgrid(torch.arange(size.__float__()), torch.arange(size.__float__()), indexing="ij")
    ramp = (0.1 + 0.02 * yy + 0.03 * xx).expand(1, 3, size, size)   # harmonic: the symmetric 8-neighbour mean keeps it
    hole = torch.zeros(1, size, size, dtype=torch.bool)
    hole[0, 4:15, 6:16] = True                                      # inside, not touching the border
    torch.testing.assert_close(linear_imputation(ramp, hole), ramp, atol=1e-4, rtol=0)
    const = torch.full((2, 3, size, size), 0.4)
    every = torch.ones(2, size, size, dtype=torch.bool)
    every[0, 0, 0] = False                                          # one kept pixel fixes the whole image
    out = linear_imputation(const, every)
    torch.testing.assert_close(out[0], const[0], atol=1e-4, rtol=0)
    assert torch.equal(out[1], torch.zeros_like(out[1]))            # nothing kept: nothing to interpolate


def test_noise_only_on_removed_pixels_seeded_and_batch_free():
    x, removed = _images(4), _removed_sets()
    noisy = noisy_linear_imputation(x, removed, 0.05, torch.Generator().manual_seed(3))
    clean = linear_imputation(x, removed)
    kept = ~removed[:, None].expand_as(x)
    assert torch.equal(noisy[kept], x[kept])
    delta = (noisy - clean)[~kept]
    assert 0.04 < float(delta.std()) < 0.06 and abs(float(delta.mean())) < 0.01
    again = noisy_linear_imputation(x, removed, 0.05, torch.Generator().manual_seed(3))
    alone = noisy_linear_imputation(x[2:3], removed[2:3], 0.05, torch.Generator().manual_seed(3))
    assert torch.equal(noisy, again)
    torch.testing.assert_close(alone[0], noisy[2], atol=1e-4, rtol=0)


def _inputs_seen(fill, maps, fractions, **kw):
    model, x = Recorder(), _images(3)
    perturbation_curves(model, x, torch.zeros(3, dtype=torch.long), maps, fractions, baseline=fill,
                        dataset_mean=(0.2, 0.5, 0.7), **kw)
    return x, model.seen


def test_fills_reach_the_model_on_the_removed_pixels_only():
    maps = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4))
    fractions = [0.2, 0.6]
    rank = removal_rank(maps, 0)
    sigma = 0.125                                                   # 3 px at 24 px
    for fill in FILLS:
        x, seen = _inputs_seen(fill, maps, fractions, blur_sigma=sigma, road_noise=0.0)
        for k, fed in zip(removal_counts(fractions, 24 * 24).tolist(), seen):
            removed = (rank < k)[:, None].expand_as(x)
            assert torch.equal(fed[~removed], x[~removed])
            if fill == "blur":
                r = int(4 * sigma * 24 + 0.5)
                want = tv_blur(x, [2 * r + 1] * 2, [sigma * 24] * 2)
            elif fill == "road":
                imputer = road.NoisyLinearImputer(noise=0.0)
                want = torch.stack([imputer(x[i], (~removed[i, 0]).float()) for i in range(3)])
            else:
                want = {"black": torch.zeros(1, 3, 1, 1), "mean": torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1)}[fill]
                want = want.expand_as(x)
            torch.testing.assert_close(fed[removed], want[removed], atol=1e-3 if fill == "road" else 1e-5, rtol=0)


@pytest.mark.parametrize("fill", FILLS)
def test_removing_no_pixel_changes_nothing(fill):
    maps = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(5))
    x, seen = _inputs_seen(fill, maps, [0.0005, 0.001], road_noise=0.05)  # floor(p · 576) = 0 pixels
    assert all(torch.equal(fed, x) for fed in seen)


def test_fill_errors_name_the_choice():
    x, y, maps = _images(2), torch.zeros(2, dtype=torch.long), torch.rand(2, 24, 24)
    with pytest.raises(ValueError, match="black, mean, blur, road"):
        perturbation_curves(Recorder(), x, y, maps, baseline="white")


# --------------------------------------------------------------------------- discrimination
def _rows(shift, seeds=(0, 1, 2), n=200, sd=0.2, seed=0):
    """Per-image rows of a chance line and an oracle shifted by `shift` (a known answer)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seeds:
        chance = rng.normal(0.5, sd, n)
        oracle = chance + shift + rng.normal(0, sd, n)
        for method, v in (("baseline_random", chance), ("baseline_oracle", oracle)):
            out.append(pd.DataFrame({"seed": s, "method": method, "split": "test", "metric": "score", "setting": "",
                                     "level": np.nan, "image": np.arange(n), "value": v}))
    return pd.concat(out, ignore_index=True)


def test_discrimination_finds_a_planted_shift_and_orients_it():
    rows = _rows(0.1)
    up = discrimination(rows, "higher")
    assert up["low"] < 0.1 < up["high"] and up["low"] > 0 and len(up["per_seed"]) == 3
    down = discrimination(rows, "lower")
    assert down["index"] == pytest.approx(-up["index"]) and down["high"] < 0
    assert discrimination(rows, "higher") == up                       # seeded: same rows, same interval
    with pytest.raises(ValueError, match="direction"):
        discrimination(rows, "none")


def test_discrimination_under_a_null_covers_zero_at_about_the_nominal_rate():
    covered = [discrimination(_rows(0.0, n=60, seed=k), "higher", n_boot=400)
               for k in range(40)]
    rate = np.mean([r["low"] <= 0 <= r["high"] for r in covered])
    assert 0.85 <= rate <= 1.0


def test_discrimination_table_and_trivial_check():
    rows = _rows(0.1)
    rows = pd.concat([rows, rows.assign(metric="ignored")], ignore_index=True)
    table = discrimination_table(rows, {"score": "higher", "ignored": "none"})
    assert list(table.metric) == ["score"] and table["index"].iloc[0] > 0
    trivial = rows[rows.method == "baseline_random"].assign(method="baseline_uniform", value=0.9)
    explainers = rows[rows.method == "baseline_random"].assign(method="some_explainer", value=0.6)
    both = pd.concat([rows, trivial, explainers], ignore_index=True)
    assert trivial_check(both, "higher")["reaches"].item()            # a constant map wins: uninformative
    assert not trivial_check(both, "lower")["reaches"].item()


def test_cli_prints_the_index_and_names_a_bad_file(tmp_path, capsys):
    from xaibench.cli import main
    rows = _rows(0.1).assign(metric="negative_auc")
    path = tmp_path / "seed0.parquet"
    rows.to_parquet(path)
    out = tmp_path / "index.csv"
    assert main(["discrimination", "--family", "perturbation", "--out", str(out), str(path)]) == 0
    assert "negative_auc" in capsys.readouterr().out
    saved = pd.read_csv(out)
    assert saved["index"].item() == pytest.approx(discrimination(rows, "higher")["index"])
    assert main(["discrimination", "--family", "perturbation", str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.parquet" in err[0]


def test_discrimination_table_reports_the_strongest_trivial_map():
    rows = _rows(0.1)
    chance = rows[rows.method == "baseline_random"]
    extra = [chance.assign(method="baseline_uniform", value=0.55), chance.assign(method="baseline_gaussian", value=0.7),
             chance.assign(method="some_explainer", value=0.6)]
    table = discrimination_table(pd.concat([rows, *extra], ignore_index=True), {"score": "higher"})
    row = table.iloc[0]
    assert row["trivial"] == "baseline_gaussian" and row["reaches"] and row["margin"] == pytest.approx(-0.1)
    assert "trivial" not in discrimination_table(rows, {"score": "higher"})      # no explainer: index only
