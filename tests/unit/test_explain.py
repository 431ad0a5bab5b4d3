"""Explainers: batch contract, an analytic identity, and agreement with pytorch-grad-cam and Captum."""
import numpy as np
import pytest
import torch

from xaibench import explain
from xaibench.data.store import Split
from xaibench.io import load_explanation
from xaibench.models import create_model


def _model(arch="small_cnn"):
    torch.manual_seed(0)
    model = create_model(arch, 5, width=8, image_size=32).eval()
    # non-trivial BN statistics so the comparison is not on a degenerate network
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _norm(a):
    a = a.reshape(a.shape[0], -1)
    a = a - a.min(1, keepdims=True)
    return (a / np.maximum(a.max(1, keepdims=True), 1e-12))


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_batch_contract(method):
    model, x = _model(), torch.rand(6, 3, 32, 32)
    maps = explain.get(method)(model, x, torch.arange(6) % 5)
    grid = model.features(x).shape[-2:]  # native resolution: the feature grid (4x4 at 32 px)
    assert maps.shape == (6, *grid) and (maps >= 0).all() and torch.isfinite(maps).all()
    one = explain.get(method)(model, x[2:3], torch.tensor([2]))
    torch.testing.assert_close(maps[2:3], one, rtol=1e-4, atol=1e-5)  # batching does not change a map


def test_gradcam_is_cam_over_cells_for_gap_linear_head():
    """With global average pooling + linear, d y_c / d A_k = W[c,k] / (h w), so Grad-CAM = CAM / (h w)."""
    model, x = _model(), torch.rand(4, 3, 32, 32)
    t = torch.tensor([0, 1, 2, 3])
    h, w = model.features(x).shape[-2:]
    torch.testing.assert_close(explain.gradcam(model, x, t) * h * w, explain.cam(model, x, t), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_gradcam_matches_pytorch_grad_cam(arch):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = _model(arch), torch.rand(4, 3, 32, 32)
    targets = [1, 3, 0, 4]
    ours = explain.upsample(explain.gradcam(model, x, torch.tensor(targets)), (32, 32)).numpy()
    with GradCAM(model=model, target_layers=[model.trunk[-1]]) as ref:
        theirs = ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    # the library min-max normalises before resizing; bilinear resizing is affine-equivariant,
    # so both agree after normalising ours the same way
    np.testing.assert_allclose(_norm(ours), _norm(theirs), atol=1e-4)


def test_gradcam_matches_captum_layergradcam():
    from captum.attr import LayerAttribution, LayerGradCam

    model, x = _model(), torch.rand(4, 3, 32, 32)
    t = torch.tensor([4, 2, 2, 0])
    ref = LayerGradCam(model, model.trunk[-1]).attribute(x, target=t, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (32, 32), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(explain.upsample(explain.gradcam(model, x, t), (32, 32)), ref.detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method,native", [("gradcam", (4, 4)), ("cam", (4, 4))])
def test_explanation_files_hold_native_and_upsampled_maps(tmp_path, method, native):
    """`native` is the explainer's own grid (float16); `maps` the same upsampled bilinearly to the input."""
    rng = np.random.default_rng(0)
    split = Split("test", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10, dtype=np.int64) % 5)
    model = _model()
    arrays = explain.explain_split(model, split, method, "predicted", 4, "cpu")
    explain.save(tmp_path / "e.npz", arrays)
    back = load_explanation(tmp_path / "e.npz")
    assert back["native"].shape == (10, *native) and back["native"].dtype == np.float16
    assert back["maps"].shape == (10, 32, 32) and back["maps"].dtype == np.float16
    direct = explain.get(method)(model, split.tensors(slice(0, 10)), torch.from_numpy(back["targets"]))
    np.testing.assert_allclose(back["native"], direct.numpy(), rtol=1e-3, atol=1e-3)
    up = explain.upsample(torch.from_numpy(back["native"]).float(), (32, 32)).numpy()
    np.testing.assert_allclose(back["maps"], up, rtol=2e-3, atol=2e-3)


def test_nan_maps_are_refused(tmp_path):
    maps = np.zeros((3, 4, 4), np.float16)
    maps[1, 2, 2] = np.nan
    explain.save(tmp_path / "e.npz", {"maps": maps, "targets": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="1 maps contain NaN"):
        load_explanation(tmp_path / "e.npz")
