"""Pixel-attribution baselines: equal to Captum, IG completeness, batching never changes a map."""
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from xaibench import explain
from xaibench.explain import attribution as A
from xaibench.models import create_model

torch.set_num_threads(1)


def _model(arch="small_cnn", dtype=torch.float32):
    torch.manual_seed(0)
    model = create_model(arch, 5, width=8, image_size=32).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.to(dtype)


def _data(b=4, size=32, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, size, size, generator=g, dtype=dtype), torch.tensor([1, 3, 0, 4, 2, 1][:b])


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_gradient_and_gxi_equal_captum(arch):
    model, (x, t) = _model(arch), _data()
    torch.testing.assert_close(A.gradient_attributions(model, x, t),
                               Saliency(model).attribute(x.clone(), target=t, abs=False), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(A.gxi_attributions(model, x, t),
                               InputXGradient(model).attribute(x.clone(), target=t), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre", "riemann_middle"])
def test_ig_equals_captum(method):
    model, (x, t) = _model(), _data()
    base = model.mean.expand_as(x)
    theirs = IntegratedGradients(model).attribute(x.clone(), baselines=base, target=t, n_steps=16, method=method)
    ours = A.ig_attributions(model, x, t, steps=16, baseline="mean", method=method, internal_batch_size=20)
    if method == "riemann_trapezoid":  # Captum's trapezoid weights are 1/n, not 1/(n-1): they sum to (n-1)/n
        theirs = theirs * 16 / 15
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_ig_completeness(baseline):
    """Σ IG = f_t(x) − f_t(x̄) up to the quadrature error, which shrinks with the number of steps."""
    model, (x, t) = _model(dtype=torch.float64), _data(dtype=torch.float64)
    base = A.baseline_image(model, x, baseline)
    with torch.no_grad():
        gap = (model(x) - model(base)).gather(1, t[:, None])[:, 0]
    err = [(explain.get("ig")(model, x, t, steps=s, baseline=baseline, reduce="sum").sum((1, 2)) - gap).abs().max()
           for s in (4, 256)]
    assert err[1] < 0.02 * gap.abs().max() and err[1] < err[0]


def test_smoothgrad_equals_captum_noise_tunnel():
    """One image per call: Captum draws its noise from the global RNG in the same order as ours."""
    model, (x, t) = _model(), _data(2)
    ours = A.smoothgrad_attributions(model, x, t, samples=6, noise=0.2, seed=7)
    nt = NoiseTunnel(Saliency(model))
    for i in range(2):
        torch.manual_seed(7)
        theirs = nt.attribute(x[i:i + 1].clone(), nt_type="smoothgrad", nt_samples=6, stdevs=0.2,
                              target=t[i:i + 1], abs=False)
        torch.testing.assert_close(ours[i:i + 1], theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,opts", [("gradient", {}), ("gxi", {}), ("ig", {"steps": 8}),
                                         ("smoothgrad", {"samples": 4, "seed": 3})])
def test_batched_equals_per_image_and_reduction(method, opts):
    model, (x, t) = _model(), _data()
    fn = explain.get(method)
    maps = fn(model, x, t, internal_batch_size=7, **opts) if method in ("ig", "smoothgrad") else fn(model, x, t, **opts)
    assert maps.shape == (4, 32, 32) and torch.isfinite(maps).all() and maps.abs().amax((1, 2)).min() > 0
    one = torch.cat([fn(model, x[i:i + 1], t[i:i + 1], **opts) for i in range(4)])
    torch.testing.assert_close(maps, one, rtol=1e-4, atol=1e-7)
    raw = getattr(A, f"{method}_attributions")(model, x, t, **opts)
    torch.testing.assert_close(fn(model, x, t, reduce="abs_sum", **opts), raw.abs().sum(1))
    torch.testing.assert_close(fn(model, x, t, reduce="sum", **opts), raw.sum(1))
    torch.testing.assert_close(fn(model, x, t, reduce="max_abs", **opts), raw.abs().amax(1))


def test_targets_matter_and_bad_input():
    model, (x, t) = _model(), _data()
    assert not torch.allclose(explain.get("gxi")(model, x, t), explain.get("gxi")(model, x, (t + 1) % 5))
    with pytest.raises(ValueError, match="reduce"):
        explain.get("gradient")(model, x, t, reduce="mean")
    with pytest.raises(ValueError, match="baseline"):
        explain.get("ig")(model, x, t, baseline="white")
    with pytest.raises(ValueError, match="method"):
        explain.get("ig")(model, x, t, method="simpson")
    with pytest.raises(ValueError, match="targets"):
        explain.get("smoothgrad")(model, x, t[:2])
