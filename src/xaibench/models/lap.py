"""LAP, Local Attention Pooling (Ghavami Modegh et al. 2022, arXiv 2201.11808) — as read here.

The paper's equations were not available (research/lap.md §0); everything below is a reading,
named as such in docs/lap.md:

* `LAPPool2d` replaces a k×k/stride-s pooling layer. Default mode `softmax` (research/lap.md §7):
  a score network (conv → BatchNorm → sigmoid) gives one spatial score map s ∈ [0,1] shared by all
  channels; inside each window the weights are softmax(β·s) and the output is Σ w_i x_i. β=0 is
  average pooling, β→∞ picks the element with the highest score. Mode `v1` is the third-party
  TF reading of paper v1 (§3.2): per channel, w_i ∝ exp(−β (max_window x − x_i)²) with β playing
  α², *renormalised* (the TF code is not, so its large-α limit is max/K) and computed per channel
  on aligned windows (the TF variant A mixes channels when C > 1).
* `LAPHead` replaces global average pooling with class-specific attention pooling.
* `lapify` turns any `Classifier` of this package into a `LAPClassifier`, for training from
  scratch (variant `lap`) and for plugging LAP into an already-trained model (variant `lap_plugin`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from . import Classifier

MODES = ("softmax", "v1")


def _nonneg(raw: torch.Tensor) -> torch.Tensor:
    """max(raw, 0) in value, identity in gradient (straight-through clamp).

    Why not softplus/exp: they cannot hold β=0 exactly (average pooling, the plug-in initialisation),
    and relu/abs/square have zero gradient at 0, so β would never leave it.
    """
    return raw + (raw.clamp_min(0) - raw).detach()


class LAPPool2d(nn.Module):
    """Attention pooling over k×k windows; drop-in for MaxPool2d/AvgPool2d with the same geometry.

    Padded positions get zero weight (so β=0 equals AvgPool2d(count_include_pad=False)).
    After each forward, `last_scores` [B,1,H,W] (at the layer's input resolution) holds the score
    map s in mode `softmax` (what knowledge injection supervises); in mode `v1` (no score network)
    the channel-mean window weight each position received, in [0,1]. `last_weights` [B,1,K,L] holds
    the window weights that pooled the features (mode `v1`: their channel mean), which
    `backproject` uses to carry a map on the output grid back to the layer's input.
    """

    def __init__(self, channels: int, kernel_size=2, stride=None, padding=0, mode: str = "softmax",
                 beta_init: float = 12.0, score_kernel: int = 3):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"LAP mode must be one of {MODES}, got {mode!r}")
        self.kernel_size, self.padding = _pair(kernel_size), _pair(padding)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.mode, self.channels = mode, channels
        self.score = None
        if mode == "softmax":
            self.score = nn.Sequential(nn.Conv2d(channels, 1, score_kernel, padding=score_kernel // 2),
                                       nn.BatchNorm2d(1), nn.Sigmoid())
        self.beta_raw = nn.Parameter(torch.tensor(float(beta_init)))
        self._scores: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None
        self._derive = None  # computes what the last forward left pending (only explanations need it)
        self.in_size: tuple[int, int] | None = None
        self.out_size: tuple[int, int] | None = None

    @property
    def beta(self) -> torch.Tensor:
        return _nonneg(self.beta_raw)

    @property
    def last_weights(self) -> torch.Tensor | None:
        if self._weights is None and self._derive is not None:
            self._derive()
        return self._weights

    @property
    def last_scores(self) -> torch.Tensor | None:
        if self._scores is None and self._derive is not None:
            self._derive()
        return self._scores

    def backproject(self, out_map: torch.Tensor) -> torch.Tensor:
        """[B,oh,ow] on this layer's output grid -> [B,H,W] on its input: each output cell's value is
        shared among its window's elements by the weights that pooled them (transposed pooling).

        Window weights sum to 1, so the total is kept: a distribution stays a distribution, and
        per-location contributions keep summing to the same logit. Uses the last forward's weights.
        """
        if self.last_weights is None:
            raise ValueError("LAPPool2d.backproject needs a forward pass first")
        w = self.last_weights                                                    # [B,1,K,L]
        if out_map.shape[0] != w.shape[0] or out_map[0].numel() != w.shape[-1]:
            raise ValueError(f"backproject: map {tuple(out_map.shape)} does not fit this layer's output "
                             f"({w.shape[0]} images, {w.shape[-1]} windows)")
        cols = w[:, 0] * out_map.reshape(len(out_map), 1, -1).to(w.dtype)     # [B,K,L]
        return F.fold(cols, self.in_size, self.kernel_size, padding=self.padding, stride=self.stride)[:, 0]

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"mode={self.mode}")

    def _unfold(self, t: torch.Tensor, windows: int) -> torch.Tensor:
        """[B,C,H,W] -> [B,C,K,L]: the K elements of each of the L windows."""
        b, c = t.shape[:2]
        return F.unfold(t, self.kernel_size, padding=self.padding, stride=self.stride).view(b, c, -1, windows)

    def _tiles(self) -> bool:
        """Whether the windows tile the input without padding or overlap (the usual 2×2/2 pooling)."""
        return self.padding == (0, 0) and self.stride == self.kernel_size

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Tiling windows with native pooling ops: Σ_i w_i x_i = avgpool(e·x) / avgpool(e), with
        e = exp(β s − window max of β s) (mode `softmax`) or, per channel, exp(−β (window max of x − x)²)
        (mode `v1`; 1 at the maximum, so nothing overflows). The same function as the unfold path, in
        the input's memory format (channels_last stays channels_last) and without its [B,C,K,L]
        copies: ~1.5x faster LAP training on CPU (measured)."""
        b, c, h, w = x.shape
        k, (kh, kw), (oh, ow) = self.kernel_size, self.kernel_size, (h // self.kernel_size[0], w // self.kernel_size[1])

        def spread(t):  # each window's maximum on each of its elements (nearest upsampling: ~1.6x faster
            return F.interpolate(F.max_pool2d(t, k), scale_factor=k, mode="nearest")  # than repeat_interleave)

        s = self.score(x) if self.mode == "softmax" else None                    # [B,1,H,W]
        x = x[..., :oh * kh, :ow * kw]                                            # drop rows/cols no window covers
        if s is not None:
            z = self.beta * s[..., :oh * kh, :ow * kw]
            e = (z - spread(z)).exp()                                             # [B,1,..]
        else:
            e = (-self.beta * (spread(x) - x).square()).exp()                     # [B,C,..]
        norm = F.avg_pool2d(e, k)                                                 # mean of e per window
        out = F.avg_pool2d(e * x, k) / norm

        def derive():  # the window weights (and in mode v1 the kept map), only when asked for: training never does
            weights = self._unfold(e, oh * ow) / (norm.flatten(2) * (kh * kw)).unsqueeze(2)
            self._weights = weights if s is not None else weights.mean(1, keepdim=True)
            self._scores = s if s is not None else F.fold(self._weights[:, 0], (h, w), k, stride=k)
            self._derive = None

        self.in_size, self.out_size, self._scores, self._weights, self._derive = (h, w), (oh, ow), s, None, derive
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tiles():
            return self._forward_tiled(x)
        return self._forward_unfold(x)

    def _forward_unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Any window geometry and both modes, on explicit [B,C,K,L] windows."""
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = self._unfold(x, oh * ow)                                           # [B,C,K,L]
        valid = self._unfold(x.new_ones(1, 1, h, w), oh * ow) > 0                 # [1,1,K,L]
        beta = self.beta
        if self.mode == "softmax":
            s = self.score(x)                                                     # [B,1,H,W]
            logits = beta * self._unfold(s, oh * ow)                              # [B,1,K,L]
        else:
            top = cols.masked_fill(~valid, float("-inf")).amax(2, keepdim=True)  # window max per channel
            logits = -beta * (top - cols).square()                                # [B,C,K,L]
        weights = logits.masked_fill(~valid, float("-inf")).softmax(2)
        out = (weights * cols).sum(2).view(b, c, oh, ow)
        self._weights = weights if weights.shape[1] == 1 else weights.mean(1, keepdim=True)
        self.in_size, self.out_size, self._derive = (h, w), (oh, ow), None
        if self.mode == "softmax":
            self._scores = s
        else:
            share = F.fold(weights.mean(1), (h, w), self.kernel_size, padding=self.padding, stride=self.stride)
            cover = F.fold(valid.float()[0], (h, w), self.kernel_size, padding=self.padding, stride=self.stride)
            self._scores = share / cover.clamp_min(1)
        return out


class LAPHead(nn.Module):
    """Class-specific attention pooling in place of global average pooling.

    Choice (a reading; the paper's global variant is unknown): one score map per class,
    s_k = sigmoid(BN(1×1 conv(f)))_k ∈ [0,1]^{h×w}, attention a_k = softmax over positions of β·s_k,
    and logit_k = Σ_p a_k(p) · (W_k·f(p)) + b_k, i.e. class k's CAM averaged under class k's own
    attention. Why per-class maps rather than class weights over one shared map: the map that
    explains class k is then exactly the one that pooled class k's evidence, and it differs by class.
    β=0 gives uniform attention, i.e. exactly GAP + the linear layer `fc`.
    """

    def __init__(self, channels: int, num_classes: int, beta_init: float = 0.0):
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, num_classes, 1), nn.BatchNorm2d(num_classes), nn.Sigmoid())
        self.beta_raw = nn.Parameter(torch.tensor(float(beta_init)))
        self.last_scores: torch.Tensor | None = None

    @property
    def beta(self) -> torch.Tensor:
        return _nonneg(self.beta_raw)

    def parts(self, f: torch.Tensor, fc: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention a_k [B,K,P], CAM_k = W_k·f [B,K,P]) over the P = h·w positions; logit = Σ_p a·CAM + b."""
        s = self.score(f)                                                        # [B,K,h,w]
        self.last_scores = s
        attn = (self.beta * s.flatten(2)).softmax(-1)                             # [B,K,P]
        cams = torch.einsum("bcp,kc->bkp", f.flatten(2), fc.weight)               # [B,K,P]
        return attn, cams

    def forward(self, f: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
        attn, cams = self.parts(f, fc)
        return (attn * cams).sum(-1) + fc.bias


class LAPClassifier(Classifier):
    """A Classifier whose pooling layers are LAP layers and whose GAP is a `LAPHead`.

    Same interface: `features(x)` is the last conv block, `classify(f)` the logits (through the
    head, with the same `fc` so CAM/Grad-CAM still apply). `attention(x)` returns the maps the
    model explains itself with.
    """

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, head_beta: float = 0.0):
        super().__init__(trunk, channels, num_classes)
        self.head = LAPHead(channels, num_classes, head_beta)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f, self.fc)

    def lap_layers(self) -> list[LAPPool2d]:
        return [m for m in self.trunk.modules() if isinstance(m, LAPPool2d)]

    def attention_parameters(self) -> list[nn.Parameter]:
        """The parameters that decide where attention goes: every score network and every β
        (their own learning rate: train.lap.score_lr_factor)."""
        owners = [*self.lap_layers(), self.head]
        return [p for m in owners for p in [m.beta_raw, *(m.score.parameters() if m.score is not None else ())]]

    def attention(self, x: torch.Tensor):
        """(per-layer maps [B,1,h_l,w_l] in forward order, head maps [B,K,h,w], logits) for one batch."""
        logits = self(x)
        return [m.last_scores for m in self.lap_layers()], self.head.last_scores, logits


# ---------------------------------------------------------------------------------------------
# Turning a Classifier into a LAP-extended one


def _pooled_block_class(cls):
    """Subclass of a residual block type that pools its input with `self.lap` first (LIP's placement)."""
    if cls not in _POOLED:
        def forward(self, x, _base=cls.forward):
            return _base(self, self.lap(x))
        _POOLED[cls] = type(f"LAP{cls.__name__}", (cls,), {"forward": forward})
    return _POOLED[cls]


_POOLED: dict[type, type] = {}


def _match_max_(pool: LAPPool2d, beta: float) -> None:
    """Initialise a LAP layer to approximate the max-pool it replaces.

    `v1`: β large makes the weights one-hot on each channel's window maximum, i.e. max pooling.
    `softmax`: one score map cannot pick a different position per channel, so the score network
    starts as the channel mean (centre tap 1/C) and β large picks the position with the highest
    mean activation; `calibrate_scores` then standardises the score's BatchNorm on real data.
    """
    with torch.no_grad():
        pool.beta_raw.fill_(beta)
        if pool.score is not None:
            conv = pool.score[0]
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0 / pool.channels
            pool.score[1].reset_parameters()
            pool._needs_calibration = True


def lapify(model: Classifier, mode: str = "softmax", beta_init: float = 12.0, init: str = "scratch",
           match_beta: float = 50.0) -> LAPClassifier:
    """Replace the pooling of `model` by LAP layers and its GAP by a `LAPHead` (in place on the trunk).

    Replaced: every MaxPool2d/AvgPool2d (same kernel, stride, padding), and, as LIP does for ResNets,
    every residual block with a stride-2 conv: its convs become stride 1 and the block's input is
    LAP-pooled 3×3/2 first (one LAP layer per block, feeding both the main path and the shortcut).
    `init`: `scratch` — every LAP layer and the head start at β=beta_init (training from scratch);
    `match` — behave like what they replace: β=0 (exact average) for AvgPool2d, GAP and strided
    blocks (not exact there: strided sampling is not a pooling), `_match_max_` for MaxPool2d;
    `average` — β=0 everywhere.
    """
    if init not in ("scratch", "match", "average"):
        raise ValueError(f"LAP init must be scratch, match or average, got {init!r}")
    trunk = model.trunk

    def make(channels, k, s, p, kind):
        beta = beta_init if init == "scratch" else 0.0
        pool = LAPPool2d(channels, k, s, p, mode=mode, beta_init=beta)
        if init == "match" and kind == "max":
            _match_max_(pool, match_beta)
        return pool

    channels = 3
    for parent in list(trunk.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                channels = child.out_channels
            elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
                if getattr(child, "ceil_mode", False) or getattr(child, "dilation", 1) not in (1, (1, 1)):
                    raise ValueError(f"cannot replace {child}: ceil_mode/dilation are not supported by LAPPool2d")
                kind = "max" if isinstance(child, nn.MaxPool2d) else "avg"
                setattr(parent, name, make(channels, child.kernel_size, child.stride, child.padding, kind))
            elif hasattr(child, "downsample") and hasattr(child, "conv1"):  # torchvision residual block
                strided = [m for m in child.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
                if strided:
                    for conv in strided:
                        conv.stride = (1, 1)
                    child.__class__ = _pooled_block_class(type(child))
                    child.lap = make(child.conv1.in_channels, 3, 2, 1, "strided")
    out = LAPClassifier(trunk, model.fc.in_features, model.fc.out_features,
                        head_beta=beta_init if init == "scratch" else 0.0)
    out.fc.load_state_dict(model.fc.state_dict())
    return out


@torch.no_grad()
def calibrate_scores(model: LAPClassifier, x: torch.Tensor) -> None:
    """Set the score BatchNorm of every `match`-initialised softmax LAP layer to standardise its input.

    Why: the channel mean is positive and narrow-ranged; without this, sigmoid squashes it to nearly
    equal scores and even a large β barely prefers the most active position. Layers are calibrated
    in forward order (each hook runs before its layer), so later layers see calibrated earlier ones.
    """
    def hook(mod, args):
        if getattr(mod, "_needs_calibration", False):
            z = mod.score[0](args[0])
            mod.score[1].running_mean.fill_(float(z.mean()))
            mod.score[1].running_var.fill_(float(z.var()))
            mod._needs_calibration = False

    handles = [m.register_forward_pre_hook(hook) for m in model.lap_layers()]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
