"""Fault cases a hostile but fair user meets (issue 10), fast part: each asserts the exit code and
that the one-line message names the culprit, or that the result is correct.

The pipeline-level cases (deleted outputs, killed runs, pulled clones, DVC) are in
tests/integration/test_faults.py and tests/integration/test_dvc.py.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from xaibench import catalog, cli, config, paths
from xaibench.data import prepare, read_split, split_names
from xaibench.data.folder import read_image, read_mask
from xaibench.data.store import write_split
from xaibench.io import save_npz
from xaibench.metrics.localization import pointing_game
from xaibench.training.fit import train

from ..conftest import TINY

REPO = Path(__file__).resolve().parents[2]


def run_cli(argv, capsys):
    """Run `xaibench` in-process; return (exit code, stderr lines that are not progress bars)."""
    code = cli.main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xaibench")]
    return code, err


def params_file(tmp_path, **overlay) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config.deep_merge(copy.deepcopy(TINY), overlay)))
    return path


def assert_one_line(code, err, *culprits):
    assert code == 2, err
    assert len(err) == 1 and "error:" in err[0], err
    for c in culprits:
        assert c in err[0], (c, err[0])


# --- settings the schema cannot express: caught at parse time, one line naming the key -----------

BAD_SETTINGS = {
    "lr_inf": ({"train": {"lr": float("inf")}}, "train.lr"),
    "plugin_seed_not_trained": ({"train": {"lap": {"plugin": {"seeds": [7]}}}}, "train.lap.plugin.seeds"),
    "scale_reversed": ({"data": {"shapes": {"scale": [0.5, 0.2]}}}, "data.shapes.scale"),
    "deletion_fractions_unordered": ({"metrics": {"deletion": {"fractions": [0.5, 0.1]}}}, "metrics.deletion.fractions"),
    "no_metric_families": ({"metrics": {"families": []}}, "metrics.families"),
    "split_not_prepared": ({"data": {"shapes": {"n_pairs": 0}}, "explain": {"splits": ["pairs"]}}, "explain.splits"),
    "ood_without_classes": ({"data": {"shapes": {"ood_classes": []}}}, "data.shapes.ood_classes"),
    "fractions_leave_no_training": ({"data": {"folder": {"val_fraction": 0.5, "test_fraction": 0.6}}}, "data.folder"),
    "salience_without_masks": ({"datasets": ["folder"], "data": {"folder": {"masks": None}}}, "train.variants"),
    "nan_setting": ({"metrics": {"salience": {"noise_amounts": [0.1, float("nan")]}}},
                    "metrics.salience.noise_amounts.1"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_is_one_line_naming_the_key(tmp_path, capsys, case):
    overlay, key = BAD_SETTINGS[case]
    code, err = run_cli(["prepare", "--dataset", "shapes", "--params", params_file(tmp_path, **overlay)], capsys)
    assert_one_line(code, err, key)


def test_bad_settings_files_name_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1\n")
    assert_one_line(*run_cli(["prepare", "--dataset", "shapes", "--params", broken], capsys), "broken.yaml", "line")
    assert_one_line(*run_cli(["prepare", "--dataset", "shapes", "--params", tmp_path / "nope.yaml"], capsys), "nope.yaml")
    assert_one_line(*run_cli(["prepare", "--dataset", "shapes", "--config", "{not json"], capsys), "--config")


# --- images and masks of any bit depth and mode --------------------------------------------------

def test_16bit_image_and_mask_are_scaled_not_saturated(tmp_path):
    ramp = (np.arange(64, dtype=np.uint32)[None].repeat(8, 0) * 1040).astype(np.uint16)  # 0..65520
    Image.fromarray(ramp).save(tmp_path / "img16.png")
    assert Image.open(tmp_path / "img16.png").mode.startswith("I")
    img = np.asarray(read_image(tmp_path / "img16.png"))
    np.testing.assert_array_equal(img[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert img.std() > 50  # a ramp, not solid 255
    mask = np.asarray(read_mask(tmp_path / "img16.png"))
    np.testing.assert_array_equal(mask, np.round(ramp / 257).astype(np.uint8))
    binary = (ramp > 30000).astype(np.uint16)  # a 16-bit 0/1 mask
    Image.fromarray(binary).save(tmp_path / "mask16.png")
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "mask16.png")), binary * 255)


def test_palette_and_alpha_images(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (200, 30, 60)
    rgb[4:] = (10, 220, 90)
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "pal.png")), rgb)
    rgba = np.dstack([np.full((8, 8, 3), 200, np.uint8), np.tile(np.array([0, 255, 128, 64], np.uint8), (8, 2))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    got = np.asarray(read_image(tmp_path / "alpha.png"))[0, :4, 0]  # composited onto black
    np.testing.assert_array_equal(got, np.round(200 * np.array([0, 255, 128, 64]) / 255).astype(np.uint8))


@pytest.mark.parametrize("kind", ["zero_one", "zero_255", "bool_1bit", "red_rgb"])
def test_mask_encodings_read_as_the_same_region(tmp_path, kind):
    region = np.zeros((16, 16), bool)
    region[4:10, 5:12] = True
    if kind == "zero_one":
        im = Image.fromarray(region.astype(np.uint8))
    elif kind == "zero_255":
        im = Image.fromarray(region.astype(np.uint8) * 255)
    elif kind == "bool_1bit":
        im = Image.fromarray(region).convert("1")
    else:
        im = Image.fromarray(np.dstack([region * 255, region * 0, region * 0]).astype(np.uint8))
    im.save(tmp_path / "m.png")
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "m.png")), region * 255)


def test_zero_one_masks_train_and_score_the_same(tiny_project):
    """A prepared split whose masks are 0/1 (written by another tool) is read as 0/255: the CYBORG
    target (mask / 255) and localisation (mask > 127) see the same, non-empty region."""
    root = tiny_project / "data/prepared/shapes"
    split = read_split(root, "test")
    arrays = {"images": split.images, "labels": split.labels, "masks": (split.masks > 127).astype(np.uint8), **split.extras}
    save_npz(root / "test.npz", **arrays)  # bypasses write_split's normalisation, as a foreign tool would
    again = read_split(root, "test")
    np.testing.assert_array_equal(again.masks, split.masks)
    train_view = again.mask_tensor() > 0.5
    score_view = torch.from_numpy(again.masks) > 127
    assert torch.equal(train_view, score_view) and score_view.any()
    maps = score_view.float()  # a map equal to the mask points inside it
    assert pointing_game(maps, score_view).mean() == 1
    write_split(root, "test", {**arrays, "masks": arrays["masks"].astype(bool)})  # booleans too
    np.testing.assert_array_equal(read_split(root, "test").masks, split.masks)


def make_folder(tmp_path, mask_fn=None, image_fn=None, n=4):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(n):
            for tree in ("images", "masks"):
                d = tmp_path / "raw" / tree / cls
                d.mkdir(parents=True, exist_ok=True)
                arr = rng.integers(0, 255, (20, 20, 3) if tree == "images" else (20, 20), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    if image_fn:
        image_fn(tmp_path / "raw/images/a/0.png")
    if mask_fn:
        mask_fn(tmp_path / "raw/masks/a/0.png")
    return params_file(tmp_path, datasets=["folder"], data={"folder": {
        "root": str(tmp_path / "raw/images"), "masks": str(tmp_path / "raw/masks"), "val_fraction": 0.25,
        "test_fraction": 0.25}}, explain={"splits": ["test"]})


FOLDER_FAULTS = {
    "float_image": (lambda p: Image.fromarray(np.ones((20, 20), np.float32)).save(p.with_suffix(".tif")) or p.unlink(),
                    None, "a/0.tif"),
    "garbage_image": (lambda p: p.write_bytes(b"not a png"), None, "a/0.png"),
    "mask_size": (None, lambda p: Image.fromarray(np.zeros((5, 5), np.uint8)).save(p), "masks/a/0.png"),
    "mask_missing": (None, lambda p: p.unlink(), "masks/a/0.png"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_FAULTS))
def test_folder_faults_name_the_file(tmp_path, capsys, monkeypatch, case):
    image_fn, mask_fn, culprit = FOLDER_FAULTS[case]
    params = make_folder(tmp_path, mask_fn, image_fn)
    monkeypatch.chdir(tmp_path)
    assert_one_line(*run_cli(["prepare", "--dataset", "folder", "--params", params], capsys), culprit)
    assert not (tmp_path / "data/prepared/folder/meta.json").exists()


def test_missing_image_folder_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_file(tmp_path, datasets=["folder"], data={"folder": {"root": "nowhere/images", "masks": None}},
                         train={"variants": ["standard"]})
    assert_one_line(*run_cli(["prepare", "--dataset", "folder", "--params", params], capsys), "nowhere/images")


def test_split_names_are_what_prepare_writes(tmp_path, tiny_cfg):
    """The Snakefile declares one output per split from split_names; it must match what is written."""
    for counts in ({}, {"n_ood": 0}, {"n_pairs": 0, "n_ood": 0}):
        cfg = copy.deepcopy(tiny_cfg)
        cfg["data"]["shapes"].update(counts)
        out = tmp_path / str(len(counts))
        prepare("shapes", cfg["data"], out)
        assert sorted(p.stem for p in out.glob("*.npz")) == sorted(split_names("shapes", cfg["data"]))


# --- damaged or foreign files in a project -------------------------------------------------------

@pytest.fixture
def trained(tiny_project, tiny_cfg, capsys):
    """A tiny project with one trained standard model, trained through the CLI's --config path."""
    cfg = copy.deepcopy(tiny_cfg)
    cfg["train"]["epochs"] = 1
    code, err = run_cli(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "0",
                         "--config", json.dumps(cfg)], capsys)
    assert code == 0, err
    return tiny_project, cfg


