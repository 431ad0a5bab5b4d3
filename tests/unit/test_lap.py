"""Paper C (LAP): the pooling layer's limits, gradients, the self-explainer, plug-in, deletion, injection."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaibench import config, explain
from xaibench.metrics.deletion import curve_auc, deletion_curves, removal_rank
from xaibench.metrics.localization import relevance_mass
from xaibench.models import create_model
from xaibench.models.lap import LAPClassifier, LAPPool2d, calibrate_scores, lapify
from xaibench.training.fit import load_model, train
from xaibench.training import losses


class Fixed(nn.Module):
    """Stands in for the score network: returns a given score map."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return self.s


def lap_model(arch: str, num_classes: int, beta_init: float = 12.0, **kw):
    """The `lap` variant's architecture: `arch` with LAP pooling and a LAP head."""
    return lapify(create_model(arch, num_classes, **kw), beta_init=beta_init)


def _nontrivial_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("mode", ["softmax", "v1"])
@pytest.mark.parametrize("geometry", [(2, 2, 0), (3, 2, 1)])
def test_beta_zero_is_average_pooling(mode, geometry):
    torch.manual_seed(0)
    k, s, p = geometry
    pool = LAPPool2d(5, k, s, p, mode=mode, beta_init=0.0)
    x = torch.randn(3, 5, 9, 9)
    torch.testing.assert_close(pool(x), F.avg_pool2d(x, k, s, p, count_include_pad=False), rtol=0, atol=1e-6)


def test_large_beta_picks_highest_score_element():
    torch.manual_seed(0)
    x, s = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 8, 8)
    pool = LAPPool2d(4, 2, mode="softmax", beta_init=1e5)
    pool.score = Fixed(s)
    cols = F.unfold(x, 2, stride=2).view(2, 4, 4, 16)
    pick = F.unfold(s, 2, stride=2).view(2, 1, 4, 16).argmax(2, keepdim=True).expand(2, 4, 1, 16)
    expected = cols.gather(2, pick).view(2, 4, 4, 4)
    torch.testing.assert_close(pool(x), expected)
    assert not torch.allclose(expected, F.max_pool2d(x, 2))  # the score, not the value, decides
    assert pool.last_scores is s
    # mode v1: the renormalised Gaussian weights become max pooling (the TF original tends to max/K)
    v1 = LAPPool2d(4, 3, 2, 1, mode="v1", beta_init=1e7)
    torch.testing.assert_close(v1(x), F.max_pool2d(x, 3, 2, 1), rtol=0, atol=1e-3)


@pytest.mark.parametrize("mode", ["softmax", "v1"])
@pytest.mark.parametrize("size", [(8, 8), (9, 11)])
def test_tiled_fast_path_is_the_unfold_path(size, mode):
    """The pooling-op path (tiling windows) computes the same outputs, weights, kept maps and gradients
    as the explicit window path, on odd sizes too (the last row/column no window covers is dropped)."""
    torch.manual_seed(0)
    pool = LAPPool2d(4, 2, mode=mode, beta_init=5.0)
    if mode == "softmax":
        pool.score[1].running_var.fill_(2.0)
    x = torch.randn(2, 4, *size).to(memory_format=torch.channels_last).requires_grad_()
    results = []
    for forward in (pool._forward_tiled, pool._forward_unfold):
        x.grad, pool.beta_raw.grad = None, None
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), pool.last_weights.detach(), pool.last_scores.detach(), x.grad.clone(),
                        pool.beta_raw.grad.clone()))
    for fast, slow in zip(*results):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert pool.in_size == size


@pytest.mark.parametrize("mode", ["softmax", "v1"])
@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_gradients_reach_beta_and_score_network(mode, beta):
    torch.manual_seed(0)
    model = lapify(create_model("small_cnn", 3, width=8), mode=mode, beta_init=beta)
    x = torch.rand(4, 3, 32, 32)
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    # beta gets a gradient even at beta = 0 (straight-through clamp); the score network's gradient
    # is proportional to beta, so it is exactly zero at beta = 0 and must be non-zero otherwise
    for layer in model.lap_layers():
        assert layer.beta_raw.grad is not None and layer.beta_raw.grad.abs() > 0
        if mode == "softmax":
            assert (layer.score[0].weight.grad.abs().sum() > 0) == (beta > 0)
    assert model.head.beta_raw.grad.abs() > 0
    assert (model.head.score[0].weight.grad.abs().sum() > 0) == (beta > 0)


