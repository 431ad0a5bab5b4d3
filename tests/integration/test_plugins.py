"""A user's own method and models, as a user adds them: no file of the suite edited.

The example plugin (examples/xaibench-example-plugin: the `grad_power` explainer, the `peak_share`
family and its figure) is pip-installed into a folder of its own (`--target`, offline; the shared
environment stays untouched) that the workflow finds on PYTHONPATH, and three models trained outside
the suite (examples/external_model/make_models.py: a state_dict, TorchScript and a torch.export ViT
read at a named block) are declared in
`models.external`. One small Snakemake run (tables, claims, leaderboard, figures) then scores and
draws all of them; the dry runs after it check which jobs a changed plugin or a replaced model reruns.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .helpers import REPO, copy_workflow, jobs_of, run

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples/xaibench-example-plugin"
MODELS = {"mine_sd": {"path": "data/external/small_cnn.pt", "width": 8, "classes": 4},
          "mine_ts": {"path": "data/external/small_cnn.ts.pt", "format": "torchscript", "classes": 4},
          "mine_vit": {"path": "data/external/vit.pt2", "format": "export", "classes": 4,
                       "layer": "encoder.layers.encoder_layer_0", "reshape": "tokens"}}
OVERLAY = {"train": {"variants": ["standard"], "seeds": [0], "epochs": 1},
           "explain": {"methods": ["gradcam", "grad_power", "random"], "variants": {},
                       "options": {"grad_power": {"power": 1.5}}},
           "metrics": {"families": ["accuracy", "localization", "peak_share"]},
           "featviz": {"variants": []}}


def snakemake(args: str, root: Path, site: Path | None, check: bool = True):
    pythonpath = os.pathsep.join([*([str(site)] if site else []), str(root / "src")])
    return run(f"PYTHONPATH={pythonpath} {sys.executable} -m snakemake --cores 1 {args}", root, check=check, timeout=900)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The example plugin installed, three external models made, the measure phase run with all of them."""
    tmp = tmp_path_factory.mktemp("plugins")
    shutil.copytree(EXAMPLE, tmp / "example")  # pip builds in the source folder: keep the repository clean
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(tmp / "site"), str(tmp / "example")], tmp)
    root = copy_workflow(tmp / "wf")
    (tmp / "base.yaml").write_text(yaml.safe_dump(OVERLAY))
    (tmp / "mine.yaml").write_text(yaml.safe_dump({**OVERLAY, "models": {"external": MODELS}}))
    snakemake(f"prepare --configfile {tmp / 'base.yaml'}", root, tmp / "site")  # the models are trained on its data
    run(f"PYTHONPATH={root / 'src'} {sys.executable} {REPO / 'examples/external_model/make_models.py'} "
        "--data data/prepared/shapes --out data/external --epochs 2", root)
    snakemake(f"measure figures --configfile {tmp / 'mine.yaml'}", root, tmp / "site")
    return root, tmp


def test_plugin_and_external_models_are_in_the_cli_tables_and_leaderboard(scored):
    root, tmp = scored
    env = f"PYTHONPATH={tmp / 'site'}{os.pathsep}{root / 'src'}"
    assert "grad_power" in run(f"{env} {sys.executable} -m xaibench.cli explain --help", root).stdout
    assert "peak_share" in run(f"{env} {sys.executable} -m xaibench.cli measure --help", root).stdout
    tables = root / "results/metrics/shapes"
    peak = pd.read_csv(tables / "peak_share.csv")
    assert set(peak.variant) == {"standard", "mine_sd", "mine_ts", "mine_vit"} and {"gradcam", "grad_power"} <= set(peak.method)
    assert peak.value.between(0, 1).all()
    loc = pd.read_csv(tables / "localization.csv")
    assert {("mine_ts", "grad_power"), ("mine_sd", "gradcam"), ("mine_ts", "gradcam"),
            ("mine_vit", "gradcam")} <= set(zip(loc.variant, loc.method))
    accuracy = pd.read_csv(tables / "accuracy.csv")
    assert {"mine_sd", "mine_ts", "mine_vit"} <= set(accuracy.variant)
    board = pd.read_csv(root / "results/leaderboard/shapes.csv", keep_default_na=False)
    assert {("mine_ts", "grad_power", "peak_share"), ("mine_sd", "gradcam", "localization"),
            ("mine_vit", "gradcam", "localization")} <= set(
        zip(board.variant, board.method, board.family))
    assert "mine_ts" in (root / "results/tables/shapes/localization.md").read_text()  # drawn like any variant
    assert (root / "results/figures/shapes/gallery.png").is_file()


