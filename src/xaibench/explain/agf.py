"""`agf`: Attribution Guided Factorization (Gur, Ali & Wolf, AAAI 2021, arXiv:2012.02166).

Definition (as the authors' code shirgur/AGFVisualization @64c0159 implements it; research note
agf.md §1). One forward pass, then two streams walk the layers backwards:
  * the gradient stream G = ds/d(tensor), the exact gradient of one scalar target score s;
  * the relevance stream R, LRP-like: z-rule at ReLU/pools/residual Add, identity at BatchNorm
    and Dropout, the |x|,|W| "C rule" at Linear and Conv2d, the z^B rule at the input conv, and at
    every other conv the AGF step: R_in = Δ(C, residual), residual = σ(C)·(F_x + M) + F_∇x + A,
    where M = maxnorm(ReLU(mean_c(X·g))) is a per-layer input×gradient map, F_x / F_∇x come from a
    two-prototype (foreground/background, guided by the sign of mean_c C) ridge factorisation of the
    activations / masked gradients, A spreads R by |W| only, and Δ(C, R) = C + R − mean of R over
    C's support, so every step conserves Σ R.
Seed (§1.1): s = softmax(z)_t with z_j = y_t·exp(−½((y_j − y_t)/σ)²), σ = max_j |y_j − y_t|: the
logits are reweighted by their closeness to the target logit (the "saliency bias" correction), and
R = x ⊙ ds/dx at the input of the last Linear. Final map: R at the (normalised) input divided by its
per-image max, summed over colour channels: a SIGNED pixel map [B,H,W] (the reference thresholds
it at 0 for segmentation; positive = evidence for the class).

Every constant and ablation switch of the reference is a keyword option with the reference default
(docs/agf.md lists them and each departure). Works on plain torch modules by a rule table keyed on
module type (Sequential, Conv2d, BatchNorm2d, ReLU, Max/Avg/AdaptiveAvg pools, Dropout, Flatten,
Linear, Identity, torchvision BasicBlock and Bottleneck); unknown modules raise ValueError. The
model should be in eval mode (BatchNorm/Dropout are re-run once as in the forward).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from . import register

SEEDS = ("gaussian", "softmax", "logit")
NORMALISE = ("max", "absmax", "none")
PRECISIONS = ("float64", "model")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)


@dataclass(frozen=True)
class Options:
    """Every constant and switch of the reference (names of its ablation kwargs kept)."""
    seed: str = "gaussian"          # target score: "gaussian" (reference), "softmax" (plain), "logit" (y_t)
    no_fx: bool = False             # drop F_x (activation factorisation)
    no_m: bool = False              # drop M (input×gradient map) at convs
    no_fdx: bool = False            # drop F_∇x (gradient factorisation)
    no_a: bool = False              # drop A (|W|-only redistribution)
    no_reg: bool = False            # drop the σ(C) weighting of F_x + M
    gradcam: bool = False           # replace F_x + M by ReLU(mean_c(X·GAP(g_m)))
    flat: bool = False              # every conv uses the C rule only (the pure LRP-like part)
    block_flat: bool = True         # residual blocks: C rule only at the convs the reference marks flat
    zb_channels: int = 3            # z^B rule at convs whose input has this many channels (reference: 3)
    heaviside_slope: float = 10.0   # H = sigmoid(slope · V / max V) in the factorisation
    ridge: float = 1.0              # λ of the 2×2 ridge solve (RᵀR + λI)⁻¹RᵀH
    eps: float = 1e-9               # safe_divide stabiliser: a / (b + eps), 0 where b == 0
    normalise: str = "max"          # final map / per-image max (reference), / max|R|, or "none"
    precision: str = "float64"      # compute dtype of `agf`; "model" = the model's own dtype (reference)

    def __post_init__(self):
        if self.seed not in SEEDS:
            raise ValueError(f"agf seed must be one of {SEEDS}, got {self.seed!r}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"agf normalise must be one of {NORMALISE}, got {self.normalise!r}")
        if not self.ridge > 0:
            raise ValueError(f"agf ridge must be > 0 (the 2x2 solve needs it), got {self.ridge}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"agf precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.eps > 0:
            raise ValueError(f"agf eps must be > 0, got {self.eps}")


# ---------------------------------------------------------------- helpers (reference semantics)

def _dims(t):
    return tuple(range(1, t.dim()))


def _sdiv(a, b, eps):
    """Reference safe_divide: a / (b + eps), exactly 0 where b == 0 (in place where it can be)."""
    den = b + eps
    den.masked_fill_(den == 0, eps)                 # = den + 1[den == 0]·eps, as den is 0 there
    return (a / den).mul_((b != 0).to(b.dtype))


def _maxnorm(v, eps):
    """v / max(v) with one max per image over all non-batch dims (sign of max kept, as the reference)."""
    return _sdiv(v, v.amax(dim=_dims(v), keepdim=True), eps)


def _delta_shift(C, R):
    """Δ(C, R) = C + R − (Σ R / |supp C|)·1[C≠0]: Σ Δ = Σ C (0/0 -> 0 where C is all zero)."""
    nz = (C != 0).to(C.dtype)
    return C + R - R.sum(_dims(R), keepdim=True) / nz.sum(_dims(nz), keepdim=True).clamp_min(1) * nz


def _z_rule(fn, X, R, eps):
    """LRP-0: R_in = X ⊙ J_fᵀ (R / f(X)·1[R≠0]). fn must be linear-homogeneous for conservation."""
    X = X.detach().requires_grad_(True)
    with torch.enable_grad():
        Z = fn(X) * (R != 0).to(R.dtype)
        (g,) = torch.autograd.grad(Z, X, _sdiv(R, Z.detach(), eps))
    return X.detach() * g


def _conv_t(m, weight, V, shape):
    """Vector-Jacobian product of X -> conv(X, weight) (m's stride, padding, ...): the transposed
    convolution autograd would run, without the forward pass autograd would first make."""
    with torch.no_grad():
        return torch.nn.grad.conv2d_input(shape, weight.detach(), V, m.stride, m.padding, m.dilation, m.groups)


def _z_conv(m, weight, X, R, eps):
    """`_z_rule` for X -> conv(X, weight): one forward, one transposed convolution, no autograd graph
    (the same kernels autograd calls, so the same numbers)."""
    with torch.no_grad():
        mask = (R != 0).to(R.dtype)
        Z = m._conv_forward(X, weight.detach(), None).mul_(mask)
        return X * _conv_t(m, weight, _sdiv(R, Z, eps).mul_(mask), X.shape)


def _z_relu(X, R, eps):
    """`_z_rule` for ReLU, elementwise: the ReLU's gradient is 1[relu(X) > 0]."""
    with torch.no_grad():
        mask = (R != 0).to(R.dtype)
        Y = F.relu(X)
        return X * torch.where(Y > 0, _sdiv(R, Y * mask, eps).mul_(mask), 0.0)


def _factorise(V, phi, o: Options):
    """Reference get_factorization for one stream V [B,C,H,W] guided by phi = mean_c C [B,1,H,W].

    Per image: H = sigmoid(slope·V/max V); prototypes r_bg, r_fg = mean of H over {phi<0}, {phi>0};
    coefficients W = ReLU((RᵀR + λI)⁻¹ Rᵀ H) per pixel; returns W_fg − W_bg as [B,1,H,W].
    """
    B, C, h, w = V.shape
    H = torch.sigmoid(o.heaviside_slope * _maxnorm(V, o.eps))
    protos = []
    for region in ((phi < 0), (phi > 0)):                       # column order [bg, fg] as the reference
        m = region.to(V.dtype)
        protos.append(_sdiv((H * m).sum((2, 3)), m.sum((1, 2, 3))[:, None], o.eps))
    Rm = torch.stack(protos, -1)                                 # [B,C,2]
    eye = torch.eye(2, dtype=V.dtype, device=V.device)
    coef = torch.linalg.solve(Rm.transpose(1, 2) @ Rm + o.ridge * eye, Rm.transpose(1, 2) @ H.reshape(B, C, -1))
    coef = coef.relu().reshape(B, 2, h, w)
    return coef[:, 1:2] - coef[:, 0:1]


# ---------------------------------------------------------------- forward interpreter (the tape)

@dataclass
class _Rec:
    module: nn.Module
    x: torch.Tensor
    y: torch.Tensor = None
    flat: bool = False                        # reference marks this conv flat (C rule only)
    unflat: tuple | None = None               # Linear fed by Flatten of a 4-D tensor: that shape
    main: list = field(default_factory=list)  # residual block: main-branch records
    skip: list = field(default_factory=list)  # residual block: downsample records
    parts: tuple = ()                         # residual block: (main out, skip out, sum before ReLU)
    indices: torch.Tensor | None = None       # MaxPool2d with disjoint windows: argmax of each window


def _residual_blocks() -> tuple:
    """torchvision's BasicBlock and Bottleneck, if torchvision built a model in this process (a model
    holding them imported their module); otherwise () and nothing is imported: importing
    torchvision.models costs about as long as importing torch, in every explain job."""
    resnet = sys.modules.get("torchvision.models.resnet")
    return (resnet.BasicBlock, resnet.Bottleneck) if resnet else ()


def _branch(block):
    """Main branch of a torchvision residual block and the convs the reference propagates flat."""
    if isinstance(block, _residual_blocks()[0]):
        return [block.conv1, block.bn1, block.relu, block.conv2, block.bn2], {block.conv2}
    return ([block.conv1, block.bn1, block.relu, block.conv2, block.bn2, block.relu, block.conv3, block.bn3],
            {block.conv1, block.conv3})


def _run(layers, x, tape, flat_convs=frozenset()):
    for m in layers:
        if isinstance(m, nn.Sequential):
            x = _run(list(m), x, tape, flat_convs)
        elif isinstance(m, nn.Identity):
            continue
        elif isinstance(m, _residual_blocks()):
            main, flat = _branch(m)
            rec = _Rec(m, x)
            h = _run(main, x, rec.main, flat)
            s = _run([m.downsample], x, rec.skip, {c for c in m.downsample.modules()}) if m.downsample else x
            pre = h + s
            rec.parts, rec.y = (h, s, pre), F.relu(pre)
            tape.append(rec)
            x = rec.y
        elif isinstance(m, nn.ReLU):
            tape.append(_Rec(m, x, F.relu(x)))                    # never in place: x is kept
            x = tape[-1].y
        elif _disjoint_maxpool(m):
            y, idx = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
            tape.append(_Rec(m, x, y, indices=idx))
            x = y
        elif isinstance(m, (nn.Conv2d, nn.Linear, nn.Flatten) + _POOLS + _PASS):
            rec = _Rec(m, x, m(x), flat=m in flat_convs)
            if isinstance(m, nn.Linear) and tape and isinstance(tape[-1].module, nn.Flatten) \
                    and tape[-1].x.dim() == 4:
                rec.unflat = tuple(tape[-1].x.shape)
            tape.append(rec)
            x = rec.y
        else:
            raise ValueError(f"agf has no propagation rule for {type(m).__name__}; supported: Sequential, "
                             "Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, "
                             "Flatten, Linear, Identity, torchvision BasicBlock/Bottleneck")
    return x


def _disjoint_maxpool(m) -> bool:
    """A MaxPool2d whose windows do not overlap: its z-rule can route relevance by the forward's
    indices (each input receives from at most one window, so no sum order to differ from autograd's)."""
    if not isinstance(m, nn.MaxPool2d):
        return False
    k, s, d = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride or m.kernel_size, m.dilation))
    return all(si >= di * (ki - 1) + 1 for ki, si, di in zip(k, s, d))