@pytest.mark.parametrize("arch,size", [("small_cnn", 32), ("resnet18", 16)])
def test_lap_explainer_contract(arch, size):
    torch.manual_seed(0)
    model = _nontrivial_bn(lap_model(arch, 4, width=8, image_size=size)).eval()
    assert len(model.lap_layers()) == 3  # small_cnn: its 3 max-pools; resnet18 < 128 px: its 3 strided blocks
    x = torch.rand(5, 3, size, size)
    t = torch.tensor([0, 1, 2, 3, 0])
    maps = explain.get("lap")(model, x, t)
    assert maps.shape == (5, size, size) and (maps >= 0).all() and torch.isfinite(maps).all()
    other = explain.get("lap")(model, x, (t + 1) % 4)
    assert (maps - other).abs().amax(dim=(1, 2)).min() > 1e-4  # the head makes it class-specific
    torch.testing.assert_close(explain.get("lap")(model, x[1:2], t[1:2]), maps[1:2], rtol=1e-4, atol=1e-6)
    for combine in ("mean", "product"):
        other = explain.get("lap")(model, x, t, combine=combine)
        assert other.shape == maps.shape and not torch.allclose(other, maps)
    head = explain.get("lap")(model, x, t, combine="head")
    assert head.shape == (5, *model.features(x).shape[-2:])  # native: the feature grid
    for name in ("lap", "attention_cam"):
        with pytest.raises(ValueError, match="needs a LAP-extended model"):
            explain.get(name)(create_model("small_cnn", 4, width=8), x, t)
    with pytest.raises(ValueError, match="combine must be one of"):
        explain.get("lap")(model, x, t, combine="sum")


@pytest.mark.parametrize("arch,size,mode", [("small_cnn", 32, "softmax"), ("small_cnn", 32, "v1"),
                                            ("resnet18", 16, "softmax")])
def test_lap_map_accounts_for_the_logit(arch, size, mode):
    """Completeness: the per-location contributions a_k·CAM_k the map is built from sum to the
    class logit less its bias, on the feature grid (`head`) and carried back to the input through
    every LAP layer's window weights (`cascade`); the attention itself is a distribution (sum 1)."""
    torch.manual_seed(1)
    model = _nontrivial_bn(lapify(create_model(arch, 4, width=8, image_size=size), mode=mode, beta_init=3.0)).eval()
    x, t = torch.rand(6, 3, size, size), torch.tensor([0, 1, 2, 3, 1, 2])
    with torch.no_grad():
        logit = model(x).gather(1, t[:, None])[:, 0] - model.fc.bias[t]
    for combine in ("head", "cascade"):
        contrib = explain.get("lap")(model, x, t, combine=combine, value="contribution")
        torch.testing.assert_close(contrib.sum((1, 2)), logit, rtol=1e-4, atol=1e-4)
        attn = explain.get("lap")(model, x, t, combine=combine)
        torch.testing.assert_close(attn.sum((1, 2)), torch.ones(6), rtol=1e-5, atol=1e-5)
        assert (attn >= 0).all()
    assert contrib.shape == (6, size, size)  # cascade reaches the first LAP layer's input: the image here
    # attention_cam is the positive part of the head's contributions
    head = explain.get("lap")(model, x, t, combine="head", value="contribution")
    torch.testing.assert_close(explain.get("attention_cam")(model, x, t), head.relu())
    with pytest.raises(ValueError, match="needs combine cascade or head"):
        explain.get("lap")(model, x, t, combine="mean", value="contribution")


def test_lap_map_ignores_what_the_pooling_ignores():
    """Window weights softmax(β·s) do not change when a constant is added to s, so neither may the
    map (the former map, built from raw s, did); a score that changes the weights changes the map."""
    torch.manual_seed(0)
    model = lap_model("small_cnn", 4, width=8, image_size=32, beta_init=3.0).eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    first = model.lap_layers()[0]
    s = torch.rand(3, 1, 32, 32) * 0.5
    first.score = Fixed(s)
    base = explain.get("lap")(model, x, t)
    first.score = Fixed(s + 0.4)
    torch.testing.assert_close(explain.get("lap")(model, x, t), base, rtol=1e-5, atol=1e-7)
    first.score = Fixed(s.flip(-1))
    assert not torch.allclose(explain.get("lap")(model, x, t), base, rtol=1e-3, atol=1e-6)


