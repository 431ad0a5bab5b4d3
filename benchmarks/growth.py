"""Cost growth: double the images and the seeds together and watch time and peak memory.

Each size runs in its own interpreter (so peak memory is that run's alone: resource.getrusage
maxrss of the child): S models (seeds 0..S-1, default settings, small_cnn) each explain the first
N test images with the default explainers of a `standard` model that are cheap enough here
(gradcam, gxi, agf; explain_split in explain.batch_size batches, as an explain job) and score them
with the localisation measures. Work is N·S image-models, so time should grow ×4 per step
(constant seconds per image-model), and peak memory should stay flat: batches are streamed, never
the whole split through the model at once. Writes results/bench/growth.csv and prints it.
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradcam", "gxi", "agf")


def child(root: str, n: int, seeds: int, params: str) -> None:
    import resource

    import torch

    from xaibench import config, explain
    from xaibench.data import read_meta, read_split
    from xaibench.explain import agf, attribution  # noqa: F401 (register)
    from xaibench.metrics.localization import pixel_average_precision, pointing_game, relevance_mass
    from xaibench.training import fit

    torch.set_num_threads(1)
    cfg = config.load(params)
    meta, split = read_meta(root), read_split(root, "test")
    split.images, split.labels, split.masks = split.images[:n], split.labels[:n], split.masks[:n]
    start = time.perf_counter()
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = fit.build(fit.model_config(cfg, meta, "standard", seed)).eval()
        for method in METHODS:
            out = explain.explain_split(model, split, method, "predicted", cfg["explain"]["batch_size"], "cpu",
                                        cfg["explain"]["options"].get(method, {}))
            maps, masks = torch.from_numpy(out["maps"]).float().clamp_min(0), torch.from_numpy(split.masks > 127)
            for fn in (pointing_game, relevance_mass, pixel_average_precision):
                fn(maps, masks)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": n, "seeds": seeds, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128, help="images of the smallest size (doubled twice)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1, help="runs per size, interleaved (size 1, 2, 3, 1, 2, 3, ...); best kept")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default="results/bench/growth.csv")
    ap.add_argument("--child", nargs=3, metavar=("ROOT", "N", "SEEDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]), args.params)

    import pandas as pd

    from xaibench import config
    from xaibench.data import prepare

    cfg = config.load(args.params)
    sizes = [(args.images * 2 ** k, 2 ** k) for k in range(args.steps)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dcfg = copy.deepcopy(cfg["data"])
        dcfg["shapes"].update(n_train=16, n_val=16, n_test=sizes[-1][0], n_ood=16, n_pairs=16)
        prepare("shapes", dcfg, Path(tmp) / "shapes")
        for _ in range(args.reps):
            for n, s in sizes:
                out = subprocess.run([sys.executable, __file__, "--params", args.params, "--child",
                                      str(Path(tmp) / "shapes"), str(n), str(s)],
                                     check=True, capture_output=True, text=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    frame = pd.DataFrame(rows).groupby(["images", "seeds"], as_index=False).agg(
        seconds=("seconds", "min"), peak_rss_mb=("peak_rss_mb", "max"))
    frame["image_models"] = frame.images * frame.seeds
    frame["ms_per_image_model"] = 1000 * frame.seconds / frame.image_models
    frame["time_vs_first"] = frame.seconds / frame.seconds.iloc[0]
    frame["work_vs_first"] = frame.image_models / frame.image_models.iloc[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.round(3).to_csv(args.out, index=False)
    print(frame.round(3).to_string(index=False))
    print(f"{args.out}: methods {', '.join(METHODS)}")


if __name__ == "__main__":
    main()
