"""The classifier variants of papers C and E: `standard` (cross-entropy), `salience` (CYBORG),
`lap` (LAP pooling + head, trained from scratch). All use the plain epoch loop of `fit.train`."""
from __future__ import annotations

from ..models import create_model
from . import VARIANTS, Variant, losses


def classifier(mcfg: dict):
    """The configured backbone with global average pooling and a linear head."""
    return create_model(mcfg["arch"], mcfg["num_classes"], width=mcfg["width"], image_size=mcfg["image_size"])


def lap_param_groups(model, lap: dict) -> list[dict]:
    """Score networks and β at `score_lr_factor` × the learning rate, everything else at 1×."""
    attn = {id(p) for p in model.attention_parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in attn], "lr_scale": 1.0},
            {"params": model.attention_parameters(), "lr_scale": lap["score_lr_factor"]}]


def lap_epoch_settings(tcfg: dict, epoch: int) -> dict:
    """The injection weight of epoch `epoch` (0-based): it rises linearly from 0 over the first
    `injection_ramp_epochs` epochs, so cross-entropy shapes the features before attention is pulled."""
    lap = tcfg["lap"]
    ramp = lap["injection_ramp_epochs"]
    return {**tcfg, "lap": {**lap, "injection_weight": lap["injection_weight"] * (min(1.0, epoch / ramp) if ramp else 1.0)}}


def lap_classifier(mcfg: dict):
    """The configured backbone with its pooling replaced by LAP layers and a LAP head (models/lap.py)."""
    from ..models.lap import lapify
    lap = mcfg["train"]["lap"]
    return lapify(classifier(mcfg), mode=lap["mode"], beta_init=lap["beta_init"])


VARIANTS.register("standard", Variant(classifier, losses.cross_entropy))
VARIANTS.register("salience", Variant(classifier, losses.cyborg))
VARIANTS.register("lap", Variant(lap_classifier, losses.lap, param_groups=lap_param_groups,
                                 epoch_settings=lap_epoch_settings))
