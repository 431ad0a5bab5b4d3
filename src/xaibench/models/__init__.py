"""Classifiers with one interface every explainer and loss relies on.

A model takes images in [0,1] (it normalises internally) and exposes
`features(x) -> [B,C,h,w]` (the last conv block, the layer CAM/Grad-CAM explain) and
`classify(f) -> logits`, with `forward = classify(features(x))`. `create_model(name, ...)` is the
single entry point; architectures register themselves by name (the timm pattern) and are listed
in `xaibench.catalog.ARCHITECTURES` (the `train.arch` choices).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import catalog
from ..registry import Registry

MODELS = Registry("architecture", catalog.ARCHITECTURES)
register = MODELS.register
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """Normalise -> backbone trunk -> global average pool -> linear."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.trunk = trunk
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk((x - self.mean) / self.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def _block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(2)] if pool else [])


@register("small_cnn")
def small_cnn(num_classes: int, width: int = 32, **_) -> Classifier:
    """VGG-style CPU default: 4 conv/bn/relu blocks (3 max-pools), so a 64 px input gives an 8x8 map."""
    chans = [width, 2 * width, 4 * width, 4 * width]
    layers, cin = [], 3
    for i, c in enumerate(chans):
        layers += _block(cin, c, pool=i < len(chans) - 1)
        cin = c
    return Classifier(nn.Sequential(*layers), cin, num_classes)


def _resnet(name: str, num_classes: int, image_size: int) -> Classifier:
    """A torchvision ResNet trunk (no weights are ever downloaded).

    Below 128 px the stem becomes a 3x3 stride-1 conv without max-pool (the CIFAR variant), so the
    last block still has a useful 8x8 map at 64 px; at 128 px and up the ImageNet stem is kept.
    """
    import torchvision.models

    net = getattr(torchvision.models, name)(weights=None)
    if image_size < 128:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return Classifier(trunk, net.fc.in_features, num_classes)


@register("resnet18")
def resnet18(num_classes: int, image_size: int = 224, **_) -> Classifier:
    return _resnet("resnet18", num_classes, image_size)


@register("resnet34")
def resnet34(num_classes: int, image_size: int = 224, **_) -> Classifier:
    """The backbone of paper A's ProtoPNet experiments."""
    return _resnet("resnet34", num_classes, image_size)


def create_model(arch: str, num_classes: int, **kw) -> Classifier:
    return MODELS.get(arch)(num_classes=num_classes, **kw)


def load_pretrained(model: Classifier, path: str) -> None:
    """Load a local backbone state_dict (e.g. torchvision ImageNet weights), skipping the classifier."""
    from ..io import load_torch
    state = load_torch(path, "state_dict of backbone weights (train.pretrained)", weights_only=True,
                       fix="restore it or set train.pretrained to another file")
    trunk_state = {}
    names = [n for n, _ in model.trunk.named_children()]
    tv_names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    for key, value in state.items():
        head = key.split(".")[0]
        if head in tv_names and tv_names.index(head) < len(names):
            trunk_state[f"{tv_names.index(head)}.{key.split('.', 1)[1]}"] = value
        elif key.startswith("trunk."):
            trunk_state[key[len("trunk."):]] = value
    missing, _ = model.trunk.load_state_dict(trunk_state, strict=False)
    if len(missing) == len(model.trunk.state_dict()):
        raise ValueError(f"{path}: no backbone weights matched this architecture")