def _z_maxpool(rec, R, eps):
    """`_z_rule` for a disjoint-window MaxPool2d from its recorded output and indices (no second pass)."""
    with torch.no_grad():
        mask = (R != 0).to(R.dtype)
        V = _sdiv(R, rec.y * mask, eps).mul_(mask)
        X = rec.x.detach()
        g = torch.zeros_like(X).flatten(2).scatter_(2, rec.indices.flatten(2), V.flatten(2)).view_as(X)
        return X * g


def _tensors(tape):
    for r in tape:
        yield r
        yield from _tensors(r.main)
        yield from _tensors(r.skip)


# ---------------------------------------------------------------- backward rules

def _conv(rec, R, G, o: Options):
    m, X = rec.module, rec.x.detach()
    if X.shape[1] == o.zb_channels:
        return _zbox(m, X, R, o.eps)
    wabs = m.weight.detach().abs()
    C = _z_conv(m, wabs, X.abs(), R, o.eps)
    if o.flat or (o.block_flat and rec.flat):
        return C
    mask = (R != 0).to(R.dtype)
    g = G[id(rec.x)]
    g_m = _conv_t(m, m.weight, G[id(rec.y)] * mask, X.shape)  # grad through f(X)·1[R≠0]
    numer = 0
    if o.gradcam:
        numer = (X * g_m.mean((2, 3), keepdim=True)).mean(1, keepdim=True).relu()
    else:
        phi = C.mean(1, keepdim=True)
        if not o.no_fx:
            numer = numer + _factorise(X, phi, o).relu()
        if not o.no_m:
            numer = numer + _maxnorm((X * g).mean(1, keepdim=True).relu(), o.eps)
    resid = numer if o.no_reg else numer * torch.sigmoid(C)
    if not o.no_fdx:
        resid = resid + _factorise(g_m, C.mean(1, keepdim=True), o).relu()
    if not o.no_a:
        resid = resid + _z_conv(m, wabs, torch.ones_like(X), R, o.eps)
    return _delta_shift(C, resid * (C != 0).to(C.dtype))


