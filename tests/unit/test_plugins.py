"""Plugins (entry points `xaibench.plugins`) and external models (`models.external`), without a workflow run.

Plugins are real distributions on a temporary site folder (a dist-info with entry_points.txt, what pip
leaves), found by importlib.metadata in a fresh `xaibench` process; external models are real torch
files imported by the real `train` step. tests/integration/test_plugins.py runs both through Snakemake.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xaibench import catalog, cli, config, plugins, steps
from xaibench.models import create_model
from xaibench.training.fit import CheckpointMismatch, load_trained

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/xaibench-example-plugin"


def install(site: Path, dist: str, module: str, source: str | None = None) -> Path:
    """A distribution `dist` in `site` whose entry point `example` names `module` (its source written
    there when given): what `pip install` leaves, read by importlib.metadata like any other."""
    if source is not None:
        (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{plugins.GROUP}]\nexample = {module}\n")
    return site


def xaibench(*args: str, path: list[Path]) -> subprocess.CompletedProcess:
    """`xaibench ...` in a fresh process with `path` first on PYTHONPATH (the catalog loads plugins once)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO / "src"]))}
    return subprocess.run([sys.executable, "-m", "xaibench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_an_installed_plugin_adds_its_names_to_the_catalog_and_the_cli(tmp_path, monkeypatch):
    """The example plugin's explainer and family are merged (torch-free: its catalog module) and are
    choices of the CLI; the files of its package are what the jobs using them take as inputs."""
    site = install(tmp_path, "xaibench-example-plugin", "xaibench_example.catalog")
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(site))
    sections = {s: dict(getattr(catalog, s)) for s in plugins.SECTIONS}
    owners = plugins.load(sections)
    assert set(owners) == {("EXPLAINERS", "grad_power"), ("FAMILIES", "peak_share"), ("FIGURES", "peak_share")}
    assert sections["EXPLAINERS"]["grad_power"]["options"] == {"power": 2.0}
    caption = Path(sections["FIGURES"]["peak_share"]["caption"])  # resolved from the plugin's folder
    assert caption == EXAMPLE / "src/xaibench_example/captions/peak_share.rst" and caption.is_file()
    code = plugins.files(owners, explainers=["grad_power"])
    assert str(EXAMPLE / "src/xaibench_example/explainers.py") in code
    assert plugins.files(owners, explainers=["gradcam"]) == []  # built-ins: no plugin inputs
    helps = [xaibench(step, "--help", path=[site, EXAMPLE / "src"]) for step in ("explain", "measure")]
    assert "grad_power" in helps[0].stdout and "peak_share" in helps[1].stdout
    assert "grad_power" not in xaibench("explain", "--help", path=[]).stdout  # not installed: not there


BROKEN = "raise RuntimeError('this plugin is broken')\n"
CLASH = 'CATALOG = {"EXPLAINERS": {"gradcam": {"module": "clash_impl", "options": {}}}}\n'
NO_CAPTION = 'CATALOG = {"FIGURES": {"mine": {"module": "m", "needs": [], "caption": "gone.rst"}}}\n'


@pytest.mark.parametrize("source, says", [(BROKEN, "import failed: RuntimeError: this plugin is broken"),
                                          (CLASH, "EXPLAINERS entry 'gradcam' clashes with a built-in"),
                                          (NO_CAPTION, "FIGURES entry 'mine': caption file")])
def test_a_broken_or_clashing_plugin_stops_the_cli_in_one_line_naming_it(tmp_path, source, says):
    site = install(tmp_path, "bad-plugin", "bad_plugin", source)
    out = xaibench("explain", "--help", path=[site])
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "plugin bad-plugin (entry point 'example = bad_plugin'" in lines[0] and says in lines[0]


# ---- external models ------------------------------------------------------------------------------

@pytest.fixture
def catalog_restored():
    """External names join catalog.VARIANTS when settings declare them: forget them afterwards."""
    before = dict(catalog.VARIANTS)
    yield
    catalog.VARIANTS.clear()
    catalog.VARIANTS.update(before)


def external_cfg(tiny_cfg: dict, **models) -> dict:
    raw = {**{k: v for k, v in tiny_cfg.items() if k != "models"}, "models": {"external": models}}
    raw["train"] = {k: v for k, v in raw["train"].items() if k != "variants"} | {"variants": ["standard"]}
    return config.validate(json.loads(json.dumps(raw)))


def save_models(folder: Path, classes: int = 4) -> dict[str, Path]:
    torch.manual_seed(0)
    model = create_model("small_cnn", classes, width=8).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "sd.pt")
    torch.jit.save(torch.jit.script(model), folder / "ts.pt")
    return {"sd": folder / "sd.pt", "ts": folder / "ts.pt"}