def test_the_plugin_figure_is_drawn_and_in_the_report_with_its_caption(scored):
    root, tmp = scored
    assert (root / "results/figures/shapes/peak_share.png").is_file()
    snakemake(f"--report report.html --configfile {tmp / 'mine.yaml'}", root, tmp / "site")
    html = (root / "report.html").read_text()
    assert "sits in its single largest pixel" in html  # the plugin's caption, from its package data


def test_replacing_an_external_model_reruns_only_its_jobs(scored):
    root, tmp = scored
    path = root / MODELS["mine_ts"]["path"]
    shutil.copy2(path, tmp / "ts.keep")
    path.write_bytes((root / MODELS["mine_sd"]["path"]).read_bytes())  # another file under the same name
    try:
        out = snakemake(f"-n measure --configfile {tmp / 'mine.yaml'}", root, tmp / "site")
    finally:
        shutil.copy2(tmp / "ts.keep", path)
    jobs = jobs_of(out.stdout)
    assert jobs.pop("train_model") == 1 and jobs.pop("explain_mine_ts") == 1 and jobs.pop("measure_model") == 1
    assert set(jobs) == {"aggregate", "claims", "leaderboard", "summary", "measure"}  # the tables of every model


def test_a_changed_plugin_reruns_the_jobs_that_use_it(scored):
    root, tmp = scored
    code = tmp / "site/xaibench_example/explainers.py"
    shutil.copy2(code, tmp / "explainers.keep")
    code.write_text(code.read_text() + "# changed\n")
    try:
        out = snakemake(f"-n measure --configfile {tmp / 'mine.yaml'}", root, tmp / "site")
    finally:
        shutil.copy2(tmp / "explainers.keep", code)
    jobs = jobs_of(out.stdout)
    assert {"explain_standard", "explain_mine_sd", "explain_mine_ts", "explain_mine_vit"} <= set(jobs)
    assert jobs["measure_model"] == 4
    assert "train_model" not in jobs and "prepare_shapes" not in jobs


def test_uninstalled_plugin_is_gone_from_the_choices(scored):
    root, tmp = scored
    shutil.rmtree(tmp / "site")  # `pip uninstall` of a --target install: its folder goes
    out = run(f"PYTHONPATH={root / 'src'} {sys.executable} -m xaibench.cli explain --help", root)
    assert "grad_power" not in out.stdout


BROKEN = "raise ImportError('needs a package that is not installed')\n"


@pytest.mark.parametrize("case", ["broken plugin", "missing model", "corrupt model", "unknown layer"])
def test_bad_plugin_or_model_stops_the_workflow_before_any_job(tmp_path, case):
    """One line naming the culprit, exit code != 0, nothing written."""
    root = copy_workflow(tmp_path / "wf")
    site, models = None, {"mine": {"path": "data/external/mine.pt", "classes": 4}}
    if case == "broken plugin":
        site, models = tmp_path / "site", {}
        info = site / "broken_plugin-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[xaibench.plugins]\nbroken = broken_plugin\n")
        (site / "broken_plugin.py").write_text(BROKEN)
    if case == "corrupt model":
        (root / "data/external").mkdir(parents=True, exist_ok=True)
        (root / "data/external/mine.pt").write_bytes(b"\x00" * 100)
    if case == "unknown layer":  # an export file lists its modules: a name it lacks is refused with the settings
        import torch
        (root / "data/external").mkdir(parents=True, exist_ok=True)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        torch.export.save(torch.export.export(net, (torch.rand(2, 3, 32, 32),)), root / "data/external/mine.pt")
        models["mine"].update(format="export", layer="2.0")
    plain = {**OVERLAY, "explain": {"methods": ["gradcam"]}, "metrics": {"families": ["accuracy"]}}  # no plugin names
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({**plain, "models": {"external": models}}))
    out = snakemake(f"-n --configfile {tmp_path / 'o.yaml'}", root, site, check=False)
    says = {"broken plugin": "plugin broken-plugin (entry point 'broken = broken_plugin' in group xaibench.plugins): "
                             "import failed: ImportError: needs a package that is not installed",
            "missing model": "models.external.mine.path: data/external/mine.pt not found",
            "corrupt model": "models.external.mine.path: data/external/mine.pt is not a PyTorch file",
            "unknown layer": "models.external.mine.layer: data/external/mine.pt has no module '2.0'; closest names: "}[case]
    assert out.returncode != 0 and says in out.stdout + out.stderr, out.stdout[-2000:]  # Snakemake logs to stdout
    assert not (root / "results").exists() and not (root / "data/prepared").exists()