def test_model_from_other_width_is_refused_naming_the_key(trained, capsys):
    root, cfg = trained
    other = copy.deepcopy(cfg)
    other["train"]["width"] = cfg["train"]["width"] * 2
    code, err = run_cli(["explain", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--method",
                         "gradcam", "--split", "test", "--config", json.dumps(other)], capsys)
    assert_one_line(code, err, "model.pt", "width=8", "train.width")
    assert not paths.explanation("shapes", "standard", 0, "gradcam", "test").exists()
    code, _ = run_cli(["explain", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--method",
                       "gradcam", "--split", "test", "--config", json.dumps(cfg)], capsys)
    assert code == 0  # the matching settings load it


DAMAGED = {
    "model.pt": ("results/models/shapes/standard/seed0/model.pt", ["explain"]),
    "meta.json": ("data/prepared/shapes/meta.json", ["explain"]),
    "test.npz": ("data/prepared/shapes/test.npz", ["explain"]),
    "rows.parquet": ("results/metrics/shapes/accuracy/standard/seed0.parquet", ["aggregate"]),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_is_named_with_a_fix(trained, capsys, name):
    root, cfg = trained
    rel, (step,) = DAMAGED[name]
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage")
    argv = (["explain", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--method", "gradcam",
             "--split", "test", "--config", json.dumps(cfg)] if step == "explain"
            else ["aggregate", "--dataset", "shapes", "--config", json.dumps(cfg), rel])
    assert_one_line(*run_cli(argv, capsys), rel, "delete it")


def test_diverging_training_stops_naming_epoch_and_setting(tiny_project, tiny_cfg, capsys):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["train"].update(lr=1e30, epochs=2)
    code, err = run_cli(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "0",
                         "--config", json.dumps(cfg)], capsys)
    assert_one_line(code, err, "epoch 1", "train.lr")
    out = paths.model_dir("shapes", "standard", 0)
    assert not any((out / n).exists() for n in ("model.pt", "summary.json", "history.csv"))


