"""Extending the suite as a contributor would: one new module plus one catalog line per extension.

A scratch copy of the project gets a toy training variant, a toy explainer and a toy metric family,
each written as a new module and registered by one line in `xaibench.catalog`, and a claim about them
(one `CLAIMS` line); nothing else in the
copy is edited (the settings overlay only selects them). The real workflow then runs them through
Snakemake, and their rows must be in the tidy tables, the figures and the report tables.
"""
from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml

from .helpers import copy_workflow, run

pytestmark = pytest.mark.integration

TOY_VARIANT = '''"""Toy variant: the standard classifier trained with label smoothing."""
import torch.nn.functional as F

from xaibench.training import VARIANTS, Variant
from xaibench.training.variants import classifier


def smoothed(model, x, y, masks, cfg):
    logits = model(x)
    return F.cross_entropy(logits, y, label_smoothing=0.1), logits


VARIANTS.register("toy", Variant(classifier, smoothed))
'''

TOY_EXPLAINER = '''"""Toy explainer: brightness of the image (a map that ignores the model)."""
from xaibench.explain import register


@register("brightness")
def brightness(model, images, targets, gamma: float = 1.0):
    return images.mean(1) ** gamma
'''

TOY_FAMILY = '''"""Toy family: how peaked each map is (its maximum over its sum)."""
from xaibench.metrics import over_maps, register


@register("peakiness")
def peakiness(ctx):
    def score(b):
        flat = b.maps.flatten(1)
        yield "peak_share", flat.max(1).values / flat.sum(1).clamp_min(1e-12)

    return over_maps(ctx, score, family="peakiness")
'''

CATALOG_LINES = {
    "VARIANTS = {\n": '    "toy": {"module": "xaibench.training.toy"},\n',
    "EXPLAINERS = {\n": '    "brightness": {"module": "xaibench.explain.brightness", "options": {"gamma": 1.0}},\n',
    "FAMILIES = {\n": '    "peakiness": {"scope": "model", "needs": ["explanations"], "module": "xaibench.metrics.peakiness",'
                      ' "metrics": {"peak_share": "none"}},\n',
    "CLAIMS = {\n": '    "T.toy_mass": _claim("E", "toy", "Brightness maps put more mass in the mask than Grad-CAM.",'
                     ' "localization", "relevance_mass", ("toy", "brightness"), ("toy", "gradcam"), "higher"),\n',
}


def test_toy_variant_explainer_and_family_run_through_the_workflow(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    src = root / "src/xaibench"
    (src / "training/toy.py").write_text(TOY_VARIANT)
    (src / "explain/brightness.py").write_text(TOY_EXPLAINER)
    (src / "metrics/peakiness.py").write_text(TOY_FAMILY)
    catalog = (src / "catalog.py").read_text()
    for anchor, line in CATALOG_LINES.items():
        assert anchor in catalog
        catalog = catalog.replace(anchor, anchor + line, 1)
    (src / "catalog.py").write_text(catalog)

    overlay = {"train": {"variants": ["standard", "toy"], "seeds": [0], "epochs": 1},
               "explain": {"methods": ["gradcam", "brightness"], "options": {"brightness": {"gamma": 2.0}}},
               "metrics": {"families": ["accuracy", "localization", "peakiness"]}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(overlay))
    env_path = f"{src.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    run(f"PYTHONPATH={env_path} snakemake --cores 2 --configfile {tmp_path / 'toy.yaml'}", root)

    peak = pd.read_csv(root / "results/metrics/shapes/peakiness.csv")
    assert set(peak.variant) == {"standard", "toy"} and set(peak.method) == {"gradcam", "brightness"}
    assert peak.value.between(0, 1).all()
    loc = pd.read_csv(root / "results/metrics/shapes/localization.csv")
    assert "brightness" in set(loc.method) and "toy" in set(loc.variant)
    acc = pd.read_csv(root / "results/metrics/shapes/accuracy.csv")
    assert "toy" in set(acc.variant)
    claims = pd.read_csv(root / "results/claims.csv", keep_default_na=False)  # the added claim has its row
    assert "T.toy_mass" in set(claims.claim) and "toy/brightness" in claims.set_index("claim").comparison["T.toy_mass"]
    # a variant named outside the built-in palette is drawn like any other (figures and the report)
    assert (root / "results/figures/shapes/accuracy.png").is_file() and (root / "results/figures/shapes/gallery.png").is_file()
    assert "toy" in (root / "results/tables/shapes/localization.md").read_text()
    board = pd.read_csv(root / "results/leaderboard/shapes.csv", keep_default_na=False)  # the family is a column
    assert {("toy", "brightness"), ("standard", "gradcam")} <= set(zip(board[board.family == "peakiness"].variant,
                                                                         board[board.family == "peakiness"].method))


def test_unknown_option_of_an_explainer_is_refused_naming_the_key(tmp_path):
    """Refused when the workflow loads, before any job (and before Snakemake deletes any output)."""
    root = copy_workflow(tmp_path / "wf")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(
        {"train": {"variants": ["standard"], "seeds": [0], "epochs": 1}, "explain": {"options": {"gradcam": {"steps": 3}}},
         "metrics": {"families": ["accuracy"]}}))
    out = run(["snakemake", "--cores", "2", "explain", "--configfile", str(tmp_path / "bad.yaml")], root, check=False)
    assert out.returncode != 0 and "explain.options.gradcam.steps: not an option; choose from: layer, reshape" in out.stderr
    assert not (root / "results").exists()
