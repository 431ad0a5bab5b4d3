"""Train a small classifier outside xaibench and save it the two ways `models.external` accepts.

    python examples/external_model/make_models.py --data data/prepared/shapes --out data/external

writes small_cnn.pt (a state_dict of xaibench's `small_cnn` architecture) and small_cnn.ts.pt (the same
model as TorchScript: `torch.jit.script` keeps its `features` and `classify` methods, which Grad-CAM
needs). The settings that score them are printed at the end (README, "Use it on your own model / method").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from xaibench.data import read_meta, read_split
from xaibench.models import create_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/prepared/shapes", help="a prepared dataset (xaibench prepare)")
    parser.add_argument("--out", default="data/external")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    meta, train = read_meta(args.data), read_split(args.data, "train")
    classes = len(meta["classes"])
    model = create_model("small_cnn", classes, width=args.width)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):  # a plain loop: any training of your own will do
        for i in torch.randperm(len(train)).split(32):
            idx = i.sort().values.numpy()
            loss = F.cross_entropy(model(train.tensors(idx)), torch.from_numpy(train.labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "small_cnn.pt")
    torch.jit.save(torch.jit.script(model), out / "small_cnn.ts.pt")
    print(f"""models:
  external:
    mine_sd: {{path: {out / 'small_cnn.pt'}, arch: small_cnn, width: {args.width}, classes: {classes}}}
    mine_ts: {{path: {out / 'small_cnn.ts.pt'}, format: torchscript, classes: {classes}}}""")


if __name__ == "__main__":
    main()
