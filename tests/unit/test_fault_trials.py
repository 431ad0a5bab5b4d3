"""Fault trials of issue 21, unit-level part (a module that grows with every case found).

Each case asserts the exit code (or the correct result), the one line naming the culprit, and that
every file computed before is byte-identical afterwards. Cases needing a real Snakemake run:
tests/integration/test_fault_trials.py.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from xaibench import cli, config, figures, paths
from xaibench.data import prepare, raw_manifest
from xaibench.figures import timing
from xaibench.training.fit import train

from ..conftest import TINY
from ..cub_tree import make_cub_tree
from ..integration.helpers import copy_workflow
from .test_faults import assert_one_line, make_folder, run_cli

torch.set_num_threads(1)  # the machine's cores are shared; same thread count, same sums
DATA = "data/prepared/shapes"
MODEL = "results/models/shapes/standard/seed{}"


def tree(root: Path, skip: str = "") -> dict[str, str]:
    """SHA-256 of every file under `root` (but `skip`), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and str(p.relative_to(root)) != skip}


def cut(path: Path) -> None:
    """Truncate a file to half its length (a copy cut short, a disk that filled up)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny shapes data, two 2-epoch standard models (seeds 0, 1), their accuracy rows and table:
    a finished project as `snakemake` leaves it, made through the steps' own functions and CLI."""
    root = tmp_path_factory.mktemp("project")
    cfg = config.validate(copy.deepcopy(TINY))
    cfg["train"]["epochs"] = 2
    cfg["metrics"]["families"] = ["accuracy"]
    cfg["figures"]["formats"] = ["png", "pdf", "svg"]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        prepare("shapes", cfg["data"], root / DATA)
        units = []
        for seed in (0, 1):
            train(cfg, root / DATA, "standard", seed, root / MODEL.format(seed), "cpu")
            assert cli.main(["measure", "--dataset", "shapes", "--variant", "standard", "--seed", str(seed),
                             "--family", "accuracy", "--config", json.dumps(cfg)]) == 0
            units.append(str(paths.measure_unit("shapes", "accuracy", "standard", f"seed{seed}")))
        assert cli.main(["aggregate", "--dataset", "shapes", "--config", json.dumps(cfg), *units]) == 0
    finally:
        os.chdir(cwd)
    return root, cfg


@pytest.fixture
def copy_of(project, tmp_path, monkeypatch):
    """A private copy of the finished project as the working directory."""
    root, cfg = project
    shutil.copytree(root, tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    return tmp_path / "p", copy.deepcopy(cfg)


# --- (5) same bytes every time ---------------------------------------------------------------------

def test_resumed_training_writes_the_uninterrupted_bytes(copy_of):
    """Interrupted after epoch 1 and resumed: model.pt, history.csv and summary.json are the
    uninterrupted run's bytes (model.pt's pickle used to repeat the history's column names, and its
    serialization id, a CRC of the records, followed)."""
    root, cfg = copy_of
    assert train(cfg, root / DATA, "standard", 0, root / "cut", "cpu", stop_after=1) == {}
    train(cfg, root / DATA, "standard", 0, root / "cut", "cpu")
    full = tree(root / MODEL.format(0))
    assert tree(root / "cut") == full and set(full) == {"model.pt", "history.csv", "summary.json"}


def test_corrupt_resume_checkpoint_restarts_training_with_a_warning(copy_of, capsys):
    """A truncated epoch checkpoint is torch's "PytorchStreamReader failed reading zip archive" with
    no path; it must not block every rerun: the step warns naming it and trains from epoch 1, to
    the same model, leaving the other models as they were."""
    root, cfg = copy_of
    train(cfg, root / DATA, "standard", 0, root / "cut", "cpu", stop_after=1)
    cut(root / "cut/checkpoint.pt")
    before = tree(root / "results")
    code = cli.main(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--out", "cut",
                     "--config", json.dumps(cfg)])
    out = capsys.readouterr().out
    assert code == 0
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "cut/checkpoint.pt" in warning[0] and "from the first epoch" in warning[0]
    assert "resuming" not in out
    assert tree(root / "cut") == tree(root / MODEL.format(0))
    assert tree(root / "results") == before