def test_output_path_blocked_by_a_file_is_named(tiny_project, tiny_cfg, capsys):
    (tiny_project / "blocker").write_text("a file where a folder should be")
    cfg = copy.deepcopy(tiny_cfg)
    code, err = run_cli(["prepare", "--dataset", "shapes", "--out", "blocker/shapes", "--config", json.dumps(cfg)], capsys)
    assert_one_line(code, err, "blocker")


def test_missing_package_is_one_line(tmp_path):
    """A broken environment (torch missing) gives one line, not an ImportError traceback."""
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", tmp_path / "params.yaml")
    code = ("import sys; sys.modules['torch'] = None; from xaibench import cli; "
            "sys.exit(cli.main(['train', '--dataset', 'shapes', '--variant', 'standard', '--seed', '0']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'torch'" in out.stderr and "install" in out.stderr


def test_unavailable_device_is_named(tiny_project, tiny_cfg, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["device"] = "cuda:3"
    code, err = run_cli(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "0",
                         "--config", json.dumps(cfg)], capsys)
    assert_one_line(code, err, "cuda:3")


# --- deterministic artifacts ---------------------------------------------------------------------

def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_identical_training_runs_give_byte_identical_model_pt(tiny_project, tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["train"]["epochs"] = 1
    data = tiny_project / "data/prepared/shapes"
    train(cfg, data, "standard", 0, tiny_project / "a", "cpu")
    train(cfg, data, "standard", 0, tiny_project / "b", "cpu")
    for name in ("model.pt", "history.csv", "summary.json"):
        assert sha(tiny_project / "a" / name) == sha(tiny_project / "b" / name), name


def test_parquet_and_npz_are_byte_identical_on_rewrite(tmp_path):
    from xaibench.io import atomic_path
    frame = pd.DataFrame({"metric": ["a", "b"], "value": [0.5, np.nan]})
    for name in ("x", "y"):
        with atomic_path(tmp_path / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
        save_npz(tmp_path / f"{name}.npz", maps=np.arange(12, dtype=np.float16).reshape(3, 4))
    assert sha(tmp_path / "x.parquet") == sha(tmp_path / "y.parquet")
    assert sha(tmp_path / "x.npz") == sha(tmp_path / "y.npz")


# --- DVC stages depend on every module they run ---------------------------------------------------

STAGE_STEPS = {"prepare": ["prepare"], "train": ["train"], "explain": ["explain"], "generate": ["generate"],
               "measure": ["measure", "aggregate", "claims", "leaderboard", "summary"], "figures": ["figures"]}
# Modules a registry imports lazily by the name the catalog gives (xaibench.registry): what each stage may run.
STAGE_CATALOG = {"prepare": ["DATASETS"], "train": ["VARIANTS", "ARCHITECTURES"],
                 "explain": ["VARIANTS", "ARCHITECTURES", "EXPLAINERS"],
                 "generate": ["VARIANTS", "ARCHITECTURES", "FEATVIZ"],
                 "measure": ["VARIANTS", "ARCHITECTURES", "EXPLAINERS", "FAMILIES"],
                 "figures": ["VARIANTS", "ARCHITECTURES", "EXPLAINERS", "FIGURES"]}


def _module_file(name: str) -> Path | None:
    p = REPO / "src" / Path(*name.split("."))
    return p / "__init__.py" if (p / "__init__.py").is_file() else (p.with_suffix(".py") if p.with_suffix(".py").is_file() else None)


def _imports(node, package: str) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - n.level + 1] if n.level else []
            mod = ".".join(base + ([n.module] if n.module else []))
            if mod.startswith("xaibench"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in n.names if _module_file(f"{mod}.{a.name}")}
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.startswith("xaibench")}
    return out


def _closure(start: set[str]) -> set[Path]:
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += _imports(ast.parse(path.read_text()), name if path.name == "__init__.py" else name.rsplit(".", 1)[0])
    return {_module_file(n) for n in seen}


def test_every_dvc_stage_depends_on_every_module_it_runs():
    """Each stage's Snakemake call imports the DAG helpers (rules/common.smk) and runs `xaibench
    <step>`; every module those import (lazily too) must be a dependency of the stage in dvc.yaml."""
    cli_tree = ast.parse((REPO / "src/xaibench/cli.py").read_text())
    functions = {n.name: n for n in cli_tree.body if isinstance(n, ast.FunctionDef)}
    top = set().union(*(_imports(n, "xaibench") for n in cli_tree.body if not isinstance(n, ast.FunctionDef)))
    smk = set().union(*(_imports(ast.parse("\n".join(l for l in p.read_text().splitlines() if l.startswith(("import", "from")))), "")
                        for p in [*(REPO / "rules").glob("*.smk"), REPO / "Snakefile"]))
    steps = {m.group(1) for p in (REPO / "rules").glob("*.smk") for m in re.finditer(r'"xaibench (\w+) ', p.read_text())}
    assert steps <= {s for v in STAGE_STEPS.values() for s in v}, f"a rule runs a step no stage lists: {steps}"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, names in STAGE_STEPS.items():
        start = top | smk | {"xaibench.cli"}
        for name in names:
            start |= _imports(functions[f"cmd_{name}"], "xaibench")
        start |= {entry["module"] for section in STAGE_CATALOG[stage] for entry in getattr(catalog, section).values()}
        needed = {p.relative_to(REPO) for p in _closure(start - {"xaibench.cli"})} | {Path("src/xaibench/cli.py")}
        if Path("src/xaibench/config.py") in needed:
            needed.add(Path("src/xaibench/params.schema.yaml"))
        deps = [Path(d) for d in stages[stage]["deps"]]
        missing = sorted(str(p) for p in needed if not any(p == d or d in p.parents for d in deps))
        assert not missing, f"dvc.yaml stage {stage} runs but does not depend on: {missing}"
        for workflow_file in ("Snakefile", "rules", "plugins"):  # plugins/: the plugin code DVC can see
            assert Path(workflow_file) in deps, (stage, workflow_file)
            assert (REPO / workflow_file).exists(), workflow_file  # kept in every clone (DVC needs its deps)
