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
from xaibench.training.losses import class_activation_map, cyborg, minmax


def _weights(path):
    return torch.load(path, weights_only=False)["state_dict"]


def test_cyborg_reduces_to_ce_and_to_zero_map_term():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, width=8)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    masks = torch.rand(4, 32, 32)
    cfg = {"salience": {"alpha": 0.0, "cam_class": "label"}}
    loss, logits = cyborg(model, x, y, masks, cfg)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    # a human map equal to the CAM (given at the CAM's own size) leaves only the CE term
    same = minmax(class_activation_map(model, model.features(x), y)).detach() * 3 + 1
    cfg["salience"]["alpha"] = 1.0
    loss, _ = cyborg(model, x, y, same, cfg)
    assert loss.item() < 1e-3
    with pytest.raises(ValueError, match="needs human masks"):
        cyborg(model, x, y, None, cfg)


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
    train(tiny_cfg, data, "standard", 1, tiny_project / "ref", "cpu")
    cmd = [sys.executable, "-m", "xaibench.cli", "train", "--config", json.dumps(tiny_cfg), "--dataset", "shapes",
           "--variant", "standard", "--seed", "1", "--out", "killed", "--device", "cpu"]
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
    with pytest.raises(CheckpointMismatch, match=r"made with dataset='shapes' but 'digits' was asked for"):
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
