"""`make bench`: our explainers, metric functions, training step, data loader and job start-up, each
timed against its floor and its peers in one process, interleaved (xaibench.speed), 1 torch thread.

Writes results/bench/speed.csv (one row per comparison; ratio = our time / the reference's,
the median over >= 7 interleaved repetitions of the per-repetition ratio (xaibench.speed), beside
best and median times; `met` = ratio <= limit) and prints it. Targets (issue 14):
Grad-CAM <= 1.1x the forward floor and faster than pytorch-grad-cam and Captum; every explainer
Captum also has at most Captum's time; AGF <= 3x the forward floor; metric functions >= 100x
Quantus on the same maps; training >= 0.9x the bare loop's throughput (time ratio <= 1/0.9);
start-up (the imports a job pays) < 10% of the default run's mean job time.

Models are untrained (built as the pipeline builds them, default settings, small_cnn at 64 px):
the time of a forward pass does not depend on the weights. Images, masks and labels are real
`shapes` data prepared at the default size into a temporary directory.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the training loop's progress bar: not part of what is timed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

from xaibench import config, explain, speed
from xaibench.data import prepare, read_meta, read_split
from xaibench.explain import agf as _agf, attribution, lap as _lap, prototypes as _proto  # noqa: F401 (register)
from xaibench.metrics import localization as loc, salience as sal, segmentation as seg, similarity as sim
from xaibench.metrics import deletion, perturbation
from xaibench.training import fit, losses

ROOT = Path(__file__).resolve().parents[1]

# Images per forward pass of the path/noise methods, ours and Captum's alike (our explainers' default).
PASS = inspect.signature(attribution.ig).parameters["internal_batch_size"].default


def data(cfg: dict, tmp: Path, n_train: int, n_test: int) -> Path:
    dcfg = copy.deepcopy(cfg["data"])
    dcfg["shapes"].update(n_train=n_train, n_val=32, n_test=n_test, n_ood=16, n_pairs=16)
    prepare("shapes", dcfg, tmp / "shapes")
    return tmp / "shapes"


def model(cfg: dict, meta: dict, variant: str, seed: int = 0):
    torch.manual_seed(seed)
    return fit.build(fit.model_config(cfg, meta, variant, seed)).eval()


def explainers(cfg, meta, test, reps) -> list[dict]:
    """Every registered explainer on a model it applies to, batch = explain.batch_size, beside the
    forward floor of the same model and batch and Captum / pytorch-grad-cam where they have it."""
    from captum.attr import InputXGradient, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    opts = cfg["explain"]["options"]
    bs = cfg["explain"]["batch_size"]
    x = test.tensors(slice(0, bs))
    std = model(cfg, meta, "standard")
    with torch.no_grad():
        t = std(x).argmax(1)
    abs_sum = attribution.REDUCTIONS["abs_sum"]
    lgc, sal_, ixg = LayerGradCam(std, std.trunk[-1]), Saliency(std), InputXGradient(std)
    cig = IntegratedGradients(std, multiply_by_inputs=True)
    cam = GradCAM(model=std, target_layers=[std.trunk[-1]])
    cam_targets = [ClassifierOutputTarget(int(c)) for c in t]
    base = attribution.baseline_image(std, x, "mean")
    ig_steps = opts.get("ig", {}).get("steps", 100)
    agf_opts = opts.get("agf", {})

    def floor(m, xx):
        def run():
            with torch.no_grad():
                m(xx)
        return run

    cases = {
        "forward": floor(std, x),
        "gradcam": lambda: explain.get("gradcam")(std, x, t),
        "captum LayerGradCam": lambda: lgc.attribute(x, target=t, relu_attributions=True),
        "pytorch-grad-cam GradCAM": lambda: cam(input_tensor=x, targets=cam_targets),
        "gradient": lambda: explain.get("gradient")(std, x, t),
        "captum Saliency": lambda: abs_sum(sal_.attribute(x, target=t, abs=False)),
        "gxi": lambda: explain.get("gxi")(std, x, t),
        "captum InputXGradient": lambda: ixg.attribute(x, target=t).sum(1),
        "ig": lambda: explain.get("ig")(std, x, t, steps=ig_steps),
        "captum IntegratedGradients": lambda: abs_sum(cig.attribute(
            x, baselines=base, target=t, n_steps=ig_steps, method="riemann_trapezoid", internal_batch_size=PASS)),
        "agf": lambda: explain.get("agf")(std, x, t, **agf_opts),
    }
    times = speed.interleaved(cases, reps)
    rows = [speed.compare("gradcam vs forward floor", "gradcam", times, "forward", 1.1, "<= 1.1x forward"),
            speed.compare("gradcam vs Captum", "gradcam", times, "captum LayerGradCam", 1.0, "faster than Captum",
                          note="both on the feature grid (native)"),
            speed.compare("gradcam vs pytorch-grad-cam", "gradcam", times, "pytorch-grad-cam GradCAM", 1.0,
                          "faster than pytorch-grad-cam", note="pytorch-grad-cam also upsamples and min-max scales"),
            speed.compare("agf vs forward floor", "agf", times, "forward", 3.0, "<= 3x forward",
                          note=f"options {agf_opts}")]
    for ours, peer in (("gradient", "captum Saliency"), ("gxi", "captum InputXGradient"),
                       ("ig", "captum IntegratedGradients")):
        rows.append(speed.compare(f"{ours} vs Captum", ours, times, peer, 1.0, "<= Captum",
                                  note=f"steps {ig_steps}" if ours == "ig" else ""))
    for ours in ("gradient", "gxi", "ig"):
        rows.append(speed.compare(f"{ours} vs forward floor", ours, times, "forward"))

    # SmoothGrad: 50 noisy copies per image, so a smaller batch (8 images = 400 forward images)
    xs, ts = x[:8], t[:8]
    nt = NoiseTunnel(Saliency(std))
    sg = opts.get("smoothgrad", {})
    samples, noise = sg.get("samples", 50), sg.get("noise", 0.15)
    times = speed.interleaved({
        "forward (8 images)": floor(std, xs),
        "smoothgrad": lambda: explain.get("smoothgrad")(std, xs, ts, samples=samples, noise=noise),
        "captum NoiseTunnel(Saliency)": lambda: abs_sum(nt.attribute(
            xs, nt_type="smoothgrad", nt_samples=samples, stdevs=noise, target=ts, abs=False,
            nt_samples_batch_size=PASS // len(xs))),
    }, reps)
    rows += [speed.compare("smoothgrad vs Captum", "smoothgrad", times, "captum NoiseTunnel(Saliency)", 1.0,
                           "<= Captum", note=f"batch 8, {samples} samples"),
             speed.compare("smoothgrad vs forward floor", "smoothgrad", times, "forward (8 images)")]

    # Self-explaining variants: their explainers against their own model's forward pass.
    lapm, proto = model(cfg, meta, "lap"), model(cfg, meta, "protopnet")
    lap_opts = opts.get("lap", {})
    with torch.no_grad():
        tl, tp = lapm(x).argmax(1), proto(x).argmax(1)
    times = speed.interleaved({
        "forward lap": floor(lapm, x),
        "lap": lambda: explain.get("lap")(lapm, x, tl, **lap_opts),
        "attention_cam": lambda: explain.get("attention_cam")(lapm, x, tl),
        "forward protopnet": floor(proto, x),
        "proto": lambda: explain.get("proto")(proto, x, tp),
    }, reps)
    rows += [speed.compare("lap vs forward floor", "lap", times, "forward lap"),
             speed.compare("attention_cam vs forward floor", "attention_cam", times, "forward lap"),
             speed.compare("proto vs forward floor", "proto", times, "forward protopnet")]
    return rows


def metrics(cfg, meta, test, reps) -> list[dict]:
    """Pure metric functions on one explain batch of Grad-CAM maps, beside Quantus (same maps,
    same masks), scikit-image / SciPy / scikit-learn loops (the references the tests agree with),
    and for model-based measures the forward passes they must make."""
    import quantus
    from scipy.stats import spearmanr
    from skimage.measure import shannon_entropy
    from skimage.metrics import structural_similarity
    from sklearn.metrics import average_precision_score

    bs = cfg["explain"]["batch_size"]
    std = model(cfg, meta, "standard")
    x, labels = test.tensors(slice(0, bs)), torch.from_numpy(test.labels[:bs])
    with torch.no_grad():
        t = std(x).argmax(1)
    native = explain.get("gradcam")(std, x, t)
    maps = explain.upsample(native, x.shape[-2:])
    masks = test.mask_tensor(slice(0, bs)) > 0.5
    other = maps.flip(-1)
    q = dict(disable_warnings=True, display_progressbar=False)
    a, s = maps[:, None].numpy(), masks[:, None].numpy().astype(np.float32)
    kw = dict(model=None, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a, s_batch=s, channel_first=True)
    qpg, qrm = quantus.PointingGame(**q), quantus.RelevanceMassAccuracy(**q)
    qcx = quantus.Complexity(normalise=False, abs=False, **q)
    # the entropy family scores the native grid by default (metrics.salience.resolution: native)
    kw_native = dict(kw, x_batch=F.interpolate(x, native.shape[-2:]).numpy(), a_batch=native[:, None].numpy(),
                     s_batch=None)
    mn, on, mk = maps.numpy().astype(np.float64), other.numpy().astype(np.float64), masks.numpy()
    qn = sal.quantise(native).numpy().astype(np.uint8)
    times = speed.interleaved({
        "pointing_game": lambda: loc.pointing_game(maps, masks),
        "quantus PointingGame": lambda: qpg(**kw),
        "relevance_mass": lambda: loc.relevance_mass(maps, masks),
        "quantus RelevanceMassAccuracy": lambda: qrm(**kw),
        "spatial_entropy": lambda: sal.spatial_entropy(maps),
        "quantus Complexity": lambda: qcx(**kw),
        "spatial_entropy (native)": lambda: sal.spatial_entropy(native),
        "quantus Complexity (native)": lambda: qcx(**kw_native),
        "pixel_ap": lambda: loc.pixel_average_precision(maps, masks),
        "sklearn average_precision_score": lambda: [average_precision_score(mk[i].ravel(), mn[i].ravel())
                                                    for i in range(len(mk))],
        "histogram_entropy": lambda: sal.histogram_entropy(native),
        "skimage shannon_entropy": lambda: [shannon_entropy(m) for m in qn],
        "ssim": lambda: sim.ssim(maps, other),
        "skimage structural_similarity": lambda: [structural_similarity(mn[i], on[i], data_range=1.0)
                                                  for i in range(len(mn))],
        "spearman": lambda: sim.spearman(maps, other),
        "scipy spearmanr": lambda: [spearmanr(mn[i].ravel(), on[i].ravel()) for i in range(len(mn))],
        "segmentation_scores": lambda: seg.segmentation_scores(maps, masks),
    }, reps)
    rows = [speed.compare(f"{o} vs Quantus", o, times, p, 0.01, ">= 100x faster than Quantus",
                          note=f"{tuple(maps.shape)} maps" if "native" not in o else f"{tuple(native.shape)} maps")
            for o, p in (("pointing_game", "quantus PointingGame"), ("relevance_mass", "quantus RelevanceMassAccuracy"),
                         ("spatial_entropy", "quantus Complexity"),
                         ("spatial_entropy (native)", "quantus Complexity (native)"))]
    trio = ("pointing_game", "relevance_mass", "spatial_entropy")
    times["pointing_game+relevance_mass+spatial_entropy"] = [sum(v) for v in zip(*(times[k] for k in trio))]
    times["quantus (the same three)"] = [sum(v) for v in zip(*(times[k] for k in times
                                                                if k.startswith("quantus ") and "native" not in k))]
    rows.append(speed.compare("localization+entropy vs Quantus", "pointing_game+relevance_mass+spatial_entropy",
                              times, "quantus (the same three)", 0.01, ">= 100x faster than Quantus"))
    for o, p in (("ssim", "skimage structural_similarity"), ("pixel_ap", "sklearn average_precision_score"),
                 ("histogram_entropy", "skimage shannon_entropy"), ("spearman", "scipy spearmanr")):
        rows.append(speed.compare(f"{o} vs {p.split()[0]}", o, times, p, 1.0, "faster than the per-image loop",
                                  note="the library the tests check it against, image by image"))
    rows.append(speed.compare("segmentation_scores (no peer)", "segmentation_scores", times, None))

    # Model-based measures against the forward passes they must make.
    fr = cfg["metrics"].get("deletion", {}).get("fractions") or [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    pf = list(perturbation.FRACTIONS)
    xb_del = x.repeat(len(fr) + 1, 1, 1, 1)

    def forwards(xx, chunk=256):
        def run():
            with torch.no_grad():
                for i in range(0, len(xx), chunk):
                    std(xx[i:i + chunk])
        return run

    def pert_floor():
        with torch.no_grad():
            for _ in pf:
                std(x)

    times = speed.interleaved({
        "deletion_curves": lambda: torch.no_grad()(deletion.deletion_curves)(std, x, maps, t, labels, fr),
        f"{len(fr) + 1} forwards": forwards(xb_del),
        "perturbation_curves": lambda: torch.no_grad()(perturbation.perturbation_curves)(std, x, labels, maps),
        f"{len(pf)} forwards": pert_floor,
    }, reps)
    rows += [speed.compare("deletion_curves vs its forward passes", "deletion_curves", times, f"{len(fr) + 1} forwards",
                           note=f"fractions {fr}"),
             speed.compare("perturbation_curves vs its forward passes", "perturbation_curves", times,
                           f"{len(pf)} forwards")]
    return rows


def training(cfg, meta, root: Path, reps) -> list[dict]:
    """One epoch of our training loop (fit.fit_epoch: the `standard` variant's loss, AdamW, the
    default batch size) against a bare torch forward + backward + AdamW loop over the same images,
    batches and model; and the data loader (read_split + per-batch tensors) against np.load."""
    tcfg = cfg["train"]
    train_split, val_split = read_split(root, "train"), read_split(root, "val")
    mcfg = fit.model_config(cfg, meta, "standard", 0)
    fmt = getattr(fit, "CHANNELS_LAST", torch.contiguous_format)
    ours_m = fit.build(mcfg).to(memory_format=fmt)
    bare_m = fit.build(mcfg)
    bare_m.load_state_dict(ours_m.state_dict())
    kw = dict(lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    ours_opt, bare_opt = torch.optim.AdamW(ours_m.parameters(), **kw), torch.optim.AdamW(bare_m.parameters(), **kw)
    images = train_split.tensors()
    labels = torch.from_numpy(train_split.labels)
    bs, n = tcfg["batch_size"], len(train_split)
    loss_fn = losses.cross_entropy

    def ours():
        fit.fit_epoch(ours_m, ours_opt, loss_fn, train_split, val_split, tcfg, tcfg["lr"], 0, tcfg["epochs"], 0,
                      torch.device("cpu"), "bench")

    def bare():
        bare_m.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            loss = F.cross_entropy(bare_m(images[idx]), labels[idx])
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()

    path = root / "train.npz"

    def loader():
        split = read_split(root, "train")
        order = np.random.default_rng(0).permutation(len(split))
        for i in range(0, len(split), bs):
            split.tensors(np.sort(order[i:i + bs]))

    def np_floor():
        arr = np.load(path)["images"]
        order = np.random.default_rng(0).permutation(len(arr))
        for i in range(0, len(arr), bs):
            torch.from_numpy(arr[np.sort(order[i:i + bs])]).permute(0, 3, 1, 2).float().div_(255)

    times = speed.interleaved({"fit_epoch": ours, "bare loop": bare}, max(7, reps))
    rows = [speed.compare("training epoch vs bare loop", "fit_epoch", times, "bare loop", 1 / 0.9,
                          ">= 0.9x bare loop throughput",
                          note=f"{n} images, batch {bs}; ours includes validation of {len(val_split)} images")]
    times = speed.interleaved({"read_split + batches": loader, "np.load + batches": np_floor}, reps)
    rows.append(speed.compare("data loader vs np.load", "read_split + batches", times, "np.load + batches"))
    return rows


JOB_IMPORTS = "import xaibench.cli, xaibench.explain, xaibench.metrics, xaibench.training, xaibench.data"


def startup(reps: int, runs: Path) -> list[dict]:
    """A job's start-up: a fresh interpreter importing what train/explain/measure jobs import,
    against the mean wall time of the jobs of a default run (its Snakemake benchmark files)."""
    def run(code):
        return lambda: subprocess.run([sys.executable, "-c", code], check=True)
    times = speed.interleaved({"job imports": run(JOB_IMPORTS), "python -c pass": run("pass")}, reps)
    jobs = speed.job_times(runs)["s"].tolist() if runs.is_dir() else []
    row = speed.compare("job start-up vs mean job time", "job imports", times, f"mean of {len(jobs)} jobs in {runs}"
                        if jobs else None, 0.10, "< 10% of the mean job time", reference_s=jobs or None,
                        note="" if jobs else f"no benchmark files under {runs}: run the default pipeline first")
    if jobs:  # against the mean job, not the best: the share of the run's time
        row.update(reference_s_best=statistics.mean(jobs), reference_s_median=statistics.median(jobs))
        row.update(ratio=row["ours_s_median"] / row["reference_s_best"],
                   ratio_best=row["ours_s_best"] / row["reference_s_best"],
                   ratio_median=row["ours_s_median"] / row["reference_s_median"])
        row["met"] = bool(row["ratio"] <= 0.10)
        row["note"] = "ratio: median start-up / mean job time (reference_s_best holds the mean)"
    return [row, speed.compare("job imports vs bare interpreter", "job imports", times, "python -c pass")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions (>= 7 for the report)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--runs", default="results/benchmarks", help="benchmark files of a default run (start-up share)")
    ap.add_argument("--out", default="results/bench/speed.csv")
    ap.add_argument("--n-train", type=int, default=512, help="training images per timed epoch")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = config.load(args.params)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = data(cfg, Path(tmp), args.n_train, cfg["explain"]["batch_size"])
        meta, test = read_meta(root), read_split(root, "test")
        rows = []
        for part in (lambda: explainers(cfg, meta, test, args.reps), lambda: metrics(cfg, meta, test, args.reps),
                     lambda: training(cfg, meta, root, args.reps), lambda: startup(args.reps, Path(args.runs))):
            t = time.perf_counter()
            rows += part()
            print(f"[{time.perf_counter() - t:6.1f} s] {rows[-1]['item']}", file=sys.stderr)
    path = speed.write_csv(rows, args.out)
    import pandas as pd
    frame = pd.read_csv(path)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 45):
        print(frame[["item", "ours_s_best", "ours_s_median", "reference_s_best", "reference_s_median", "ratio",
                     "ratio_best", "target", "met"]].to_string(index=False))
    print(f"{path}: {len(rows)} rows in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
