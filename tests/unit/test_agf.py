"""AGF explainer: equality with the authors' code, conservation, batching, class specificity, Captum."""
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from xaibench import explain
from xaibench.explain.agf import corrected_logits, finalise, relevance, seed_score
from xaibench.models import Classifier, create_model

torch.set_num_threads(1)
FIXTURE = Path(__file__).parents[1] / "fixtures" / "agf_reference.pt"


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def _blocks_model():
    """A Classifier whose trunk holds torchvision BasicBlocks and Bottlenecks (with and without downsample)."""
    ds = lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))  # noqa: E731
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          BasicBlock(8, 8), BasicBlock(8, 16, 2, ds(8, 16, 2)),
                          Bottleneck(16, 4), Bottleneck(16, 8, 2, ds(16, 32, 2)))
    return Classifier(trunk, 32, 4)


def _model(arch):
    torch.manual_seed(0)
    if arch == "blocks":
        return _randomise_bn(_blocks_model())
    return _randomise_bn(create_model(arch, 4, width=8, image_size=64))


# ------------------------------------------------------------------ the authors' code

def _reference_nets():
    def vgg_gap():
        f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        h = nn.Sequential(nn.Linear(16, 5))
        return nn.ModuleDict({"features": f, "head": h}), [f, nn.AdaptiveAvgPool2d(1), nn.Flatten(), h]

    def vgg_flat():
        f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        h = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 5))
        return nn.ModuleDict({"features": f, "head": h}), [f, nn.AdaptiveAvgPool2d(2), nn.Flatten(), h]

    def resnet():
        ds = lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))  # noqa: E731
        net = nn.Module()
        net.conv1, net.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        net.layer1 = nn.Sequential(Bottleneck(8, 4, 1, ds(8, 16, 1)), Bottleneck(16, 4))
        net.layer2 = nn.Sequential(Bottleneck(16, 8, 2, ds(16, 32, 2)))
        net.fc = nn.Linear(32, 5)
        return net, [net.conv1, net.bn1, nn.ReLU(), nn.MaxPool2d(3, 2, 1), net.layer1, net.layer2,
                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.fc]
    return {"vgg_gap": vgg_gap, "vgg_flat": vgg_flat, "resnet_bottleneck": resnet}


@pytest.mark.parametrize("name", ["vgg_gap", "vgg_flat", "resnet_bottleneck"])
def test_equals_authors_code(name):
    """Maps from shirgur/AGFVisualization (tests/fixtures/make_agf_reference.py), same weights/inputs/targets."""
    fx = torch.load(FIXTURE, weights_only=False)
    net, layers = _reference_nets()[name]()
    net.load_state_dict(fx[name]["state"])
    net.double().eval()
    ours = finalise(relevance(layers, fx["x"], fx[name]["targets"]))
    assert (ours - fx[name]["maps"]).abs().max() <= 1e-6
    for kw, theirs in fx[name].get("ablations", []):   # each ablation switch means what it meant there
        assert (finalise(relevance(layers, fx["x"], fx[name]["targets"], **kw)) - theirs).abs().max() <= 1e-6, kw


# ------------------------------------------------------------------ contract on the project's models