def _zbox(m, X, R, eps):
    """z^B rule with the image's own bounds l = min X, h = max X (per image, as the reference)."""
    lo = X.amin(_dims(X), keepdim=True) * torch.ones_like(X)
    hi = X.amax(_dims(X), keepdim=True) * torch.ones_like(X)
    w = m.weight.detach()
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    with torch.no_grad():
        Z = m._conv_forward(X, w, None) - m._conv_forward(lo, wp, None) - m._conv_forward(hi, wn, None)
        V = _sdiv(R, Z, eps)
        grads = (_conv_t(m, w, V, X.shape), _conv_t(m, wp, -V, X.shape), _conv_t(m, wn, -V, X.shape))
    return sum(t * gr for t, gr in zip((X, lo, hi), grads))


def _linear(rec, R, G, o: Options):
    X, W = rec.x.detach(), rec.module.weight
    C = _z_rule(lambda t: F.linear(t, W.abs()), X.abs(), R, o.eps)
    if rec.unflat is None:
        return C
    M = (X.reshape(rec.unflat) * G[id(rec.x)].reshape(rec.unflat)).mean(1, keepdim=True)
    M = M.expand(rec.unflat).reshape(X.shape).relu() * (C != 0).to(C.dtype)
    return _delta_shift(C, _maxnorm(M, o.eps))