def train(cfg: dict, variant: str, capsys) -> tuple[int, str]:
    """The `train` step as its rule calls it (the job's settings slice as JSON)."""
    slice_ = steps.as_json(steps.settings("train", cfg, dataset="shapes", variant=variant, seed=0))
    code = cli.main(["train", "--dataset", "shapes", "--variant", variant, "--seed", "0", "--config", slice_])
    return code, capsys.readouterr().err


def test_external_state_dict_and_torchscript_models_are_imported_as_models(tiny_project, tiny_cfg, capsys,
                                                                         catalog_restored):
    """Both formats become seed-0 models of their own variant: checked, evaluated, loadable by every
    step; a file replaced after the import is refused until its import reruns."""
    files = save_models(tiny_project / "data/external")
    cfg = external_cfg(tiny_cfg, mine_sd={"path": "data/external/sd.pt", "arch": "small_cnn", "width": 8, "classes": 4},
                       mine_ts={"path": "data/external/ts.pt", "format": "torchscript", "classes": 4})
    assert cfg["train"]["variants"] == ["standard", "mine_sd", "mine_ts"]
    assert steps.models(cfg)[-2:] == [("mine_sd", 0), ("mine_ts", 0)]
    assert steps.train_inputs(cfg, "shapes", "mine_ts", 0)["checkpoint"] == "data/external/ts.pt"
    assert catalog.methods_for(cfg["explain"], "mine_ts") == [m for m in cfg["explain"]["methods"]
                                                             if catalog.EXPLAINERS[m].get("needs") is None]
    x = torch.rand(3, 3, 32, 32)
    for variant in ("mine_sd", "mine_ts"):
        assert train(cfg, variant, capsys)[0] == 0
        model, mcfg = load_trained(cfg, "shapes", variant, 0)
        summary = json.loads((tiny_project / f"results/models/shapes/{variant}/seed0/summary.json").read_text())
        assert mcfg["sha256"] == summary["sha256"] and 0 <= summary["test_accuracy"] <= 1
        reference = torch.jit.load(files["ts"]) if variant == "mine_ts" else None
        if reference is not None:
            assert torch.allclose(model(x), reference(x), atol=1e-5)
    torch.jit.save(torch.jit.script(create_model("small_cnn", 4, width=8)), files["ts"])  # replaced
    with pytest.raises(CheckpointMismatch, match="sha256"):
        load_trained(cfg, "shapes", "mine_ts", 0)


