"""Train small classifiers outside xaibench and save them the three ways `models.external` accepts.

    python examples/external_model/make_models.py --data data/prepared/shapes --out data/external

writes small_cnn.pt (a state_dict of xaibench's `small_cnn` architecture), small_cnn.ts.pt (the same
model as TorchScript: `torch.jit.script` keeps its `features` and `classify` methods, which Grad-CAM
needs) and vit.pt2 (a tiny torchvision ViT, 4x4 patches, saved with torch.export: only forward, so its
settings name the block Grad-CAM explains and how its tokens become a grid). The settings that score
them are printed at the end (README, "Use it on your own model / method").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from xaibench.data import read_meta, read_split
from xaibench.models import create_model


def fit(model, train, epochs: int, lr: float) -> None:
    """A plain loop: any training of your own will do."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for i in torch.randperm(len(train)).split(32):
            idx = i.sort().values.numpy()
            loss = F.cross_entropy(model(train.tensors(idx)), torch.from_numpy(train.labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


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
    fit(model, train, args.epochs, 3e-3)
    side = meta["image_size"]
    vit = torchvision.models.VisionTransformer(image_size=side, patch_size=side // 4, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=classes)
    fit(vit, train, args.epochs, 1e-3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "small_cnn.pt")
    torch.jit.save(torch.jit.script(model), out / "small_cnn.ts.pt")
    example = train.tensors(np.arange(2))  # the batch dimension stays free: xaibench runs other batch sizes
    torch.export.save(torch.export.export(vit, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}),
                      out / "vit.pt2")
    print(f"""models:
  external:
    mine_sd: {{path: {out / 'small_cnn.pt'}, arch: small_cnn, width: {args.width}, classes: {classes}}}
    mine_ts: {{path: {out / 'small_cnn.ts.pt'}, format: torchscript, classes: {classes}}}
    mine_vit: {{path: {out / 'vit.pt2'}, format: export, classes: {classes}, layer: encoder.layers.encoder_layer_0, reshape: tokens}}""")


if __name__ == "__main__":
    main()
