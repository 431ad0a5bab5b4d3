"""Prototype generation, the feature-visualisation baselines, and the activation-path / cue metrics."""
import copy

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from xaibench import config
from xaibench.data import shapes
from xaibench.featviz import (FourierImage, draw_grid, generate, generate_prototypes, high_frequency,
                              neutral_baseline, probability_variance, random_affine)
from xaibench.featviz.param import frequency_scale
from xaibench.metrics import activations as act
from xaibench.models import create_model

K, SIZE = 4, 32
FAST = {"prototype": dict(steps=40, baseline_steps=60), "fourier_fv": dict(steps=40), "pixel_ascent": dict(steps=40)}


@pytest.fixture(scope="module")
def data():
    cfg = config.validate(copy.deepcopy(TINY))["data"]["shapes"]
    tr = shapes.generate_split(cfg, SIZE, 0, "train", 256)
    te = shapes.generate_split(cfg, SIZE, 0, "test", 64)
    to = lambda a: torch.from_numpy(a["images"]).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    return to(tr), torch.from_numpy(tr["labels"]), to(te), torch.from_numpy(te["labels"]), cfg


@pytest.fixture(scope="module")
def trained(data):
    """small_cnn trained for 300 steps: real, good enough that classes have distinct logits."""
    torch.set_num_threads(1)
    x, y = data[0], data[1]
    torch.manual_seed(0)
    model = create_model("small_cnn", K, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(len(x), (32,), generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_stage1_drives_probabilities_to_uniform(trained):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = probability_variance(trained(neutral_baseline(trained, K, SIZE, g, steps=0)))
    after_img = neutral_baseline(trained, K, SIZE, g, steps=150)
    with torch.no_grad():
        probs = trained(after_img).softmax(1)
    after = probability_variance(probs.log())
    assert after.item() < 0.05 * before.item()
    assert (probs - 1 / K).abs().max().item() < 0.05
    assert probability_variance(torch.zeros(3, K)).abs().max().item() == 0


@pytest.mark.parametrize("method", ["prototype", "fourier_fv", "pixel_ascent"])
def test_stage2_images_are_classified_as_their_class(trained, method):
    images = generate(trained, K, method, SIZE, seed=0, **FAST[method])
    assert images.shape == (K, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        logits = trained(images)
    assert logits.argmax(1).tolist() == list(range(K))
    assert trained.training is False and all(p.requires_grad for p in trained.parameters())


def test_prototype_raises_target_logit_from_the_neutral_start(trained):
    start = neutral_baseline(trained, K, SIZE, torch.Generator().manual_seed(0), steps=60)
    proto = generate(trained, K, "prototype", SIZE, 0, **FAST["prototype"])
    with torch.no_grad():
        gain = trained(proto).diagonal() - trained(start).expand(K, -1).diagonal()
    assert (gain > 0).all()


def test_high_frequency_penalty_smooths(trained):
    rough = generate(trained, K, "prototype", SIZE, 0, steps=40, baseline_steps=0, hf_weight=0.0)
    smooth = generate(trained, K, "prototype", SIZE, 0, steps=40, baseline_steps=0, hf_weight=50.0)
    assert high_frequency(smooth).mean() < high_frequency(rough).mean()


def test_seeded_and_deterministic(trained):
    a = generate(trained, K, "fourier_fv", SIZE, 3, steps=5)
    b = generate(trained, K, "fourier_fv", SIZE, 3, steps=5)
    c = generate(trained, K, "fourier_fv", SIZE, 4, steps=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    p1 = generate(trained, K, "prototype", SIZE, 3, steps=5, baseline_steps=5)
    assert torch.equal(p1, generate(trained, K, "prototype", SIZE, 3, steps=5, baseline_steps=5))


def test_bad_options_raise_one_clear_error(trained):
    with pytest.raises(ValueError, match="unknown featviz method 'nope'; choose from: fourier_fv, pixel_ascent, prototype"):
        generate(trained, K, "nope", SIZE, 0)
    with pytest.raises(ValueError, match="unknown option.*hf_wieght"):
        generate(trained, K, "prototype", SIZE, 0, hf_wieght=1)
    with pytest.raises(ValueError, match="baseline_init"):
        generate(trained, K, "prototype", SIZE, 0, baseline_init=2.0, steps=1)
    with pytest.raises(ValueError, match="hf_norm"):
        high_frequency(torch.zeros(1, 3, 4, 4), "l3")


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_parameterisation_round_trips(size, decorrelate):
    f = FourierImage(2, size, decorrelate=decorrelate, generator=torch.Generator().manual_seed(0))
    x = f()
    assert x.shape == (2, 3, size, size) and 0 < x.min() and x.max() < 1
    assert (x - 0.5).abs().max() < 0.05  # sd 0.01 spectrum: near-grey noise, as Lucent's start
    target = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    torch.testing.assert_close(f.set_image(target)(), target, atol=1e-5, rtol=0)
    scale = frequency_scale(8, 8)
    assert scale[0, 0] == 8 and scale[0, 1] == pytest.approx(8) and scale[4, 4] == pytest.approx(1 / (0.5 * 2 ** 0.5))


def test_random_affine_identity_and_fill():
    x = torch.rand(3, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_affine(x, g, jitters=(), scales=(1.0,), angles=(0,)), x, atol=1e-6, rtol=0)
    shrunk = random_affine(torch.zeros(1, 3, 16, 16), g, jitters=(), scales=(0.5,), angles=(0,))
    assert shrunk[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5] and shrunk[0, :, 8, 8].abs().max() == 0
    moved = random_affine(x, g, jitters=(4 / 16,), scales=(1.0,), angles=(0,))
    assert not torch.equal(moved, x)


def test_high_frequency_analytic():
    assert high_frequency(torch.full((2, 3, 8, 8), 0.3)).abs().max() == 0
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(1, 3, 8, 8)
    assert high_frequency(checker).item() == pytest.approx(2.0)
    assert high_frequency(checker * 0.5, "l2").item() == pytest.approx(0.5)


# ---- activation paths ------------------------------------------------------------------------

def test_layers_are_block_outputs(trained):
    names = [n for n, _ in act.layers(trained)]
    assert names == ["trunk.2", "trunk.6", "trunk.10", "trunk.14"]  # the 4 conv-bn-relu blocks of small_cnn
    acts = act.record(trained, torch.rand(3, 3, SIZE, SIZE))
    assert list(acts) == names + ["logits"] and acts["trunk.2"].shape == (3, 8 * SIZE * SIZE)
    with pytest.raises(ValueError, match="trunk"):
        act.layers(torch.nn.Linear(2, 2))


def test_image_identical_to_the_class_mean_source_scores_perfectly(trained, data):
    x = data[2][:1]
    natural = torch.cat([x, x, data[2][1:9]])
    labels = torch.tensor([0, 0] + [1] * 4 + [2] * 4)
    out = act.activation_paths(trained, x, torch.tensor([0]), natural, labels, K)
    torch.testing.assert_close(out["spearman"][:, 0], torch.ones(5))
    torch.testing.assert_close(out["l1"][:, 0], torch.zeros(5))
    # the two copies: each one's leave-one-out mean is the other copy, so they too are perfect
    torch.testing.assert_close(out["natural_l1"][:, :2], torch.zeros(5, 2))


def test_leave_one_out_excludes_self(trained, data):
    nat, lab = data[2][:6], torch.tensor([0, 0, 0, 1, 1, 1])
    out = act.activation_paths(trained, nat[:1], torch.tensor([0]), nat, lab, K)
    acts = act.record(trained, nat)
    for li, name in enumerate(out["layers"]):
        others = acts[name][1:3].mean(0, keepdim=True)  # image 0's class mates, without image 0
        sp, l1 = act.path_similarity(acts[name][:1], others)
        assert out["natural_l1"][li, 0].item() == pytest.approx(l1.item(), rel=1e-5)
        assert out["natural_spearman"][li, 0].item() == pytest.approx(sp.item(), abs=1e-6)
    sums, counts = act.class_sums({"a": torch.tensor([[1.0], [3.0], [10.0]])}, torch.tensor([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="at least 2"):
        act.leave_one_out_means(torch.tensor([[10.0]]), torch.tensor([1]), sums["a"], counts)
    loo = act.leave_one_out_means(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0]), sums["a"], counts)
    assert loo.flatten().tolist() == [3.0, 1.0]


def test_natural_images_are_closer_to_their_own_class_mean(trained, data):
    nat, lab = data[2], data[3]
    acts = act.record(trained, nat)
    sums, counts = act.class_sums(acts, lab, K)
    wrong = (lab + 1) % K
    for name in ("trunk.14", "logits"):
        own, _ = act.path_similarity(acts[name], act.leave_one_out_means(acts[name], lab, sums[name], counts))
        other, _ = act.path_similarity(acts[name], (sums[name][wrong] / counts[wrong, None]).float())
        assert own.nanmean() > other.nanmean()


def test_share_closer_and_reference_analytic():
    scores = torch.tensor([[0.1, 0.5, 0.9, 0.2], [0.3, 0.6, 0.0, 0.4]])  # [L=2, N=4]
    labels = torch.tensor([0, 0, 0, 1])
    ref = act.natural_reference(scores, labels, 2, 0.5, higher_is_closer=True)
    torch.testing.assert_close(ref[:, 0], torch.tensor([0.5, 0.3]))
    strict = act.natural_reference(scores, labels, 2, 1.0, higher_is_closer=True)
    torch.testing.assert_close(strict[:, 0], torch.tensor([0.9, 0.6]))
    l1_strict = act.natural_reference(scores, labels, 2, 1.0, higher_is_closer=False)
    torch.testing.assert_close(l1_strict[:, 0], torch.tensor([0.1, 0.0]))
    gen = torch.tensor([[0.7], [0.1]])
    assert act.share_closer(gen, torch.tensor([0]), ref, True).item() == 0.5
    assert act.share_closer(gen, torch.tensor([0]), ref, False).item() == 0.5
    assert act.share_closer(torch.tensor([[1.0], [1.0]]), torch.tensor([0]), strict, True).item() == 1.0


# ---- planted cue ----------------------------------------------------------------------------

def test_cue_strength_high_for_the_cue_low_without(data):
    px = act.cue_pixels(SIZE, data[4]["cue_size"])
    colours = torch.as_tensor(shapes.CUE_COLOURS[:K], dtype=torch.float32)
    only_cue = colours[:, :, None, None].expand(K, 3, SIZE, SIZE).clone()
    grey = torch.full((K, 3, SIZE, SIZE), 0.5)
    targets = torch.arange(K)
    torch.testing.assert_close(act.cue_colour_strength(only_cue, targets, px, K), torch.ones(K))
    assert act.cue_colour_strength(grey, targets, px, K).abs().max() < 0.3
    assert (act.cue_colour_strength(only_cue.roll(1, 0), targets, px, K) < 0).all()  # another class's cue
    corner_only = grey.clone()
    corner_only[:, :, :px, :px] = only_cue[:, :, :px, :px]
    torch.testing.assert_close(act.cue_colour_strength(corner_only, targets, px, K), torch.ones(K))
    whole = act.cue_colour_strength(corner_only, targets, px, K, region="image")
    assert whole.abs().max() < 0.3  # the cue covers only (px/SIZE)² of the image; the grey rest dominates
    # real test images: those whose cue names their class score 1, the others do not
    te, cue = data[2], torch.from_numpy(shapes.generate_split(data[4], SIZE, 0, "test", 64)["cue"])
    s = act.cue_colour_strength(te, cue, px, K)
    assert s.min() > 0.95
    assert act.cue_colour_strength(te, (cue + 1) % K, px, K).max() < 0


def test_cue_logit_drop(trained, data):
    px = act.cue_pixels(SIZE, data[4]["cue_size"])
    grey_corner = data[2][:8].clone()
    grey_corner[:, :, :px, :px] = 0.5
    assert act.cue_logit_drop(trained, grey_corner, data[3][:8], px).abs().max() == 0


def test_generate_prototypes_and_grid(trained, tmp_path):
    cfg = {"featviz": {"methods": ["pixel_ascent", "fourier_fv"], "options": {"pixel_ascent": {"steps": 3},
                                                                             "fourier_fv": {"steps": 3}}}}
    meta = {"classes": ["circle", "square", "triangle", "cross"], "image_size": SIZE}
    out = generate_prototypes(cfg, trained, meta, seed=0)
    assert out["pixel_ascent"].shape == (K, 3, SIZE, SIZE) and out["pixel_ascent"].dtype == np.float32
    assert out["fourier_fv_logits"].shape == (K, K) and list(out["methods"]) == ["pixel_ascent", "fourier_fv"]
    only = generate_prototypes({"featviz": {**cfg["featviz"], "methods": ["fourier_fv"]}}, trained, meta, seed=0)
    np.testing.assert_array_equal(only["fourier_fv"], out["fourier_fv"])  # a method's images do not depend on the others
    png = draw_grid(out, tmp_path / "grid.png")
    assert png.stat().st_size > 1000


def test_path_rows_are_tidy(trained, data):
    out = act.activation_paths(trained, data[2][:4], torch.arange(4), data[2], data[3], K)
    frame = act.path_rows(out, "prototype")
    assert set(frame.method) == {"prototype", "natural"}
    sp = frame[(frame.method == "prototype") & (frame.metric == "spearman")]
    assert len(sp) == 4 * 5 and list(sp.setting.unique()) == out["layers"]
    assert len(frame[(frame.method == "natural") & (frame.metric == "share_l1")]) == len(data[2])
