import pytest
import yaml

from xaibench import config
from xaibench.cli import main


def test_defaults_fill_every_key_the_schema_declares():
    """Code reads settings without fallbacks: every property of the schema that has a default is
    present after validating empty settings, at every depth."""
    def walk(schema, cfg, path=""):
        for key, sub in schema.get("properties", {}).items():
            if "default" in sub:
                assert key in cfg, f"{path}{key} not filled"
                if isinstance(cfg[key], dict):
                    walk(sub, cfg[key], f"{path}{key}.")
    walk(config.schema(), config.validate({}))


def test_a_renamed_setting_keeps_working_for_a_release(capsys):
    cfg = config.validate({"train": {"salience": {"alpha": 0.3}}})
    assert cfg["train"]["cyborg"]["alpha"] == 0.3 and "salience" not in cfg["train"]
    assert "train.salience is now called train.cyborg" in capsys.readouterr().err
    with pytest.raises(config.ConfigError, match="both set"):
        config.validate({"train": {"salience": {}, "cyborg": {}}})


@pytest.mark.parametrize("bad, line", [
    ({"explain": {"options": {"gradcam": {"foo": 1}}}}, "explain.options.gradcam.foo: not an option; choose from: layer, reshape"),
    ({"explain": {"options": {"ig": {"internal_batch_size": 2.5}}}},
     "explain.options.ig.internal_batch_size: 2.5 should be an integer"),
    ({"explain": {"options": {"agf": {"flat": 1}}}}, "explain.options.agf.flat: 1 should be true or false"),
    ({"explain": {"options": {"proto": {"prototype": 3}}}}, "explain.options.proto.prototype: 3 should be a str"),
    ({"train": {"seeds": [0, 1, 1]}}, "train.seeds: [0, 1, 1] has non-unique elements"),
    ({"datasets": ["shapes", "shapes"]}, "datasets: ['shapes'] listed more than once"),
    ({"data": {"image_size": 16}}, "stability needs maps of at least 3x3, but small_cnn at data.image_size 16 gives 2x2"),
])
def test_what_a_job_would_refuse_is_refused_at_load(bad, line):
    """Refused when the settings load (before any job, so before any output is touched), in one line."""
    with pytest.raises(config.ConfigError) as err:
        config.validate(bad)
    assert line in str(err.value) and "\n" not in str(err.value)


def test_repo_params_and_presets_validate():
    cfg = config.load("params.yaml", ["presets/smoke.yaml"])
    base = config.load("params.yaml")
    assert cfg["data"]["shapes"]["n_train"] < base["data"]["shapes"]["n_train"]


@pytest.mark.parametrize("bad, names", [
    ({"train": {"epoch": 3}}, ["train", "epoch", "allowed keys"]),
    ({"train": {"epochs": 0}}, ["train.epochs", "minimum"]),
    ({"train": {"variants": ["standrad"]}}, ["train.variants.0", "standrad", "choose from"]),
    ({"device": "gpu"}, ["device", "gpu"]),
    ({"data": {"shapes": {"classes": ["star"], "ood_classes": ["star"]}}}, ["data.shapes.classes"]),
])
def test_bad_values_name_the_key(bad, names):
    with pytest.raises(config.ConfigError) as err:
        config.validate(bad)
    for name in names:
        assert name in str(err.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 3\n   seeds: [0\n")
    with pytest.raises(config.ConfigError, match=r"params.yaml: line \d+ is not valid YAML"):
        config.load(path)


def test_preset_overlay_replaces_leaves_only(tmp_path):
    base = {"train": {"epochs": 5, "lr": 0.1}}
    over = {"train": {"epochs": 1}}
    assert config.deep_merge(base, over) == {"train": {"epochs": 1, "lr": 0.1}}


def test_cli_bad_params_exits_nonzero_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": -1}}))
    assert main(["prepare", "--dataset", "shapes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr" in err[0]
    assert not (tmp_path / "data").exists()


# The settings the issue-22 calibration chose (docs/results.md, "Calibrating LAP and ProtoPNet"), by
# key path. LAP's reading is the schema default too (every run uses it); the ProtoPNet schedule is
# the CPU default only: the schema keeps the reference's, which presets/paper.yaml runs.
CALIBRATED_DEFAULTS = {("train", "lap", "mode"): "v1", ("train", "lap", "warmup_epochs"): 2}
CALIBRATED_CPU_SCHEDULE = {("train", "protopnet", "lr", "last_layer"): 0.001, ("train", "lap", "epochs"): 8}


def _at(cfg, path):
    for key in path:
        cfg = cfg[key]
    return cfg


def test_calibrated_settings_are_the_defaults_of_params_yaml_and_schema():
    params, schema, paper = config.load("params.yaml"), config.validate({}), config.load("params.yaml", ["presets/paper.yaml"])
    for path, value in CALIBRATED_DEFAULTS.items():
        assert _at(params, path) == value and _at(schema, path) == value, path
    for path, value in CALIBRATED_CPU_SCHEDULE.items():
        assert _at(params, path) == value, path
        assert _at(paper, path) == _at(schema, path) != value, path  # the paper preset restores the reference