def _block(rec, R, G, o: Options, trace):
    h, s, pre = (t.detach() for t in rec.parts)
    R = _z_relu(pre, R, o.eps)
    S = _sdiv(R, pre * (R != 0).to(R.dtype), o.eps)               # Add: z-rule split
    r_main = _back(rec.main, h * S, G, o, trace)
    r_skip = _back(rec.skip, s * S, G, o, trace)
    X = rec.x.detach()                                            # Clone: relevances add up
    return X * (_sdiv(r_main, X, o.eps) + _sdiv(r_skip, X, o.eps))


def _back(tape, R, G, o: Options, trace=None):
    for rec in reversed(tape):
        m = rec.module
        if isinstance(m, _residual_blocks()):
            R_in = _block(rec, R, G, o, trace)
        elif isinstance(m, nn.Conv2d):
            R_in = _conv(rec, R, G, o)
        elif isinstance(m, nn.Linear):
            R_in = _linear(rec, R, G, o)
        elif isinstance(m, nn.Flatten):
            R_in = R.reshape(rec.x.shape)
        elif isinstance(m, _PASS):
            R_in = R
        elif isinstance(m, nn.ReLU):
            R_in = _z_relu(rec.x.detach(), R, o.eps)
        elif rec.indices is not None:
            R_in = _z_maxpool(rec, R, o.eps)
        else:                                                      # pools: z-rule
            R_in = _z_rule(m, rec.x, R, o.eps)
        if trace is not None:
            trace.append((type(m).__name__, R, R_in))
        R = R_in
    return R


def corrected_logits(logits, targets):
    """z_j = y_t·exp(−½((y_j − y_t)/σ)²), σ = max_j |y_j − y_t| (the reference's "salient" reweighting).

    z_t = y_t; every other z_j lies between 0 and y_t, so for y_t > 0 the target tops the corrected
    softmax whatever its rank (for y_t < 0 it is last: the reference's behaviour, kept)."""
    yt = logits.gather(1, targets[:, None])
    sigma = (logits - yt).abs().amax(1, keepdim=True)
    sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))  # all logits equal: z = y_t (the limit)
    return yt * torch.exp(-0.5 * ((logits - yt) / sigma) ** 2)