@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "blocks"])
def test_runs_batched_and_class_specific(arch):
    size = 16 if arch == "resnet18" else 32                          # resnet18 (CIFAR stem) is the slow one
    model, x = _model(arch), torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2])
    maps = explain.get("agf")(model, x, t)
    assert maps.shape == (3, size, size) and torch.isfinite(maps).all()
    assert (maps.std(dim=(1, 2)) > 0).all()
    assert (maps.flatten(1).amax(1) > 0).all()                     # signed, with positive evidence
    one = explain.get("agf")(model, x[2:3], t[2:3])
    torch.testing.assert_close(maps[2:3], one, rtol=1e-4, atol=1e-4)  # batching does not change a map
    other = explain.get("agf")(model, x, (t + 1) % 4)
    diff = (maps - other).flatten(1).abs().amax(1)
    assert (diff > 1e-2).all()                                       # another class, another map


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_relevance_conserved_layer_by_layer(arch):
    """Every rule (z-rule, identity, C rule, Δ-shift, z^B, Add split, Clone sum) keeps Σ R (note §1, §1.5).

    Exactly so with a vanishing stabiliser; the reference's eps = 1e-9 leaks a little relevance where an
    activation is ~1e-9 but its (Δ-shifted, O(1)) relevance is not: the drift the note saw at pooling.
    Where it does not hold (as in the reference): a conv whose output relevance sits on pixels whose
    input is all zero (relevance a BatchNorm bias earned, e.g. in a 4-channel bottleneck): the C rule
    has no input to give it to, so it is dropped."""
    model = _model(arch).double()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layers = [model.trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc]
    for eps, tol in ((1e-30, 1e-8), (1e-9, 1e-3)):
        trace = []
        relevance(layers, (x - model.mean) / model.std, torch.tensor([1, 3]), trace=trace, eps=eps)
        top = trace[0][2].flatten(1).sum(1)
        for kind, r_out, r_in in trace[1:]:
            err = (r_in.flatten(1).sum(1) - r_out.flatten(1).sum(1)).abs()
            assert (err <= tol * top.abs()).all(), (eps, kind, err / top.abs())
        torch.testing.assert_close(trace[-1][2].flatten(1).sum(1), top, rtol=tol, atol=0)
    kinds = {k for k, *_ in trace}
    assert {"Conv2d", "ReLU", "BatchNorm2d", "AdaptiveAvgPool2d"} <= kinds
    # the residual terms are not small: after the first full AGF step values are O(1) while Σ is tiny
    assert trace[-1][2].abs().max() > 50 * top.abs().max()


def test_zero_image_and_flat_image_give_finite_maps():
    for arch in ("small_cnn", "blocks"):
        model = _model(arch)
        for x in (torch.zeros(4, 3, 32, 32), torch.full((4, 3, 32, 32), 0.5)):
            maps = explain.get("agf")(model, x, torch.arange(4))
            assert torch.isfinite(maps).all()


def test_residual_switches_off_is_the_flat_lrp_part():
    """With F_x, M, F_∇x and A all off the residual is 0 and Δ(C, 0) = C: exactly the flat (C-only) rule."""
    model, x, t = _model("small_cnn"), torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 3])
    off = explain.get("agf")(model, x, t, no_fx=True, no_m=True, no_fdx=True, no_a=True)
    torch.testing.assert_close(off, explain.get("agf")(model, x, t, flat=True))
    assert not torch.allclose(off, explain.get("agf")(model, x, t))


# ------------------------------------------------------------------ the seed (saliency-bias correction)

