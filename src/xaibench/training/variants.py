"""The classifier variants of papers C and E: `standard` (cross-entropy), `salience` (CYBORG),
`lap` (LAP pooling + head, trained from scratch). All use the plain epoch loop of `fit.train`."""
from __future__ import annotations

from ..models import create_model
from . import VARIANTS, Variant, losses


def classifier(mcfg: dict):
    """The configured backbone with global average pooling and a linear head."""
    return create_model(mcfg["arch"], mcfg["num_classes"], width=mcfg["width"], image_size=mcfg["image_size"])


def lap_classifier(mcfg: dict):
    """The configured backbone with its pooling replaced by LAP layers and a LAP head (models/lap.py)."""
    from ..models.lap import lapify
    lap = mcfg["train"]["lap"]
    return lapify(classifier(mcfg), mode=lap["mode"], beta_init=lap["beta_init"])


VARIANTS.register("standard", Variant(classifier, losses.cross_entropy))
VARIANTS.register("salience", Variant(classifier, losses.cyborg))
VARIANTS.register("lap", Variant(lap_classifier, losses.lap))