def test_layer_moves_gradcam_to_any_module_of_a_state_dict_model(tiny_project, tiny_cfg, capsys, catalog_restored):
    """`layer: trunk.7` (small_cnn's second pooling; `cam_layer`, its old name, still works with a note):
    Grad-CAM's grid is 8x8 instead of 4x4 at 32 px, the map is the `layer` option's on the plain model,
    and the model is still a Classifier, so CAM and AGF (which read the last block) still apply."""
    from xaibench.explain import get
    save_models(tiny_project / "data/external")
    block = {"path": "data/external/sd.pt", "width": 8, "classes": 4}
    cfg = external_cfg(tiny_cfg, last=block, cut={**block, "cam_layer": "trunk.7"}, named={**block, "layer": "trunk.7"})
    assert "models.external.cut.cam_layer is now called models.external.cut.layer" in capsys.readouterr().err
    assert cfg["models"]["external"]["cut"]["layer"] == "trunk.7" and "cam_layer" not in cfg["models"]["external"]["cut"]
    assert catalog.methods_for({"methods": ["gradcam", "cam", "agf"]}, "named") == ["gradcam", "cam", "agf"]
    x, targets = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    models = {}
    for variant in ("last", "cut", "named"):
        assert train(cfg, variant, capsys)[0] == 0
        models[variant] = load_trained(cfg, "shapes", variant, 0)[0]
    assert torch.allclose(models["named"](x), models["last"](x), atol=1e-5)
    assert get("gradcam")(models["last"], x, targets).shape[-1] == 4
    maps = get("gradcam")(models["named"], x, targets, layer="trunk.14")  # the model's own layer wins
    assert maps.shape[-1] == 8 and torch.equal(maps, get("gradcam")(models["cut"], x, targets))
    assert torch.equal(maps, get("gradcam")(models["last"], x, targets, layer="trunk.7"))
    cfg = external_cfg(tiny_cfg, far={**block, "layer": "trunk.99"})
    code, err = train(cfg, "far", capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert ("data/external/sd.pt: models.external.far.layer 'trunk.99' is not a module of the model (Classifier); "
            "closest names: trunk.9") in err, err
    assert not (tiny_project / "results/models/shapes/far").exists()


@pytest.mark.parametrize("block, layer, says", [
    ({"path": "data/external/sd.pt", "width": 8}, "trunk.99",
     "layer 'trunk.99' is not a module of the model (Classifier); closest names: trunk.9"),
    ({"path": "data/external/ts.pt", "format": "torchscript"}, "trunk.7",
     "layer 'trunk.7' is in a TorchScript model, whose modules take no forward hooks")])
def test_an_explain_option_layer_the_model_cannot_serve_stops_the_job_before_any_file(
        tiny_project, tiny_cfg, capsys, catalog_restored, block, layer, says):
    """`explain.options.gradcam.layer` is checked against each model when its explain job starts: one line
    naming the model and why (the closest names; no hooks in TorchScript); no map file written, not
    even the methods before it."""
    save_models(tiny_project / "data/external")
    raw = {**tiny_cfg, "explain": {**tiny_cfg["explain"], "options": {"gradcam": {"layer": layer}}}}
    cfg = external_cfg(raw, mine={**block, "classes": 4})
    assert train(cfg, "mine", capsys)[0] == 0
    slice_ = steps.as_json(steps.settings("explain", cfg, dataset="shapes", variant="mine", seed=0,
                                          methods=["gradient", "gradcam"]))
    code = cli.main(["explain", "--dataset", "shapes", "--variant", "mine", "--seed", "0", "--split", "test",
                     "--method", "gradient", "--method", "gradcam", "--config", slice_])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert f"shapes/mine/seed0: explain.options.gradcam.{says}" in err, err
    assert not (tiny_project / "results/explanations").exists()


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A tiny torchvision ViT (4x4 patches + CLS at 32 px, random head) saved with torch.export, batch dynamic."""
    import torchvision
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=4).eval()
    torch.nn.init.normal_(vit.heads.head.weight)
    path = tmp_path_factory.mktemp("vit") / "vit.pt2"
    x = torch.rand(2, 3, 32, 32)
    torch.export.save(torch.export.export(vit, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), path)
    return vit, path


VIT_LAYER = "encoder.layers.encoder_layer_0"
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_an_exported_vit_is_imported_and_explained_by_gradcam_at_its_named_block(tiny_project, tiny_cfg, capsys,
                                                                                 catalog_restored, vit_file):
    """format: export (forward only) with a layer: the explainers needing features or a Classifier do not
    apply; the imported model's Grad-CAM (hooked on the unflattened program, tokens reshaped, inputs
    normalised as the block says) is the eager ViT's; the model survives deepcopy (randomisation)."""
    import copy
    from xaibench.explain import get
    vit, path = vit_file
    cfg = external_cfg(tiny_cfg, vit={"path": str(path), "format": "export", "classes": 4, "layer": VIT_LAYER,
                                      "reshape": "tokens", "normalisation": NORM})
    methods = ["gradcam", "cam", "agf", "lap", "proto", "gradient", "ig", "random"]
    assert catalog.methods_for({"methods": methods}, "vit") == ["gradcam", "gradient", "ig", "random"]
    code, err = train(cfg, "vit", capsys)
    assert code == 0, err
    model = load_trained(cfg, "shapes", "vit", 0)[0]
    x, targets = torch.rand(3, 3, 32, 32), torch.tensor([0, 3, 1])
    normalised = (x - 0.5) / 0.25
    assert torch.allclose(model(x), vit(normalised), atol=1e-5)
    maps = get("gradcam")(model, x, targets)
    assert maps.shape == (3, 4, 4) and (maps.flatten(1).amax(1) > 0).all()
    direct = get("gradcam")(vit, normalised, targets, layer=VIT_LAYER, reshape="tokens")
    torch.testing.assert_close(maps, direct, rtol=0, atol=1e-5)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))