def test_gaussian_seed_puts_any_positive_target_on_top():
    """z_j = y_t exp(-½((y_j-y_t)/σ)²) <= y_t = z_t when y_t > 0: the target wins the corrected softmax even
    when it is not the predicted class, so its gradient is not dominated by the top class (note §1.1)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 6, generator=g) * 3
    t = logits.argsort(1, descending=True)[:, 1]                      # the second class of every row
    yt = logits.gather(1, t[:, None])[:, 0]
    s = seed_score(logits, t, "gaussian")
    keep = yt > 0
    assert keep.any() and (corrected_logits(logits, t).argmax(1)[keep] == t[keep]).all()
    assert (corrected_logits(logits, t).argmin(1)[~keep] == t[~keep]).all()   # and last when y_t < 0
    assert (s[keep] > 1 / 6).all()
    torch.testing.assert_close(seed_score(torch.ones(2, 4), torch.tensor([0, 3])), torch.full((2,), 0.25))


def test_seed_switch_changes_non_predicted_maps():
    model, x = _model("small_cnn"), torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        second = model(x).argsort(1, descending=True)[:, 1]
    a = explain.get("agf")(model, x, second)
    b = explain.get("agf")(model, x, second, seed="softmax")
    assert ((a - b).flatten(1).abs().amax(1) > 1e-2).all()


def test_seed_relevance_matches_captum_input_x_gradient():
    from captum.attr import InputXGradient

    model, x, t = _model("small_cnn"), torch.rand(3, 3, 32, 32), torch.tensor([3, 0, 1])
    trace = []
    relevance([model.trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc], (x - model.mean) / model.std, t,
              trace=trace)
    with torch.no_grad():
        pooled = model.features(x).mean((2, 3))
    theirs = InputXGradient(lambda f: seed_score(model.fc(f), t)[:, None]).attribute(pooled.requires_grad_(), target=0)
    torch.testing.assert_close(trace[0][2], theirs.detach(), rtol=1e-5, atol=1e-8)


def test_lrp_part_matches_captum_lrp_on_nonnegative_net():
    """With |x| = x and |W| = W (x >= 0, W >= 0, no biases) the C rule is LRP-0, the pools' z-rule and ReLU's
    pass-through are LRP's: AGF's flat part with seed y_t must equal Captum LRP (ε ≈ 0) above the z^B layer."""
    from captum.attr import LayerLRP
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(6, 3, bias=False)).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "weight"):
                m.weight.abs_()
    x, t = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 2])
    trace = []
    relevance(net, x, t, trace=trace, seed="logit", flat=True)
    ours = [r_in for kind, _, r_in in trace if kind == "Conv2d"][0:2]          # inputs of conv3 and conv2
    for layer, mine in zip((net[6], net[3]), ours):
        for m in net:                      # Captum removes the rules after each call; ε-rule on Flatten = reshape
            m.rule = IdentityRule() if isinstance(m, nn.ReLU) else EpsilonRule(epsilon=1e-12)
        theirs = LayerLRP(net, layer).attribute(x, target=t, attribute_to_layer_input=True)
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------ clear errors

def test_bad_input_raises_value_error():
    model, x = _model("small_cnn"), torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown agf option"):
        explain.get("agf")(model, x, torch.tensor([0, 1]), no_such=True)
    with pytest.raises(ValueError, match="targets"):
        explain.get("agf")(model, x, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="seed"):
        explain.get("agf")(model, x, torch.tensor([0, 1]), seed="bogus")
    with pytest.raises(ValueError, match="no propagation rule for GELU"):
        relevance([nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2)], x, torch.tensor([0, 1]))


def _hidden_evidence_model():
    """3 classes whose evidence lives only in region k: channel k of the trunk fires only on pure
    colour k (ReLU of the normalised colour channel minus the others), and the head reads class k off
    channel k alone, so class k's logit is the spatial mean of a map that is non-zero only in region k."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_((2 * torch.eye(3) - 1).view(3, 3, 1, 1))  # channel k: 2·x_k − Σ x (normalised input)
    model = Classifier(nn.Sequential(conv, nn.ReLU()), 3, 3)
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(3))
        model.fc.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("seed", ["logit", "softmax"])
def test_hidden_evidence_puts_each_class_mass_in_its_own_region(seed):
    """An image of three vertical bands, pure red, green and blue: class k's evidence is only in band k,
    so AGF's map of class k must put most of its (positive) mass there, for every k, predicted or not.

    Found while writing this test (docs/agf.md): with the reference's saliency-bias correction
    (`seed="gaussian"`, the default) on this construction, whose three logits are nearly equal
    (2.03, 2.12, 2.26), the maps of classes 0 and 1 both land in band 1 and class 2's in bands 0 and 2;
    the plain logit and softmax seeds below place every class correctly."""
    model = _hidden_evidence_model()
    image = torch.zeros(1, 3, 24, 24)
    for k in range(3):
        image[0, k, :, 8 * k:8 * (k + 1)] = 1.0
    images, targets = image.expand(3, -1, -1, -1).contiguous(), torch.arange(3)
    with torch.no_grad():
        logits = model(images)[0]
    assert (logits > 0).all()  # every class has evidence somewhere
    maps = explain.get("agf")(model, images, targets, seed=seed).clamp_min(0)
    for k in range(3):
        mass = maps[k, :, 8 * k:8 * (k + 1)].sum() / maps[k].sum()
        assert mass > 0.8, (k, float(mass))