def test_backproject_is_transposed_pooling():
    """backproject(m)[i] = Σ_o m(o)·w_o(i): the gradient of Σ_o m(o)·y_o w.r.t. x with the weights held fixed."""
    torch.manual_seed(0)
    pool = LAPPool2d(3, 3, 2, 1, mode="softmax", beta_init=4.0).eval()
    x = torch.randn(2, 3, 9, 9)
    y = pool(x)
    m = torch.rand(2, *y.shape[-2:])
    w = pool.last_weights.detach()
    xg = x.clone().requires_grad_(True)
    cols = F.unfold(xg, 3, padding=1, stride=2).view(2, 3, 9, -1)
    out = (w * cols).sum(2)  # channel 0 of the pooled output with frozen weights
    (grad,) = torch.autograd.grad((out[:, 0] * m.flatten(1)).sum(), xg)
    torch.testing.assert_close(pool.backproject(m), grad[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pool.backproject(m).sum((1, 2)), m.sum((1, 2)), rtol=1e-5, atol=1e-5)


def test_plugin_at_init_reproduces_average_pooling_exactly():
    """Pooling that is average-like (AvgPool2d, GAP) is reproduced exactly by LAP at beta = 0."""
    torch.manual_seed(0)
    base = create_model("small_cnn", 4, width=8)
    for i, m in enumerate(base.trunk):
        if isinstance(m, nn.MaxPool2d):
            base.trunk[i] = nn.AvgPool2d(2)
    base = _nontrivial_bn(base).eval()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        before = base(x)
        plugged = lapify(base, init="match").eval()
        after = plugged(x)
    assert len(plugged.lap_layers()) == 3
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_plugin_at_init_for_max_pooling():
    """Max pooling: mode v1 reproduces it within a measured tolerance; in mode softmax one shared
    score map cannot, so the score network starts out tracking the channel-mean activation."""
    torch.manual_seed(0)
    base = _nontrivial_bn(create_model("small_cnn", 4, width=8)).eval()
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        before = base(x)
        v1 = lapify(base, mode="v1", init="match", match_beta=1e4).eval()
        after = v1(x)
    assert (after.argmax(1) == before.argmax(1)).all()
    assert (after - before).abs().max() < 5e-3  # measured ~1e-3: exp(-beta d^2) of near-ties
    soft = lapify(create_model("small_cnn", 4, width=8), mode="softmax", init="match", match_beta=50)
    calibrate_scores(soft, x)
    soft.eval()
    with torch.no_grad():
        soft(x)
        first = soft.lap_layers()[0]
        inp = soft.trunk[:3]((x - soft.mean) / soft.std)  # what the first LAP layer pools
    # within every window the highest score sits where the channel-mean activation is highest
    by_score = F.unfold(first.last_scores, 2, stride=2).argmax(1)
    by_mean = F.unfold(inp.mean(1, keepdim=True), 2, stride=2).argmax(1)
    assert (by_score == by_mean).float().mean() > 0.999
    bn = first.score[1]
    assert bn.running_var.item() != 1.0  # calibrated on the batch


def test_plugin_command_writes_model_and_before_after(tiny_project, tiny_cfg):
    from xaibench.training.plugin import plugin
    tiny_cfg["train"]["epochs"] = 1
    tiny_cfg["train"]["lap"].update(mode="v1", injection="none")
    tiny_cfg["train"]["lap"]["plugin"].update(epochs=1, match_beta=1e4)
    data = tiny_project / "data/prepared/shapes"
    train(tiny_cfg, data, "standard", 0, tiny_project / "std", "cpu")
    summary = plugin(tiny_cfg, data, "lap_plugin", 0, tiny_project / "plug", "cpu", src=tiny_project / "std/model.pt")
    info = json.loads((tiny_project / "plug/summary.json").read_text())["plugin"]
    assert {"original", "at_init", "after"} <= set(info) and info["test_agreement_at_init"] == 1.0
    assert info["at_init"]["test_accuracy"] == info["original"]["test_accuracy"]
    assert summary["test_accuracy"] == info["after"]["test_accuracy"]
    model, mcfg = load_model(tiny_project / "plug/model.pt", expect={"variant": "lap_plugin"})
    assert isinstance(model, LAPClassifier) and mcfg["train"]["lap"]["mode"] == "v1"
    maps = explain.get("lap")(model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert maps.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="variant=.lap_plugin. but the settings ask for .standard."):
        plugin(tiny_cfg, data, "lap_plugin", 0, tiny_project / "again", "cpu", src=tiny_project / "plug/model.pt")


def test_lap_variant_trains_and_loads(tiny_project, tiny_cfg):
    tiny_cfg["train"]["epochs"] = 1
    train(tiny_cfg, tiny_project / "data/prepared/shapes", "lap", 0, tiny_project / "lap", "cpu")
    model, mcfg = load_model(tiny_project / "lap/model.pt")
    expected = {k: v for k, v in tiny_cfg["train"]["lap"].items() if k != "plugin"}
    assert isinstance(model, LAPClassifier)
    assert {k: v for k, v in mcfg["train"]["lap"].items() if k != "plugin"} == expected
    assert "seeds" not in mcfg["train"]["lap"]["plugin"]  # which seeds run is not part of a model
    maps = explain.get("lap")(model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert maps.shape == (2, 32, 32)


class Brightness(nn.Module):
    """Analytic 2-class model: logit of class 1 grows with the share of bright pixels."""

    def forward(self, x):
        bright = (x.mean(1) > 0.5).float().flatten(1).mean(1)
        return torch.stack([torch.zeros_like(bright), 40 * bright - 1.5], 1)


def test_deletion_auc_lower_for_the_map_that_finds_the_object():
    b, size = 6, 32
    images = torch.zeros(b, 3, size, size)
    masks = torch.zeros(b, size, size)
    for i in range(b):
        r, c = 3 + 4 * i, 20 - 3 * i
        images[i, :, r:r + 8, c:c + 8] = 1.0
        masks[i, r:r + 8, c:c + 8] = 1.0
    model, targets = Brightness(), torch.ones(b, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    fractions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    levels, p_obj, c_obj = deletion_curves(model, images, masks, targets, targets, fractions, "mean", generator=gen)
    _, p_rand, _ = deletion_curves(model, images, torch.rand(b, size, size), targets, targets, fractions, "mean",
                                   generator=gen)
    clean, gone = torch.sigmoid(torch.tensor(40 * 64 / 1024 - 1.5)), torch.sigmoid(torch.tensor(-1.5))
    torch.testing.assert_close(p_obj[:, 0], clean.expand(b))
    torch.testing.assert_close(p_obj[:, 1:], gone.expand(b, 9))  # 10% > the object's 6.25%: all of it gone
    assert (c_obj[:, 0] == 1).all() and (c_obj[:, 1:] == 0).all()
    auc_obj, auc_rand = curve_auc(p_obj, levels), curve_auc(p_rand, levels)
    assert (auc_obj < auc_rand - 0.05).all()
    torch.testing.assert_close(auc_obj, (0.05 * (clean + gone) + 0.8 * gone).expand(b) / 0.9)
    # blur baseline runs and keeps shapes; a flat map is removed in seeded random order, not top-left first
    _, p_blur, _ = deletion_curves(model, images, masks, targets, targets, fractions, "blur")
    assert p_blur.shape == (b, 10)
    rank = removal_rank(torch.zeros(1, size, size), torch.Generator().manual_seed(1))
    assert sorted(rank.flatten().tolist()) == list(range(size * size)) and rank[0, 0, :8].float().mean() > 50


def _tinted_squares(n, size, seed):
    """Label = global colour tint (red vs blue); a grey square sits at a random place, label-free.
    So the mask (the square) is the only reason for attention to go where it goes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.35 + 0.1 * torch.rand(n, 3, size, size, generator=g)
    x[:, 0] += 0.15 * (y == 0).float()[:, None, None]
    x[:, 2] += 0.15 * (y == 1).float()[:, None, None]
    masks = torch.zeros(n, size, size)
    pos = torch.randint(0, size - 10, (n, 2), generator=g)
    for i, (r, c) in enumerate(pos.tolist()):
        x[i, :, r:r + 10, c:c + 10] = torch.tensor([0.9, 0.9, 0.1])[:, None, None]
        masks[i, r:r + 10, c:c + 10] = 1
    return x.clamp(0, 1), y, masks


def test_mask_injection_moves_attention_into_the_mask():
    x, y, masks = _tinted_squares(96, 32, 0)
    xt, yt, mt = _tinted_squares(48, 32, 1)
    mass = {}
    for injection in ("none", "mask"):
        torch.manual_seed(0)
        model = lap_model("small_cnn", 2, width=8, beta_init=12.0)
        opt = torch.optim.AdamW(model.parameters(), lr=0.005)
        cfg = {"lap": {"injection": injection, "injection_weight": 1.0}}
        for epoch in range(6):
            for i in range(0, len(x), 32):
                loss, _ = losses.lap(model, x[i:i + 32], y[i:i + 32], masks[i:i + 32], cfg)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            assert (model(xt).argmax(1) == yt).float().mean() > 0.9  # both learned the tint
        mass[injection] = relevance_mass(explain.get("lap")(model, xt, yt), mt > 0).mean().item()
    share = (mt > 0).float().mean().item()  # what a uniform map would score
    assert mass["mask"] > mass["none"] + 0.1 and mass["mask"] > 2 * share, (mass, share)


def test_lap_loss_options():
    torch.manual_seed(0)
    model = lap_model("small_cnn", 3, width=8)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss, logits = losses.lap(model, x, y, None, {"lap": {"injection": "none", "injection_weight": 1.0}})
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    mil, logits = losses.lap(model, x, y, None, {"lap": {"injection": "mil", "injection_weight": 1.0}})
    assert mil > F.cross_entropy(logits, y)
    mil.backward()
    assert model.head.score[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs masks"):
        losses.lap(model, x, y, None, {"lap": {"injection": "mask", "injection_weight": 1.0}})
