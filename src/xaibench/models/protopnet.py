"""ProtoPNet (Chen et al., NeurIPS 2019, "This looks like that"), as in cfchen-duke/ProtoPNet `model.py`.

images in [0,1] -> normalise -> backbone trunk -> add-on layers (1x1 convs ending in a sigmoid)
-> prototype layer: squared L2 distance d of every 1x1 patch to each of P = m*K prototypes (m per
class, prototype j belongs to class j // m) -> similarity g = log((d+1)/(d+eps)), max-pooled over the
map (computed as g(min d), since g falls with d) -> last layer Linear(P, K) without bias, initialised to
1 for a prototype's own class and -0.5 for the others.

The model keeps the `Classifier` interface: `features(x)` is the add-on feature map (the patches the
prototypes are compared with), `classify(f)` the logits, `forward = classify(features(x))`. Push
(training/protopnet.py) writes where each prototype came from into the buffers `proto_source`
(train image index, row, column of the feature cell; -1 before any push) and `proto_box` (the
source image's activation region, y0, y1, x0, x1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import IMAGENET_MEAN, IMAGENET_STD, create_model, load_pretrained

ADD_ONS = ("regular", "bottleneck")


def backbone(arch: str, width: int = 16, image_size: int = 224, pretrained: str | None = None):
    """(trunk, out_channels): the trunk of a registered classifier (xaibench.catalog.ARCHITECTURES)."""
    clf = create_model(arch, 1, width=width, image_size=image_size)
    if pretrained:
        load_pretrained(clf, pretrained)
    return clf.trunk, clf.fc.in_features


def add_on_layers(cin: int, dim: int, kind: str) -> nn.Sequential:
    """'regular': conv1x1(C->D)-ReLU-conv1x1(D->D)-Sigmoid; 'bottleneck': halve channels down to D (reference)."""
    if kind == "regular":
        layers = [nn.Conv2d(cin, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1), nn.Sigmoid()]
    elif kind == "bottleneck":
        layers, c = [], cin
        while c > dim or not layers:
            out = max(dim, c // 2)
            layers += [nn.Conv2d(c, out, 1), nn.ReLU(), nn.Conv2d(out, out, 1),
                       nn.ReLU() if out > dim else nn.Sigmoid()]
            c = out
        if c != dim:  # cin < dim: the reference would fail its assert; widen once and end in a sigmoid
            layers[-1] = nn.ReLU()
            layers += [nn.Conv2d(c, dim, 1), nn.Sigmoid()]
    else:
        raise ValueError(f"unknown add_on '{kind}'; choose from: {', '.join(ADD_ONS)}")
    seq = nn.Sequential(*layers)
    for m in seq.modules():
        if isinstance(m, nn.Conv2d):  # reference _initialize_weights
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return seq


class ProtoPNet(nn.Module):
    """Prototypical-part network; see the module docstring for the definition and reference."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, prototypes_per_class: int = 10,
                 prototype_dim: int = 128, add_on: str = "regular", epsilon: float = 1e-4,
                 incorrect_strength: float = -0.5):
        super().__init__()
        if prototypes_per_class < 1 or num_classes < 1:
            raise ValueError(f"need >= 1 class and prototype per class, got {num_classes}, {prototypes_per_class}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.trunk = trunk
        self.add_on = add_on_layers(channels, prototype_dim, add_on)
        P = num_classes * prototypes_per_class
        self.num_classes, self.prototypes_per_class, self.epsilon = num_classes, prototypes_per_class, epsilon
        self.prototype_vectors = nn.Parameter(torch.rand(P, prototype_dim))  # reference: U[0,1), shape D x 1 x 1
        self.register_buffer("prototype_class", torch.arange(P) // prototypes_per_class)
        self.register_buffer("proto_source", torch.full((P, 3), -1, dtype=torch.long))
        self.register_buffer("proto_box", torch.full((P, 4), -1, dtype=torch.long))
        self.last_layer = nn.Linear(P, num_classes, bias=False)
        self.set_last_layer(incorrect_strength)

    @property
    def num_prototypes(self) -> int:
        return self.prototype_vectors.shape[0]

    @property
    def class_identity(self) -> torch.Tensor:
        """One-hot [P, K]: prototype j belongs to class j // m."""
        return F.one_hot(self.prototype_class, self.num_classes).to(self.prototype_vectors.dtype)

    def set_last_layer(self, incorrect_strength: float = -0.5) -> None:
        """W[c, j] = 1 if prototype j is of class c else `incorrect_strength` (reference: -0.5)."""
        ident = self.class_identity.t()
        with torch.no_grad():
            self.last_layer.weight.copy_(ident + incorrect_strength * (1 - ident))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Add-on feature map [B,D,h,w]: the patches prototypes are compared with."""
        return self.add_on(self.trunk((x - self.mean) / self.std))

    def distances(self, f: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every 1x1 patch to every prototype, [B,P,h,w] (reference's conv form, ReLU'd)."""
        p = self.prototype_vectors
        xp = F.conv2d(f, p[:, :, None, None])
        d = (f * f).sum(1, keepdim=True) - 2 * xp + (p * p).sum(1)[None, :, None, None]
        return d.relu()

    def similarity(self, d: torch.Tensor) -> torch.Tensor:
        """Log activation g(d) = log((d+1)/(d+eps)), largest (log(1/eps)) at d = 0."""
        return torch.log((d + 1) / (d + self.epsilon))

    def logits_from_min(self, min_d: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.similarity(min_d))

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.logits_from_min(self.distances(f).amin(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def prototype_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarity maps [B,P,h,w], min distances [B,P]) of images x: what explainer and benchmark read."""
        d = self.distances(self.features(x))
        return self.similarity(d), d.amin(dim=(2, 3))


def build(mcfg: dict) -> ProtoPNet:
    """Architecture builder of the `protopnet` / `protopnet_comp` variants from a stored model config.

    mcfg: arch, width, image_size, num_classes and train.protopnet (prototypes_per_class,
    prototype_dim, add_on, epsilon); train.pretrained optionally names a local backbone state_dict.
    """
    p = mcfg["train"]["protopnet"]
    trunk, channels = backbone(mcfg["arch"], mcfg.get("width", 16), mcfg["image_size"],
                               mcfg["train"].get("pretrained"))
    return ProtoPNet(trunk, channels, mcfg["num_classes"], p["prototypes_per_class"], p["prototype_dim"],
                     p["add_on"], p["epsilon"])


# ---- a prototype's activation region (ProtoPNet's push and "this looks like that" geometry) --------
# Reference: cfchen-duke/ProtoPNet push.py, helpers.find_high_activation_crop; the benchmark protects the
# box grown by 10 px per side at 224 px. Used by push (training), the `proto` explainer and paper A's
# benchmark, so it lives with the model.

def upsample_bicubic(maps: torch.Tensor, size) -> torch.Tensor:
    """[B,h,w] -> [B,H,W] bicubic, half-pixel centres, a = -0.75: cv2.resize INTER_CUBIC's kernel (tested)."""
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bicubic", align_corners=False)[:, 0]


def margin_pixels(size: int, margin_at_224: float = 10) -> int:
    """The benchmark's 10 px margin at 224 px, scaled to an image side of `size` px (rounded)."""
    return int(round(margin_at_224 * size / 224))


def activation_region(maps: torch.Tensor, percentile: float = 95, margin: int | None = None,
                      reference_clip: bool = True) -> torch.Tensor:
    """Boxes [B,4] long (y0, y1, x0, x1; half-open) of upsampled maps [B,H,W].

    Tight box around pixels >= the `percentile`-th percentile (numpy's linear interpolation, as
    np.percentile in find_high_activation_crop), grown by `margin` px per side (default: 10 px at
    224 px, scaled to the map height). reference_clip: the ends are clipped to side-1, as the
    released benchmark does (min(y1 + m, img_size - 1) as a slice end, so the last row and column
    are never inside a grown box); False clips to the side. With margin 0 the box is returned
    unclipped (the find_high_activation_crop box itself).
    """
    if maps.ndim != 3:
        raise ValueError(f"activation_region needs maps [B,H,W], got shape {tuple(maps.shape)}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    B, H, W = maps.shape
    m = margin_pixels(H) if margin is None else int(margin)
    thr = torch.quantile(maps.reshape(B, -1).double(), percentile / 100, dim=1)
    hot = maps.double() >= thr[:, None, None]
    rows, cols = hot.any(2), hot.any(1)  # [B,H], [B,W]; never empty: the maximum is >= any percentile
    ar_h = torch.arange(H, device=maps.device)
    ar_w = torch.arange(W, device=maps.device)
    y0 = torch.where(rows, ar_h, H).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, W).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    if m:
        hi_h, hi_w = (H - 1, W - 1) if reference_clip else (H, W)
        y0, x0 = (y0 - m).clamp_min(0), (x0 - m).clamp_min(0)
        y1, x1 = (y1 + m).clamp_max(hi_h), (x1 + m).clamp_max(hi_w)
    return torch.stack([y0, y1, x0, x1], 1)


def box_mask(boxes: torch.Tensor, size) -> torch.Tensor:
    """Boxes [B,4] (y0, y1, x0, x1) -> bool [B,H,W], True inside."""
    H, W = size
    ys = torch.arange(H, device=boxes.device)[None, :, None]
    xs = torch.arange(W, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (ys >= b[:, 0]) & (ys < b[:, 1]) & (xs >= b[:, 2]) & (xs < b[:, 3])