def test_every_figure_format_redraws_bit_identical(copy_of):
    """The accuracy figure (seed dots jittered by seaborn from numpy's global generator) drawn twice
    with the global generator in different states, as png, pdf and svg: the same bytes (no dates,
    version stamps or random SVG ids either). Every catalogued figure: the integration trial."""
    root, cfg = copy_of
    hashes = []
    for state in (1, 2):
        np.random.seed(state)
        written = figures.draw(cfg, "shapes", ["accuracy"])
        hashes.append(tree(root / "results/figures"))
    assert sorted(p.suffix for p in written) == [".pdf", ".png", ".svg"]
    assert hashes[0] == hashes[1]


# --- (6b) third-party errors from reading a file: one line naming it -------------------------------

def _explain(cfg):
    return ["explain", "--dataset", "shapes", "--variant", "standard", "--seed", "0", "--method", "gradcam",
            "--split", "test", "--config", json.dumps(cfg)]


def _not_text(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00garbage\x81" * 8)


def _zero(path: Path) -> None:
    path.write_bytes(b"\x00" * path.stat().st_size)


UNIT = "results/metrics/shapes/accuracy/standard/seed0.parquet"
# case -> (file, how it is damaged, the step that reads it, words the line must hold)
READ_FAULTS = {
    "model_pt_truncated": (MODEL.format(0) + "/model.pt", cut, _explain, ["delete it"]),
    "split_npz_truncated": (DATA + "/test.npz", cut, _explain, ["delete it"]),
    "meta_json_not_text": (DATA + "/meta.json", _not_text, _explain, ["not a text file", "delete it"]),
    "rows_parquet_truncated": (UNIT, cut, lambda cfg: ["aggregate", "--dataset", "shapes", "--config", json.dumps(cfg),
                                                       UNIT], ["delete it"]),
    "metric_csv_zeroed": ("results/metrics/shapes/accuracy.csv", _zero,
                          lambda cfg: ["figures", "--dataset", "shapes", "--only", "accuracy", "--config",
                                       json.dumps(cfg)], ["not the expected table", "delete it"]),
}


@pytest.mark.parametrize("case", sorted(READ_FAULTS))
def test_damaged_input_is_one_line_and_loses_nothing(copy_of, capsys, case):
    root, cfg = copy_of
    rel, damage, argv, words = READ_FAULTS[case]
    damage(root / rel)
    before = tree(root)
    assert_one_line(*run_cli(argv(cfg), capsys), rel, *words)
    assert tree(root) == before


def test_settings_file_that_is_not_text_is_named(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    _not_text(params)
    assert_one_line(*run_cli(["prepare", "--dataset", "shapes", "--params", params], capsys), "params.yaml",
                    "not a text file")


def test_damaged_pretrained_weights_are_named(copy_of, capsys):
    root, cfg = copy_of
    weights = root / "backbone.pt"
    shutil.copy(root / MODEL.format(0) / "model.pt", weights)
    cut(weights)
    cfg["train"]["pretrained"] = str(weights)
    before = tree(root)
    code, err = run_cli(["train", "--dataset", "shapes", "--variant", "standard", "--seed", "2",
                         "--config", json.dumps(cfg)], capsys)
    assert_one_line(code, err, "backbone.pt", "train.pretrained")
    assert tree(root) == before


def test_truncated_raw_image_is_named(tmp_path, capsys, monkeypatch):
    params = make_folder(tmp_path, image_fn=cut)
    monkeypatch.chdir(tmp_path)
    assert_one_line(*run_cli(["prepare", "--dataset", "folder", "--params", params], capsys), "images/a/0.png",
                    "restore it")
    assert not (tmp_path / "data/prepared/folder").exists()


def test_cub_metadata_that_is_not_text_is_named(tmp_path, capsys, monkeypatch):
    make_cub_tree(tmp_path / "raw")
    _not_text(tmp_path / "raw/CUB_200_2011/bounding_boxes.txt")
    monkeypatch.chdir(tmp_path)
    cfg = config.validate({"datasets": ["cub"], "data": {"image_size": 32, "cub": {"root": str(tmp_path / "raw")}}})
    code, err = run_cli(["prepare", "--dataset", "cub", "--config", json.dumps(cfg)], capsys)
    assert_one_line(code, err, "bounding_boxes.txt", "restore it")
    assert not (tmp_path / "data/prepared/cub").exists()


def test_damaged_job_benchmark_file_is_named_by_the_timing_figure(tmp_path, capsys):
    bench = tmp_path / "benchmarks/train/shapes/standard/seed0.tsv"
    bench.parent.mkdir(parents=True)
    _not_text(bench)
    code = timing.main(["--benchmarks", str(tmp_path / "benchmarks"), "--timing", str(tmp_path / "timing.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "seed0.tsv" in err[0] and "delete it" in err[0], err
    assert not (tmp_path / "timing.png").exists()


# --- (4) raw data is an input ------------------------------------------------------------------------

def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def raw(tmp_path):
    for k, cls in enumerate(("cat", "dog")):
        for i in range(3):
            _image(tmp_path / f"images/{cls}/{i}.png", 10 * k + i)
            _image(tmp_path / f"masks/{cls}/{i}.png", 200)
    return tmp_path, {"folder": {"root": str(tmp_path / "images"), "masks": str(tmp_path / "masks")}}


def test_raw_manifest_follows_the_files_content_and_listing(raw):
    root, data = raw
    cache = root / "cache.json"
    first = raw_manifest("folder", data, cache)
    assert len(first) == 64 and raw_manifest("folder", data, cache) == first
    os.utime(root / "images/cat/0.png", (1, 1))  # touched, content unchanged
    (root / "images/.DS_Store").write_bytes(b"x")  # hidden files are not data
    assert raw_manifest("folder", data, cache) == first
    seen = {first}
    for change in (lambda: _image(root / "images/cat/3.png", 99),  # an image added
                   lambda: _image(root / "masks/cat/3.png", 200),  # its mask
                   lambda: _image(root / "images/dog/0.png", 77),  # an image changed
                   lambda: (root / "images/dog/1.png").rename(root / "images/dog/9.png"),  # renamed
                   lambda: (root / "images/dog/2.png").unlink(),  # removed
                   lambda: shutil.rmtree(root / "masks")):  # the mask folder gone
        change()
        now = raw_manifest("folder", data, cache)
        assert now not in seen
        seen.add(now)
    assert raw_manifest("shapes", {"shapes": {}}, cache) == ""


def test_raw_manifest_reads_each_file_once(raw):
    """Hashes are cached by (path, mtime, size): a file rewritten with the same size and its mtime
    put back is not read again (the documented limit), and without the cache it is."""
    root, data = raw
    cache = root / "cache.json"
    first = raw_manifest("folder", data, cache)
    path = root / "images/cat/0.png"
    stat = path.stat()
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0xFF
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert raw_manifest("folder", data, cache) == first
    assert raw_manifest("folder", data, None) != first


# --- (6) the command line: `xaibench run` -------------------------------------------------------------

@pytest.fixture
def workflow(tmp_path, monkeypatch):
    root = copy_workflow(tmp_path / "wf", preset=None)
    monkeypatch.chdir(root)
    return root


RUN_FAULTS = {
    "missing_preset": (["--preset", "nope"], ["preset 'nope'", "presets/nope.yaml", "smoke"]),
    "unknown_target": (["trian"], ["'trian'", "did you mean 'train'"]),
    "option_value_as_target": (["--forcerun", "train_model"], ["'train_model'", "after `--`"]),
    "not_an_output": (["params.yaml"], ["params.yaml", "results/"]),
}


@pytest.mark.parametrize("case", sorted(RUN_FAULTS))
def test_bad_command_line_is_one_line_and_runs_nothing(workflow, capfd, case):
    argv, words = RUN_FAULTS[case]
    code = cli.main(["run", *argv])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("xaibench run: error:"), err
    assert all(w in err[0] for w in words), err
    assert not (workflow / ".snakemake").exists()  # Snakemake never started


def test_each_mistake_gets_its_line_and_bad_settings_are_named(workflow, capfd):
    (workflow / "bad.yaml").write_text(yaml.safe_dump({"train": {"epochs": -1}}))
    assert cli.main(["run", "--preset", "nope", "trian"]) == 2
    assert len(capfd.readouterr().err.strip().splitlines()) == 2
    assert cli.main(["run", "--preset", "bad.yaml"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "train.epochs" in err[0], err
    os.chdir(workflow.parent)
    assert cli.main(["run"]) == 2 and "no Snakefile" in capfd.readouterr().err


def test_run_forwards_presets_flags_and_snakemake_arguments(workflow, capfd):
    """A good command reaches Snakemake with the preset as --configfile, -n/-p as given and the
    arguments after `--` (here a dry run of prepare printing its shell command)."""
    code = cli.main(["run", "--preset", "smoke", "prepare", "-n", "--", "--printshellcmds"])
    out = capfd.readouterr().out
    assert code == 0, out
    assert "xaibench prepare --dataset shapes" in out and '"image_size": 32' in out
    assert "prepare_shapes" in out and not (workflow / DATA).exists()
