"""Speed of our batched explainers and metrics against peers measured in the same run.

Prints ratios (peer time / our time, and our time / the forward+backward floor); asserts nothing,
since wall time depends on the machine. Run: python benchmarks/bench_explain_and_metrics.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xaibench import explain
from xaibench.metrics.localization import pointing_game, relevance_mass
from xaibench.metrics.salience import spatial_entropy
from xaibench.models import create_model


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=16).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    t = torch.randint(0, 4, (args.batch,))

    def floor():
        xx = x.clone().requires_grad_(True)
        model(xx).gather(1, t[:, None]).sum().backward()

    ours = best_of(lambda: explain.gradcam(model, x, t), args.repeat)
    rows = [("forward+backward floor", best_of(floor, args.repeat))]
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        cam = GradCAM(model=model, target_layers=[model.trunk[-1]])
        targets = [ClassifierOutputTarget(int(c)) for c in t]
        rows.append(("pytorch-grad-cam GradCAM", best_of(lambda: cam(input_tensor=x, targets=targets), args.repeat)))
    except ImportError:
        pass
    try:
        from captum.attr import LayerAttribution, LayerGradCam
        lgc = LayerGradCam(model, model.trunk[-1])
        rows.append(("captum LayerGradCam", best_of(lambda: LayerAttribution.interpolate(
            lgc.attribute(x, target=t, relu_attributions=True), x.shape[-2:]), args.repeat)))
    except ImportError:
        pass
    print(f"Grad-CAM, batch {args.batch} at {args.size}px (ours {ours * 1000:.1f} ms)")
    for name, sec in rows:
        print(f"  {name:28s} {sec * 1000:8.1f} ms   ours/peer = {ours / sec:5.2f}")

    maps = explain.gradcam(model, x, t)
    masks = torch.rand(args.batch, args.size, args.size) > 0.7
    ours = best_of(lambda: (relevance_mass(maps, masks), pointing_game(maps, masks), spatial_entropy(maps)), args.repeat)
    print(f"localisation + entropy metrics, batch {args.batch} (ours {ours * 1000:.2f} ms)")
    try:
        import quantus
        a, s = maps[:, None].numpy(), masks[:, None].numpy().astype(np.float32)
        kw = dict(model=None, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a, s_batch=s, channel_first=True)
        q = dict(disable_warnings=True, display_progressbar=False)
        peer = best_of(lambda: (quantus.RelevanceMassAccuracy(**q)(**kw), quantus.PointingGame(**q)(**kw),
                                quantus.Complexity(normalise=False, **q)(**kw)), args.repeat)
        print(f"  {'quantus (same three)':28s} {peer * 1000:8.1f} ms   peer/ours = {peer / ours:7.1f}x")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
