"""ProtoPNet (paper A): model, push, phased trainer with resume, `proto` explainer and region,
misalignment perturbations and PAC/PRC/PLC on analytic cases."""
import copy
import math

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import TINY
from xaibench import config
from xaibench.data import prepare, read_split
from xaibench.explain import get as get_explainer
from xaibench.explain.prototypes import activation_region, margin_pixels, upsample_bicubic
from xaibench.metrics import misalignment as mis
from xaibench.models.protopnet import build
from xaibench.training import protopnet as tp

torch.set_num_threads(1)
PCFG = {"backbone": "scratch", "prototypes_per_class": 2, "prototype_dim": 8, "epochs": 3, "warm_epochs": 1, "push_start": 1,
        "push_every": 1, "last_layer_epochs": 2, "batch_size": 32}


def _cfg():
    cfg = copy.deepcopy(TINY)
    cfg["train"]["protopnet"] = dict(PCFG)
    return config.validate(cfg)


def _mcfg(cfg, num_classes=4, size=32):
    return {"arch": "small_cnn", "width": cfg["train"]["width"], "image_size": size, "num_classes": num_classes,
            "train": {"pretrained": None, "protopnet": cfg["train"]["protopnet"]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny protopnet_comp run (9 steps: warm, joint, push, 2 last, joint, push, 2 last)."""
    root = tmp_path_factory.mktemp("pp")
    cfg = _cfg()
    prepare("shapes", cfg["data"], root / "data")
    summary = tp.train(cfg, root / "data", "protopnet_comp", 0, root / "model", device="cpu")
    ckpt = torch.load(root / "model/model.pt", weights_only=False)
    model = build(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return {"root": root, "cfg": cfg, "summary": summary, "model": model.eval(), "ckpt": ckpt}


def test_last_layer_init_and_class_identity():
    torch.manual_seed(0)
    model = build(_mcfg(_cfg(), num_classes=3))
    W = model.last_layer.weight
    assert W.shape == (3, 6) and model.last_layer.bias is None
    for c in range(3):
        for j in range(6):
            assert W[c, j].item() == (1.0 if j // 2 == c else -0.5)


def test_similarity_is_max_where_prototype_equals_a_patch():
    torch.manual_seed(0)
    model = build(_mcfg(_cfg())).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        f = model.features(x)
        model.prototype_vectors[5] = f[1, :, 2, 1]
        sim, min_d = model.prototype_maps(x)
    h, w = sim.shape[-2:]
    assert sim[:, 5].flatten().argmax().item() == 1 * h * w + 2 * w + 1
    assert min_d[1, 5].item() < 1e-4
    assert sim[1, 5, 2, 1].item() == pytest.approx(math.log(1 / model.epsilon), abs=0.05)
    # the logits are the last layer of the max-pooled similarities
    torch.testing.assert_close(model(x), model.last_layer(sim.flatten(2).amax(2)))


def test_cluster_separation_and_loss_terms():
    torch.manual_seed(0)
    model = build(_mcfg(_cfg(), num_classes=2))
    min_d = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.5, 7.0]])
    cluster, sep = tp.cluster_separation(model, min_d, torch.tensor([0, 1]))
    assert cluster.item() == pytest.approx((1.0 + 0.5) / 2) and sep.item() == pytest.approx((3.0 + 5.0) / 2)
    assert tp.l1_off_class(model).item() == pytest.approx(4 * 0.5)  # 4 off-class weights of -0.5
    p = copy.deepcopy(_cfg()["train"]["protopnet"])
    p["coefs"] = {"crs_ent": 1, "clst": 0, "sep": 0, "l1": 0}
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 1, 0])
    loss, logits, _ = tp.protopnet_loss(model, x, y, p)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y))
    p["compensation"]["weight"] = 1.0
    loss_c, _, parts = tp.protopnet_loss(model, x, y, p, compensate=True)
    assert parts["compensation"].item() >= 0
    assert loss_c.requires_grad and torch.isfinite(loss_c)


def test_push_puts_each_prototype_on_its_nearest_own_class_patch(tiny_project, tiny_cfg):
    torch.manual_seed(0)
    cfg = _cfg()
    split = read_split(tiny_project / "data/prepared/shapes", "train")
    model = build(_mcfg(cfg)).eval()
    before = model.prototype_vectors.detach().clone()
    tp.push(model, split, 40, "cpu")  # batches that split the data: the global minimum must survive
    with torch.no_grad():
        f = model.features(split.tensors())  # [N,D,h,w]
    N, D, h, w = f.shape
    patches = f.permute(0, 2, 3, 1).reshape(N, h * w, D)
    for j in range(model.num_prototypes):
        i, r, c = model.proto_source[j].tolist()
        assert split.labels[i] == model.prototype_class[j].item()
        assert torch.equal(model.prototype_vectors[j], f[i, :, r, c])
        own = torch.from_numpy(split.labels == model.prototype_class[j].item())
        dist = ((patches[own] - before[j]) ** 2).sum(-1)  # brute force over every own-class patch
        chosen = ((f[i, :, r, c] - before[j]) ** 2).sum()
        assert chosen.item() == pytest.approx(dist.min().item(), rel=1e-4, abs=1e-5)
        y0, y1, x0, x1 = model.proto_box[j].tolist()
        assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32


def test_schedule_follows_reference_push_epochs():
    p = {"epochs": 51, "warm_epochs": 5, "push_start": 10, "push_every": 10, "last_layer_epochs": 20}
    steps = tp.schedule(p)
    assert [e for ph, e, _ in steps if ph == "push"] == [10, 20, 30, 40, 50]
    assert sum(ph == "warm" for ph, _, _ in steps) == 5 and sum(ph == "last" for ph, _, _ in steps) == 100
    short = tp.schedule({**p, "epochs": 3})  # no push epoch reached: still ends with push + last layer
    assert short[3] == ("push", 2, 0) and short[-1] == ("last", 2, 19) and len(short) == 24


def test_trainer_phases_and_outputs(trained):
    s, out = trained["summary"], trained["root"] / "model"
    assert s["pushes"] == 2 and s["epochs"] == 3 and 0 <= s["test_accuracy"] <= 1
    assert (out / "model.pt").is_file() and (out / "history.csv").is_file() and (out / "summary.json").is_file()
    assert not (out / "checkpoint.pt").exists()
    phases = (out / "phases.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in phases] == ["warm", "joint", "push", "last", "last", "joint", "push", "last", "last"]
    assert float(phases[1].split(",")[8]) > 0  # the compensation term was active in the joint epoch
    # after the last push only the last layer changed: every prototype is still a training patch
    model, split = trained["model"], read_split(trained["root"] / "data", "train")
    with torch.no_grad():
        f = model.features(split.tensors(model.proto_source[:, 0]))
    P = model.num_prototypes
    torch.testing.assert_close(f[torch.arange(P), :, model.proto_source[:, 1], model.proto_source[:, 2]],
                               model.prototype_vectors.detach())


def test_resume_gives_same_weights(trained, tmp_path):
    cfg, data = trained["cfg"], trained["root"] / "data"
    assert tp.train(cfg, data, "protopnet_comp", 0, tmp_path, device="cpu", stop_after=4) == {}
    assert (tmp_path / "checkpoint.pt").is_file()  # stopped inside the first last-layer phase
    tp.train(cfg, data, "protopnet_comp", 0, tmp_path, device="cpu")
    resumed = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    for k, v in trained["ckpt"]["state_dict"].items():
        assert torch.equal(v, resumed[k]), k


def test_bicubic_and_region_match_the_reference_cv2_numpy():
    torch.manual_seed(1)
    maps = torch.rand(4, 7, 7)
    up = upsample_bicubic(maps, (224, 224))
    boxes = activation_region(up)  # 95th percentile, 10 px margin, reference clipping
    for b in range(4):
        ref = cv2.resize(maps[b].numpy(), (224, 224), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(up[b].numpy(), ref, atol=1e-5)
        ys, xs = np.nonzero(ref >= np.percentile(ref, 95))
        want = [max(ys.min() - 10, 0), min(ys.max() + 1 + 10, 223), max(xs.min() - 10, 0), min(xs.max() + 1 + 10, 223)]
        assert boxes[b].tolist() == want


def test_region_inside_image_and_scales_with_size():
    assert [margin_pixels(s) for s in (224, 112, 64, 32)] == [10, 5, 3, 1]
    native = torch.zeros(1, 7, 7)
    native[0, 2, 4] = 1.0  # one hot cell: the region sits around it at every size
    b224 = activation_region(upsample_bicubic(native, (224, 224)))[0].float()
    b112 = activation_region(upsample_bicubic(native, (112, 112)))[0].float()
    assert (b224 - 2 * b112).abs().max().item() <= 2
    centre = ((b224[0] + b224[1]) / 2 / 224 * 7, (b224[2] + b224[3]) / 2 / 224 * 7)
    assert abs(centre[0] - 2.5) < 0.5 and abs(centre[1] - 4.5) < 0.5
    corner = torch.zeros(1, 7, 7)
    corner[0, 6, 6] = 1.0
    for size in (32, 64, 224):
        y0, y1, x0, x1 = activation_region(upsample_bicubic(corner, (size, size)))[0].tolist()
        assert 0 <= y0 < y1 <= size - 1 and 0 <= x0 < x1 <= size - 1  # reference: last row/col never protected
        y0, y1, x0, x1 = activation_region(upsample_bicubic(corner, (size, size)), reference_clip=False)[0].tolist()
        assert y1 == size and x1 == size


def test_proto_explainer(trained):
    model = trained["model"]
    split = read_split(trained["root"] / "data", "test")
    x, y = split.tensors(slice(0, 6)), torch.from_numpy(split.labels[:6])
    maps = get_explainer("proto")(model, x, y)
    assert maps.shape == (6, 32, 32) and torch.isfinite(maps).all()
    sim, _ = model.prototype_maps(x)
    native = get_explainer("proto")(model, x, y, upsample=False)
    own = sim.view(6, 4, 2, *sim.shape[-2:])[torch.arange(6), y]  # [6, m, h, w]
    torch.testing.assert_close(native, own[torch.arange(6), own.flatten(2).amax(2).argmax(1)])
    torch.testing.assert_close(maps, upsample_bicubic(native, (32, 32)))
    second = get_explainer("proto")(model, x, y, prototype=1, upsample=False)
    torch.testing.assert_close(second, own[:, 1])
    with pytest.raises(ValueError, match="prototype must be one of"):
        get_explainer("proto")(model, x, y, prototype=5)


@pytest.mark.parametrize("kind", ["noise", "pgd"])
def test_perturbation_never_touches_the_protected_region(trained, kind):
    model = trained["model"]
    split = read_split(trained["root"] / "data", "test")
    x, y = split.tensors(slice(0, 8)), torch.from_numpy(split.labels[:8])
    res = mis.benchmark(model, x, y, kind=kind, iters=5, seed=3)
    prot = res["protected"][:, None].expand_as(x)
    assert prot.any() and (~prot).any()
    assert torch.equal(res["perturbed"][prot], x[prot])  # bit-exact inside
    delta = (res["perturbed"] - x)[~prot].abs()
    assert (delta > 0).float().mean() > 0.9 and delta.max() <= 0.4 * 0.229 + 1e-6
    again = mis.benchmark(model, x, y, kind=kind, iters=5, seed=3)
    assert torch.equal(again["perturbed"], res["perturbed"])  # seeded


def test_pgd_lowers_activation_more_than_noise(trained):
    model = trained["model"]
    split = read_split(trained["root"] / "data", "test")
    x, y = split.tensors(slice(0, 16)), torch.from_numpy(split.labels[:16])
    noise = mis.benchmark(model, x, y, kind="noise", seed=0)
    pgd = mis.benchmark(model, x, y, kind="pgd", iters=10, step=0.04, seed=0)
    assert pgd["PAC"].mean() > noise["PAC"].mean()


def test_unperturbed_image_scores_perfect(trained):
    model = trained["model"]
    split = read_split(trained["root"] / "data", "test")
    x, y = split.tensors(slice(0, 8)), torch.from_numpy(split.labels[:8])
    for attack in mis.ATTACKS:
        res = mis.benchmark(model, x, y, kind="noise", eps=0.0, attack=attack)
        for key in ("PAC", "PRC", "PLC", "AC"):
            assert torch.equal(res[key], torch.zeros(8)), (attack, key)


def test_metrics_on_known_shifts():
    torch.testing.assert_close(mis.pac(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0])), torch.tensor([50.0, 0.0]))
    own = torch.tensor([[True, True, False, False]])
    before, after = torch.tensor([[3.0, 1.0, 2.0, 1.0]]), torch.tensor([[1.0, 5.0, 2.0, 1.5]])
    # two other-class prototypes now beat j=0; the own-class one (5.0) does not count
    assert mis.prc(before, after, torch.tensor([0]), own).tolist() == [2.0]
    assert mis.prc(after, before, torch.tensor([0]), own).tolist() == [-2.0]
    ramp = torch.arange(100.0).view(1, 10, 10)
    shifted = ramp.flatten().roll(-5).view(1, 10, 10)  # top-10% pixels move 5 places: IoU 5/15
    assert mis.plc(ramp, shifted, (10, 10)).item() == pytest.approx(100 * (1 - 5 / 15))
    assert mis.plc(ramp, ramp, (40, 40)).item() == 0.0
    assert mis.plc(torch.ones(1, 4, 4), torch.ones(1, 4, 4), (8, 8)).item() == 0.0  # empty masks
    logits_b, logits_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    assert mis.accuracy_change(logits_b, logits_a, torch.tensor([0, 1])).tolist() == [100.0, 0.0]
    assert mis.top_in_set(torch.tensor([[1.0, 5.0, 3.0]]), torch.tensor([[0, 2]])).tolist() == [2]


def test_bad_input_names_what_is_wrong():
    torch.manual_seed(0)
    model = build(_mcfg(_cfg())).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="kind must be one of"):
        mis.benchmark(model, x, y, kind="blur")
    with pytest.raises(ValueError, match="attack must be one of"):
        mis.benchmark(model, x, y, attack="all")
    with pytest.raises(ValueError, match="labels \\[B\\]"):
        mis.benchmark(model, x, y[:1])
    with pytest.raises(ValueError, match="needs a ProtoPNet"):
        get_explainer("proto")(torch.nn.Identity(), x, y)
    with pytest.raises(ValueError, match="unknown architecture .vgg11.; choose from"):
        build({**_mcfg(_cfg()), "arch": "vgg11"})


def test_backbone_starts_from_the_trained_standard_model(tiny_project, tiny_cfg):
    """Default `backbone: standard`: the trunk starts as the standard model of the same seed (warm-up
    leaves the backbone frozen, as the reference, so after it the trunks are still equal)."""
    from xaibench import paths
    from xaibench.training.fit import train as train_standard
    from xaibench.training.protopnet import train as train_protopnet
    tiny_cfg["train"]["epochs"] = 1
    data = tiny_project / "data/prepared/shapes"
    train_standard(tiny_cfg, data, "standard", 0, paths.model_dir("shapes", "standard", 0), "cpu")
    tiny_cfg["train"]["protopnet"].update({**PCFG, "backbone": "standard"})
    train_protopnet(tiny_cfg, data, "protopnet", 0, tiny_project / "proto", "cpu", stop_after=1)  # one warm epoch
    std = torch.load(paths.model_dir("shapes", "standard", 0) / "model.pt", weights_only=False)["state_dict"]
    proto = torch.load(tiny_project / "proto/checkpoint.pt", weights_only=False)["state_dict"]
    trunk = [k for k in std if k.startswith("trunk.") and k.endswith(("weight", "bias"))]  # BN statistics move
    assert trunk and all(torch.equal(std[k], proto[k]) for k in trunk)
