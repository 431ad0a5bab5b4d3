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


# ---- Grad-CAM at a layer named by module name (option `layer`, `reshape`) ------------------------

@pytest.mark.parametrize("index", [14, 13, 7])
def test_gradcam_at_a_named_layer_is_captums_layergradcam_and_at_the_last_the_default(index):
    """By name the whole model runs with a forward hook; at trunk.14 (the last block's output) that is
    today's features/classify Grad-CAM. trunk.13 is a BatchNorm whose output the next ReLU changes in
    place: the map is of the BatchNorm's output (Captum on a copy without in-place ReLUs)."""
    from captum.attr import LayerGradCam

    model, x = _model(), torch.rand(4, 3, 32, 32)
    t = torch.tensor([4, 2, 2, 0])
    ours = explain.gradcam(model, x, t, layer=f"trunk.{index}")
    plain = _model()
    for m in plain.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    ref = LayerGradCam(plain, plain.trunk[index]).attribute(x, target=t, relu_attributions=True)[:, 0]
    assert ours.shape[-1] == {14: 4, 13: 4, 7: 8}[index] and ours.amax() > 0
    torch.testing.assert_close(ours, ref.detach(), rtol=0, atol=1e-6)
    if index == 14:
        torch.testing.assert_close(ours, explain.gradcam(model, x, t), rtol=0, atol=1e-6)


def _vit():
    """A tiny torchvision ViT (4x4 patch grid + CLS token) with a random head (torchvision zeroes it)."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=4).eval()
    torch.nn.init.normal_(vit.heads.head.weight)
    return vit


def test_gradcam_explains_a_vit_block_through_the_tokens_reshape():
    """At encoder block 0 (block 1's attention carries the gradient to the patch tokens; at the last
    block only the CLS token reaches the head), with `reshape: tokens`: the map is ReLU(Σ_c mean-grad_c
    · A_c) on the 4x4 token grid, computed here by running the ViT's parts by hand, and agrees with
    pytorch-grad-cam given the ViT reshape of its documentation."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    vit, x, t = _vit(), torch.rand(3, 3, 32, 32), torch.tensor([0, 3, 1])
    ours = explain.gradcam(vit, x, t, layer="encoder.layers.encoder_layer_0", reshape="tokens")
    tokens = vit._process_input(x)
    tokens = torch.cat([vit.class_token.expand(len(x), -1, -1), tokens], 1) + vit.encoder.pos_embedding
    a = vit.encoder.layers.encoder_layer_0(tokens)
    logits = vit.heads(vit.encoder.ln(vit.encoder.layers.encoder_layer_1(a))[:, 0])
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    grid = lambda v: v[:, 1:].reshape(3, 4, 4, -1).permute(0, 3, 1, 2)  # noqa: E731  row-major patches
    hand = (grid(g).mean((2, 3), keepdim=True) * grid(a)).sum(1).relu()
    assert ours.shape == (3, 4, 4) and (ours.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(ours, hand.detach(), rtol=0, atol=1e-6)
    imported = explain.gradcam(vit, x, t, layer="encoder.layers.encoder_layer_0", reshape="xaibench.explain:tokens")
    assert torch.equal(imported, ours)  # a reshape named package.module:function is imported and applied
    with GradCAM(model=vit, target_layers=[vit.encoder.layers.encoder_layer_0],
                 reshape_transform=lambda v: grid(v)) as ref:
        theirs = ref(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    np.testing.assert_allclose(_norm(explain.upsample(ours, (32, 32)).numpy()), _norm(theirs), atol=1e-4)


@pytest.mark.parametrize("options, says", [
    ({"layer": "trunk.99"}, "layer 'trunk.99' is not a module of the model (Classifier); closest names: trunk.9"),
    ({"layer": "trunk.14", "reshape": "no_such_package.mod:fn"},
     "reshape 'no_such_package.mod:fn': cannot import it (ModuleNotFoundError: No module named 'no_such_package')"),
    ({"layer": "trunk.14", "reshape": "math:pi"}, "reshape 'math:pi': pi is a float, not a function"),
    ({"layer": "trunk.14", "reshape": "tokens"}, "reshape tokens: the layer gives shape [2, 32, 4, 4], not [B,N,C] tokens"),
    ({"reshape": "tokens"}, "reshape 'tokens' needs a layer"),
])
def test_a_layer_the_model_cannot_serve_is_one_line(options, says):
    with pytest.raises(ValueError) as err:
        explain.gradcam(_model(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), **options)
    assert says in str(err.value) and "\n" not in str(err.value), err.value


def test_token_shaped_outputs_need_a_square_grid_and_the_reshape():
    vit, x, t = _vit(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"gives shape \[2, 17, 32\]; Grad-CAM needs \[B,C,h,w\]; for \[B,N,C\] "
                                         "tokens set reshape: tokens"):
        explain.gradcam(vit, x, t, layer="encoder.layers.encoder_layer_0")
    with pytest.raises(ValueError, match="reshape tokens: 7 tokens are not a square grid plus fewer than 2 leading"):
        explain.tokens(torch.zeros(2, 7, 8))
    assert explain.tokens(torch.arange(10.0).view(1, 10, 1))[0, 0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


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