def seed_score(logits, targets, seed: str = "gaussian"):
    """Target score s [B] whose gradient seeds AGF (reference Linear.AGF, research note §1.1):
    "gaussian" softmax(corrected_logits)_t (reference), "softmax" softmax(y)_t, "logit" y_t."""
    if seed == "logit":
        return logits.gather(1, targets[:, None])[:, 0]
    z = corrected_logits(logits, targets) if seed == "gaussian" else logits
    return z.softmax(1).gather(1, targets[:, None])[:, 0]


def relevance(layers, x, targets, trace: list | None = None, **options):
    """AGF relevance at the input of `layers` (a module list/Sequential ending in Linear): [B,C,H,W].

    `trace`, if a list, receives (module type, R_out, R_in) for every propagation step (tests)."""
    o = Options(**options)
    tape: list[_Rec] = []
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        _run(list(layers), x, tape)
        if not tape or not isinstance(tape[-1].module, nn.Linear):
            raise ValueError("agf needs a network whose last layer is nn.Linear (the class logits)")
        top = tape[-1]
        if targets.shape != (x.shape[0],) or targets.min() < 0 or targets.max() >= top.y.shape[1]:
            raise ValueError(f"agf targets must be [B]={x.shape[0]} class indices in [0, {top.y.shape[1]}), "
                             f"got shape {tuple(targets.shape)}")
        score = seed_score(top.y, targets, o.seed)
        keep = {id(t): t for r in _tensors(tape) for t in (r.x, r.y) if t.requires_grad}
        grads = torch.autograd.grad(score.sum(), list(keep.values()))
    G = dict(zip(keep, grads))
    R = top.x.detach() * G[id(top.x)]                              # seed: input × gradient at the last Linear
    if trace is not None:
        trace.append(("seed", None, R))
    return _back(tape[:-1], R, G, o, trace)


@register("agf")
def agf(model, images, targets, **options):
    """AGF maps [B,H,W] (signed; see module docstring) of class `targets` for a `Classifier`.

    The Classifier's normalisation is applied first (the reference normalises outside its models, so
    relevance lives on the normalised image), then trunk -> spatial mean (= AdaptiveAvgPool2d(1) +
    flatten, the reference ResNet head) -> fc. Options: see `Options` and docs/agf.md.

    precision="float64" (default) runs on a float64 copy of the model. Why: relevance sums are ~1e-4
    while the residual terms are O(1), and the z-rule split at residual Adds divides by h + skip,
    which can be near 0 with large opposite terms; in float32 these cancellations make a resnet18
    map move by up to ~5% of its max with the batch it is computed in. In float64 the batch effect
    is ~1e-13 and the map is the algorithm's, not the rounding's. "model" = the reference (float32).
    """
    from ..models import Classifier

    if not isinstance(model, Classifier) or type(model).classify is not Classifier.classify:
        raise ValueError(f"agf needs a plain Classifier (trunk -> mean -> fc), got {type(model).__name__}")
    dtype = images.dtype
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"agf images must be [B,3,H,W], got {tuple(images.shape)}")
    unknown = set(options) - {f.name for f in fields(Options)}
    if unknown:
        raise ValueError(f"unknown agf option(s) {sorted(unknown)}; choose from {[f.name for f in fields(Options)]}")
    o = Options(**options)
    if o.precision == "float64" and model.fc.weight.dtype != torch.float64:
        model, images = copy.deepcopy(model).double(), images.double()
    layers = [model.trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc]
    R = relevance(layers, (images - model.mean) / model.std, targets.to(images.device), **options)
    return finalise(R, o.normalise).to(dtype)


def finalise(R, normalise: str = "max"):
    """[B,C,H,W] relevance -> [B,H,W] map: per-image normalisation, then sum over channels."""
    if normalise == "max":
        R = _div_nonzero(R, R.amax(_dims(R), keepdim=True))
    elif normalise == "absmax":
        R = _div_nonzero(R, R.abs().amax(_dims(R), keepdim=True))
    return R.sum(1)


def _div_nonzero(a, b):
    """a / b, and a unchanged (0 map stays 0) where b == 0: no NaN on a map without relevance."""
    return a / torch.where(b == 0, torch.ones_like(b), b)