def test_layer_settings_are_refused_with_the_settings(tiny_project, tiny_cfg, catalog_restored, vit_file):
    """Before any job, without torch: an export file needs a layer it has (its archive lists them), a
    TorchScript file takes none, and a reshape needs a layer."""
    files = save_models(tiny_project / "data/external")
    path = str(vit_file[1])
    vit = {"path": path, "format": "export", "classes": 4}
    for block, says in (
            (vit, f"models.external.m.layer: required for an export file ({path} has only forward(x) -> logits): "
                  "name the module Grad-CAM explains, e.g. one of: "),
            ({**vit, "layer": "encoder.layers.encoder_layer_9"},
             f"models.external.m.layer: {path} has no module 'encoder.layers.encoder_layer_9'; closest names: "
             "encoder.layers.encoder_layer_1, encoder.layers.encoder_layer_0"),
            ({"path": str(files["ts"]), "format": "torchscript", "classes": 4, "layer": "trunk.7"},
             "models.external.m.layer: TorchScript modules take no forward hooks"),
            ({"path": str(files["sd"]), "classes": 4, "reshape": "tokens"},
             "models.external.m.reshape: needs models.external.m.layer")):
        with pytest.raises(config.ConfigError) as err:
            external_cfg(tiny_cfg, m=block)
        assert says in str(err.value), err.value
    with pytest.raises(config.ConfigError, match="explain.options.gradcam.reshape: needs explain.options.gradcam.layer"):
        config.validate({"explain": {"options": {"gradcam": {"reshape": "tokens"}}}})


def test_external_model_errors_are_one_line_naming_the_file(tiny_project, tiny_cfg, capsys, catalog_restored):
    """Missing and corrupt files are refused with the settings, before any job; a wrong class count
    when imported; each in one line naming the file, with nothing written."""
    files = save_models(tiny_project / "data/external", classes=3)
    (tiny_project / "data/external/bad.pt").write_bytes(b"not a torch file" * 10)
    for path, says in (("data/external/none.pt", "data/external/none.pt not found"),
                       ("data/external/bad.pt", "data/external/bad.pt is not a PyTorch file")):
        with pytest.raises(config.ConfigError, match=f"models.external.mine.path: {says}"):
            external_cfg(tiny_cfg, mine={"path": path, "classes": 4})
    for block, says in (({"classes": 3}, "models.external.mine.classes is 3 but dataset shapes has 4 classes"),
                        ({"classes": 4}, "not a state_dict of small_cnn (width 8) with 4 classes (size mismatch")):
        cfg = external_cfg(tiny_cfg, mine={"path": str(files["sd"]), "width": 8, **block})
        code, err = train(cfg, "mine", capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1 and str(files["sd"]) in err and says in err, err
        assert not (tiny_project / "results/models/shapes/mine").exists()
    with pytest.raises(config.ConfigError, match="'standard' is already a training variant"):
        external_cfg(tiny_cfg, standard={"path": str(files["sd"]), "classes": 4})
