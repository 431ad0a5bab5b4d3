"""Control explainers and the model-parameter randomisation test (docs/sanity_checks.md): agreement with
scikit-image's Sobel filter and with Quantus' MPRT, and the behaviour the test exists for (a map that
ignores the model stays at 1; Grad-CAM of a trained model does not)."""
import copy

import numpy as np
import pytest
import torch

from xaibench import catalog, config, explain, metrics, paths
from xaibench.data import prepare
from xaibench.metrics import randomisation as rnd
from xaibench.training.fit import train

from ..conftest import TINY


def test_sobel_is_skimage_sobel_of_the_luminance():
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    images = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    images[1] = 0.5  # a flat image: no edges
    ours = explain.get("sobel")(None, images, None).numpy()
    for i, image in enumerate(images.permute(0, 2, 3, 1).double().numpy()):
        np.testing.assert_allclose(ours[i], sobel(rgb2gray(image)), atol=1e-6)
    assert np.abs(ours[1]).max() < 1e-6


def test_random_control_is_fixed_per_image_and_ignores_batch_and_model():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fn = explain.get("random")
    whole = fn(None, images, None)
    assert torch.equal(whole[2:], fn("any model", images[2:], None))  # another batch, another "model"
    assert not torch.equal(whole, fn(None, images, None, seed=1))
    assert not torch.equal(whole[0], whole[1]) and 0 <= whole.min() and whole.max() < 1
    # i.i.d. uniform: mean 1/2, no correlation between neighbours
    big = fn(None, torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1)), None)
    assert abs(big.mean().item() - 0.5) < 0.01
    assert abs(np.corrcoef(big[:, :, 1:].flatten(), big[:, :, :-1].flatten())[0, 1]) < 0.02


def test_controls_are_reference_lines_like_the_baseline_maps():
    assert catalog.reference_kind("random") == catalog.reference_kind("baseline_random") == "chance"
    assert catalog.reference_kind("baseline_oracle") == "oracle"
    assert {catalog.reference_kind(m) for m in ("sobel", "constant", "baseline_uniform")} == {"trivial"}
    assert catalog.reference_kind("gradcam") is None and catalog.reference_kind("model") is None


def _tiny_model(seed=0):
    from xaibench.training.fit import build, model_config
    meta = {"classes": ["a", "b", "c", "d"], "image_size": 32, "dataset": "shapes", "content_sha256": "0"}
    torch.manual_seed(seed)
    return build(model_config(config.validate(copy.deepcopy(TINY)), meta, "standard", 0)).eval()


def test_cascade_reinitialises_one_more_layer_per_step_and_independent_one_only():
    model = _tiny_model()
    with torch.no_grad():  # away from the initial values (batch norm starts at what a reset gives)
        for v in model.state_dict().values():
            v.add_(0.25) if v.is_floating_point() else None
    names = rnd.layers(model)
    assert names[0] == "fc" and names[-1] == "trunk.0"  # top down
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for order in rnd.ORDERS:
        for k, name, net in rnd.randomised(model, order, seed=3):
            changed = {n for n in names if any(not torch.equal(v, before[f"{n}.{p}"])
                                               for p, v in dict(net.named_modules())[n].state_dict().items())}
            assert changed == (set(names[:k]) if order == "cascading" else {name})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched


def _quantus_mprt(model, x, y, explain_func, order, seed):
    import quantus
    metric = quantus.MPRT(layer_order=order, seed=seed - 1, abs=False, normalise=False, disable_warnings=True,
                          similarity_func=quantus.similarity_func.correlation_spearman)
    a = explain_func(model, x, y)
    return metric(model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=explain_func, batch_size=len(x))


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_similarity_per_layer_agrees_with_quantus_mprt(order):
    """Quantus' MPRT (Spearman, the same layers, seeded alike) on a fixed model and the positive part of
    upsampled Grad-CAM maps gives our per-layer similarities to 1e-6."""
    model = _tiny_model(seed=1)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)

    def gradcam(net, images, targets):
        images, targets = torch.as_tensor(images), torch.as_tensor(targets)
        return explain.maps_for(net, images, targets, "gradcam").clamp_min(0)

    ours = {name: rnd.Reference(gradcam(model, x, y)).similarities(gradcam(net, x, y))["spearman"].numpy()
            for _, name, net in rnd.randomised(model, order, seed=5)}
    theirs = _quantus_mprt(model, x.numpy(), y.numpy(),
                           lambda model, inputs, targets, **_: gradcam(model, inputs, targets)[:, None].detach().numpy(),
                           {"cascading": "top_down", "independent": "independent"}[order], seed=5)
    theirs.pop("original")
    assert set(theirs) == set(ours)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained standard model in a scratch project."""
    root = tmp_path_factory.mktemp("randomisation")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = config.validate(copy.deepcopy(TINY))
        cfg["train"]["epochs"] = 3
        cfg["explain"]["methods"] = ["gradcam", "sobel", "random", "constant"]
        cfg["metrics"]["randomisation"]["max_images"] = 16
        prepare("shapes", cfg["data"], paths.prepared("shapes"))
        train(cfg, paths.prepared("shapes"), "standard", 0, paths.model_dir("shapes", "standard", 0), "cpu")
        yield cfg, metrics.run("randomisation", metrics.Context(cfg, "shapes", "standard", [0]))


def _full(frame, method, metric):
    return frame[(frame.method == method) & (frame.metric == f"randomised_{metric}")].sort_values("image").value.to_numpy()


def test_a_map_that_ignores_the_model_stays_identical_after_full_randomisation(trained):
    _, frame = trained
    for method in ("sobel", "random"):
        for metric in ("spearman", "ssim"):
            assert np.allclose(_full(frame, method, metric), 1.0), (method, metric)
    assert np.allclose(_full(frame, "constant", "ssim"), 1.0)
    assert np.isnan(_full(frame, "constant", "spearman")).all()  # a constant map has no ranking
    assert np.allclose(frame[(frame.method == "sobel") & (frame.metric == "complexity_rise")].value, 0.0)


def test_gradcam_of_a_randomised_model_drops_well_below_one(trained):
    _, frame = trained
    rho = _full(frame, "gradcam", "spearman")
    assert np.nanmean(rho) < 0.5 and np.nanmean(_full(frame, "gradcam", "ssim")) < 0.5
    # the randomisation did destroy the model: its predictions changed
    changed = frame[(frame.method == "model") & (frame.setting == "cascading")]
    assert changed[changed.level == changed.level.max()].value.mean() > 0.3
    # one row per image, order, layer and method; the summary rows equal the cascade's last step
    n_layers = len(rnd.layers(metrics.Context(trained[0], "shapes", "standard", [0]).model(0)))
    last = frame[(frame.method == "gradcam") & (frame.metric == "spearman") & (frame.setting == "cascading")
                 & (frame.level == n_layers)].sort_values("image").value.to_numpy()
    np.testing.assert_array_equal(last, rho)
    assert set(frame.level.dropna()) == set(range(1, n_layers + 1))


def test_smooth_mprt_averages_over_noisy_copies():
    model, x = _tiny_model(), torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sobel = explain.get("sobel")
    smooth = rnd.smoothed(sobel, 3, 0.1, seed=0)
    assert rnd.smoothed(sobel, 0, 0.1, 0) is sobel
    torch.testing.assert_close(smooth(model, x, None), smooth(_tiny_model(seed=9), x, None))  # same noise
    assert not torch.allclose(smooth(model, x, None), sobel(model, x, None))
