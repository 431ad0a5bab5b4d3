"""Training: losses, resume-after-kill equality, checkpoint/config checks."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from xaibench.models import create_model
from xaibench.training.fit import CheckpointMismatch, load_model, train
from xaibench.training.losses import (class_activation_map, cyborg, human_map, last_relu_input, minmax,
                                      outline_band)


def _weights(path):
    return torch.load(path, weights_only=False)["state_dict"]


def _salience(**kw):
    return {"cyborg": {"alpha": 0.5, "alpha_weighs": "ce", "cam_class": "label", "cam_features": "post_relu",
                         "human_map": "mask", "outline_width": 0.0625, **kw}}


def test_cyborg_reduces_to_ce_and_to_zero_map_term():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, width=8)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    masks = torch.rand(4, 32, 32)
    cfg = _salience(alpha=1.0)  # reference orientation: alpha weighs CE
    loss, logits = cyborg(model, x, y, masks, cfg)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    # a human map equal to the CAM (given at the CAM's own size) leaves only the CE term
    same = minmax(class_activation_map(model, model.features(x), y)).detach() * 3 + 1
    cfg = _salience(alpha=0.0)
    loss, _ = cyborg(model, x, y, same, cfg)
    assert loss.item() < 1e-3
    with pytest.raises(ValueError, match="needs human masks"):
        cyborg(model, x, y, None, cfg)


@pytest.mark.parametrize("features", ["pre_relu", "post_relu"])
def test_cyborg_loss_equals_hand_computed_value_in_both_orientations(features):
    """CVRL/CYBORG training_code/train_cam.py: loss = alpha*class_loss + (1-alpha)*hmap_loss, the CAM
    W[pred]·F min-max scaled (no bias, no ReLU), F before the last ReLU (DenseNet norm5 / ResNet conv3)."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, width=8).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
    x, y = torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    masks = torch.zeros(5, 32, 32)
    masks[:, 8:24, 4:20] = 1.0
    with torch.no_grad():  # by hand, from the plain modules
        pre = model.trunk[:-1]((x - model.mean) / model.std)      # small_cnn ends conv-BN-ReLU
        logits = model.fc(pre.relu().mean((2, 3)))
        ce = -logits.log_softmax(1)[torch.arange(5), y].mean()
        f = pre if features == "pre_relu" else pre.relu()
        cam = (f * model.fc.weight[logits.argmax(1)][:, :, None, None]).sum(1)
        lo = cam.amin((1, 2), keepdim=True)
        cam = (cam - lo) / (cam - lo).amax((1, 2), keepdim=True)
        # the resize is PIL's antialiased bilinear (a triangle filter 8 px wide per side at 32 -> 4)
        human = F.interpolate(masks[:, None], size=(4, 4), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        human = (human - human.amin((1, 2), keepdim=True)) / (human.amax((1, 2), keepdim=True) - human.amin((1, 2), keepdim=True))
        mse = (cam - human).square().mean()
    alpha = 0.3
    for weighs, want in (("ce", alpha * ce + (1 - alpha) * mse), ("map", (1 - alpha) * ce + alpha * mse)):
        cfg = _salience(alpha=alpha, alpha_weighs=weighs, cam_class="predicted", cam_features=features)
        loss, out = cyborg(model, x, y, masks, cfg)
        torch.testing.assert_close(out, logits)
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(alpha * ce + (1 - alpha) * mse, (1 - alpha) * ce + alpha * mse)


def test_pre_relu_features_keep_gradients_and_resnet_blocks():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, image_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    pre, logits = last_relu_input(model, x)
    post = model.features(x)
    block = model.trunk[-1][-1]  # the last BasicBlock: relu(bn2(conv2(.)) + identity)
    torch.testing.assert_close(pre.relu(), post)
    assert (pre < 0).any()
    pre.sum().backward()
    assert block.conv2.weight.grad is not None


def test_outline_band_is_a_sparser_human_map():
    mask = torch.zeros(1, 32, 32)
    mask[0, 8:18, 10:20] = 1.0  # a filled 10x10 square
    band = outline_band(mask, 2)
    assert band.sum().item() == (10 + 4) ** 2 - (10 - 4) ** 2  # (s+2r)^2 - (s-2r)^2
    assert band[0, 12:14, 14:16].sum() == 0 and band[0, 8, 10] == 1 and band[0, 6, 8] == 1 and band[0, 5, 8] == 0
    assert band.sum() < mask.sum() * 2 and human_map(mask, "mask", 0.1) is mask
    torch.testing.assert_close(human_map(mask, "outline", 4 / 32), band)  # width 4 px total -> r = 2
    with pytest.raises(ValueError, match="human_map"):
        human_map(mask, "scribble", 0.1)


@pytest.mark.parametrize("variant", ["standard", "salience"])
def test_resume_gives_same_weights(tiny_project, tiny_cfg, variant):
    tiny_cfg["train"]["epochs"] = 3
    data = tiny_project / "data/prepared/shapes"
    full = train(tiny_cfg, data, variant, 0, tiny_project / "full", "cpu")
    assert train(tiny_cfg, data, variant, 0, tiny_project / "cut", "cpu", stop_after=1) == {}
    assert (tiny_project / "cut/checkpoint.pt").exists() and not (tiny_project / "cut/model.pt").exists()
    resumed = train(tiny_cfg, data, variant, 0, tiny_project / "cut", "cpu")
    assert resumed == full
    a, b = _weights(tiny_project / "full/model.pt"), _weights(tiny_project / "cut/model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tiny_project / "cut/checkpoint.pt").exists()
    summary = json.loads((tiny_project / "full/summary.json").read_text())
    assert {"test_accuracy", "test_cue_conflicting_accuracy", "ood_max_softmax"} <= set(summary)


def test_killed_process_resumes_to_same_weights(tiny_project, tiny_cfg):
    """A real SIGKILL mid-run, then a rerun of the same command, ends with the uninterrupted weights."""
    tiny_cfg["train"]["epochs"] = 12
    data = tiny_project / "data/prepared/shapes"
    cmd = [sys.executable, "-m", "xaibench.cli", "train", "--config", json.dumps(tiny_cfg), "--dataset", "shapes",
           "--variant", "standard", "--seed", "1", "--out", "killed", "--device", "cpu", "--threads", "1"]
    # The uninterrupted reference runs the same way (a process of its own, same thread count: float sums
    # depend on it, and tests before this one may have changed this process's torch threads).
    subprocess.run([*cmd[:-6], "--out", "ref", *cmd[-4:]], cwd=tiny_project, check=True, capture_output=True)
    proc = subprocess.Popen(cmd, cwd=tiny_project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tiny_project / "killed/checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tiny_project / "killed/model.pt").exists(), "run finished before it could be killed"
    out = subprocess.run(cmd, cwd=tiny_project, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stdout
    a, b = _weights(tiny_project / "ref/model.pt"), _weights(tiny_project / "killed/model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_other_config_is_refused(tiny_project, tiny_cfg):
    tiny_cfg["train"]["epochs"] = 1
    train(tiny_cfg, tiny_project / "data/prepared/shapes", "standard", 0, tiny_project / "m", "cpu")
    model, mcfg = load_model(tiny_project / "m/model.pt", expect={"dataset": "shapes"})
    assert mcfg["variant"] == "standard"
    with pytest.raises(CheckpointMismatch, match=r"made with dataset='shapes' but the settings ask for 'digits'"):
        load_model(tiny_project / "m/model.pt", expect={"dataset": "digits"})
    (tiny_project / "m/bad.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.pt: corrupt"):
        load_model(tiny_project / "m/bad.pt")


def test_summary_reports_cue_subsets_and_nocue(tiny_project, tiny_cfg):
    """summary.json's cue numbers equal a recount from the model's predictions; the accuracy family
    names their splits so the subset is clear."""
    from xaibench.data import read_meta, read_split
    from xaibench.metrics.accuracy import split_key
    from xaibench.training.fit import load_model, predict

    tiny_cfg["train"]["epochs"] = 1
    data = tiny_project / "data/prepared/shapes"
    summary = train(tiny_cfg, data, "standard", 0, tiny_project / "m", "cpu")
    model, _ = load_model(tiny_project / "m/model.pt")
    test, nocue = read_split(data, "test"), read_split(data, "nocue")
    p_test = predict(model, test, 64, "cpu").argmax(1).numpy()
    p_free = predict(model, nocue, 64, "cpu").argmax(1).numpy()
    conflict = test.extras["cue"] != test.labels
    assert read_meta(data)["splits"]["nocue"] == len(test)
    assert summary["nocue_accuracy"] == pytest.approx((p_free == nocue.labels).mean())
    assert summary["test_cue_agreeing_accuracy"] == pytest.approx((p_test == test.labels)[~conflict].mean())
    assert summary["test_cue_conflicting_accuracy"] == pytest.approx((p_test == test.labels)[conflict].mean())
    assert summary["test_cue_conflicting_follows_cue"] == pytest.approx((p_test == test.extras["cue"])[conflict].mean())
    assert summary["test_cue_conflicting_cue_changes_prediction"] == pytest.approx((p_test != p_free)[conflict].mean())
    assert split_key("test_cue_conflicting_follows_cue") == ("test_cue_conflicting", "follows_cue")
    assert split_key("test_cue_agreeing_accuracy") == ("test_cue_agreeing", "accuracy")
    assert split_key("nocue_accuracy") == ("nocue", "accuracy")
    assert split_key("test_max_softmax") == ("test", "max_softmax") and split_key("epochs") is None


def test_progress_without_a_terminal_is_one_line_per_step(capsys):
    """A job's log gets one closing line per loop (count, time, the figures noted last), no bar redraws."""
    from xaibench.progress import Progress
    bar = Progress(desc="toy epoch 1/1", unit="batches", total=40)
    for _ in range(40):
        bar.update()
        bar.note(loss=0.25)
    bar.close()
    for _ in Progress(range(3), "explain toy test", unit="batches"):
        pass
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and err == ""
    assert lines[0].startswith("toy epoch 1/1: 40 batches in ") and lines[0].endswith("loss 0.250")
    assert lines[1].startswith("explain toy test: 3 batches in ")


def test_warmup_rises_linearly_then_follows_the_cosine():
    from xaibench.training.fit import _lr
    assert [_lr(0.3, e, 10, warmup=2) for e in (0, 1, 2)] == pytest.approx([0.1, 0.2, 0.3])
    assert _lr(0.3, 6, 10, warmup=2) == pytest.approx(0.15)  # halfway through the 8 cosine epochs
    assert [_lr(0.3, e, 10) for e in range(10)] == [_lr(0.3, e, 10, warmup=0) for e in range(10)]


def test_injection_ramp_weights_by_epoch():
    from xaibench.training.variants import lap_epoch_settings
    tcfg = {"lap": {"injection_weight": 0.8, "injection_ramp_epochs": 4}}
    assert [lap_epoch_settings(tcfg, e)["lap"]["injection_weight"] for e in range(6)] == \
        pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 0.8])
    assert lap_epoch_settings({"lap": {"injection_weight": 0.8, "injection_ramp_epochs": 0}}, 0)["lap"]["injection_weight"] == 0.8


def test_keep_best_returns_the_epoch_of_best_validation_accuracy(tiny_project, tiny_cfg):
    tiny_cfg["train"]["lap"].update(epochs=4, keep_best=True)
    summary = train(tiny_cfg, tiny_project / "data/prepared/shapes", "lap", 0, tiny_project / "best", "cpu")
    vals = [row["val_accuracy"] for row in torch.load(tiny_project / "best/model.pt", weights_only=False)["history"]]
    assert len(vals) == 4 and summary["best_epoch"] == 1 + vals.index(max(vals))
    assert summary["val_accuracy"] == pytest.approx(max(vals))  # the weights kept are that epoch's


def test_score_lr_factor_scales_only_the_attention_parameters(tiny_project, tiny_cfg):
    """With a vanishing factor the score networks and every beta stay where they started (Adam's step
    is about the learning rate whatever the gradient), while every other parameter moves."""
    from xaibench.training.fit import build, model_config
    from xaibench.data import read_meta
    tiny_cfg["train"]["lap"].update(epochs=1, score_lr_factor=1e-9)
    data = tiny_project / "data/prepared/shapes"
    train(tiny_cfg, data, "lap", 0, tiny_project / "slow", "cpu")
    torch.manual_seed(0)  # the trainer's initial weights
    start = build(model_config(tiny_cfg, read_meta(data), "lap", 0))
    after, _ = load_model(tiny_project / "slow/model.pt")
    attention = {id(p) for p in after.attention_parameters()}
    moved = {n: not torch.allclose(p, start.state_dict()[n], atol=1e-6) for n, p in after.named_parameters()}
    names = {n for n, p in after.named_parameters() if id(p) in attention}
    assert names and all(n.endswith("beta_raw") or ".score." in n for n in names)
    assert not any(moved[n] for n in names) and all(moved[n] for n in moved if n not in names)


def test_a_variant_has_a_loss_or_a_trainer_never_both_or_neither():
    """`Variant.loss` is what fit.train minimises; a variant with its own trainer declares none, so no
    registered loss is dead code."""
    from xaibench.training import VARIANTS, Variant, losses
    import xaibench.training.variants, xaibench.training.plugin, xaibench.training.protopnet  # noqa: F401, E401
    for name in VARIANTS.names():
        spec = VARIANTS.get(name)
        assert (spec.loss is None) != (spec.trainer is None), name
    with pytest.raises(TypeError):
        Variant(lambda cfg: None, losses.cross_entropy, trainer=lambda *a: {})
    with pytest.raises(TypeError):
        Variant(lambda cfg: None)
