"""The registry pattern, the catalog as its index, and what is derived from it."""
import pandas as pd
import pytest

from xaibench import catalog, config, paths
from xaibench.cli import build_parser
from xaibench.registry import Registry


def test_registry_refuses_duplicates_and_names_choices():
    reg = Registry("widget", {"a": {}, "b": {}})
    reg.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)
    with pytest.raises(ValueError, match="not listed in xaibench.catalog"):
        reg.register("zzz", 3)
    with pytest.raises(ValueError, match=r"unknown widget 'c'; choose from: a, b"):
        reg.get("c")
    assert reg.names() == ["a", "b"] and reg.get("a") == 1


@pytest.mark.parametrize("section", ["DATASETS", "ARCHITECTURES", "VARIANTS", "EXPLAINERS", "FAMILIES", "FIGURES"])
def test_every_catalog_entry_has_exactly_its_implementation(section):
    """Each catalogued name resolves (lazy import of its module) to a registered object."""
    from xaibench import data, explain, figures, metrics, models, training
    registry = {"DATASETS": data.DATASETS, "ARCHITECTURES": models.MODELS, "VARIANTS": training.VARIANTS,
                "EXPLAINERS": explain.EXPLAINERS, "FAMILIES": metrics.FAMILIES, "FIGURES": figures.FIGURES}[section]
    for name in getattr(catalog, section):
        assert registry.get(name) is not None


def test_a_catalog_entry_is_a_valid_setting_and_cli_choice(monkeypatch):
    """Adding a name to the catalog is all it takes for the settings and the CLI to accept it; a name
    that is not there is refused in one line naming the choices."""
    monkeypatch.setitem(catalog.VARIANTS, "toy", {"module": "toy.variant"})
    monkeypatch.setitem(catalog.EXPLAINERS, "toy_map", {"module": "toy.explainer", "options": {}})
    cfg = config.validate({"train": {"variants": ["standard", "toy"]}, "explain": {"methods": ["toy_map"]}})
    assert cfg["train"]["variants"] == ["standard", "toy"]
    args = build_parser().parse_args(["explain", "--dataset", "shapes", "--variant", "toy", "--method", "toy_map",
                                      "--split", "test", "--seed", "0"])
    assert (args.variant, args.method) == ("toy", ["toy_map"])
    with pytest.raises(config.ConfigError, match=r"train.variants.0: 'nope' is not allowed; choose from \[.*'toy'"):
        config.validate({"train": {"variants": ["nope"]}})


def test_every_metric_declares_a_direction_and_arrows_follow_it():
    for family, spec in catalog.FAMILIES.items():
        assert set(spec["metrics"].values()) <= {"higher", "lower", "none"}, family
    assert catalog.arrow("localization", "pointing_game") == " ↑"
    assert catalog.arrow("entropy", "spatial_entropy") == " ↓"
    assert catalog.arrow("noise", "score") == ""


def test_explainers_apply_only_where_their_capability_is():
    explain = {"methods": list(catalog.EXPLAINERS)}
    assert "lap" not in catalog.methods_for(explain, "standard")
    assert "lap" in catalog.methods_for(explain, "lap_plugin")
    assert "gradcam" in catalog.methods_for(explain, "standard")


def test_explain_variants_restricts_an_explainer_to_the_listed_variants():
    explain = {"methods": ["gradcam", "ig", "lap"], "variants": {"ig": ["standard"], "lap": ["lap", "standard"]}}
    assert catalog.methods_for(explain, "standard") == ["gradcam", "ig"]  # lap still needs LAP attention
    assert catalog.methods_for(explain, "lap") == ["gradcam", "lap"]
    assert catalog.methods_for(explain, "salience") == ["gradcam"]
    with pytest.raises(config.ConfigError, match="explain.variants"):
        config.validate({"explain": {"variants": {"ig": ["no_such_variant"]}}})
    with pytest.raises(config.ConfigError, match="explain.variants"):
        config.validate({"explain": {"variants": {"no_such_explainer": ["standard"]}}})


def test_unknown_explainer_option_is_refused_naming_the_key():
    from xaibench import explain
    with pytest.raises(ValueError, match=r"explain.options.gradcam.steps: not an option of gradcam"):
        explain.check_options("gradcam", {"steps": 3})


def test_variant_source_must_be_trained_too():
    with pytest.raises(config.ConfigError, match="lap_plugin is trained from the standard model"):
        config.validate({"train": {"variants": ["lap", "lap_plugin"]}})


def test_figure_without_data_writes_a_placeholder_in_every_format(tmp_path, monkeypatch):
    """Mask-less data: the localization figure has nothing to draw but still writes its declared files."""
    from xaibench import figures
    from xaibench.io import save_csv
    monkeypatch.chdir(tmp_path)
    cfg = config.validate({"figures": {"formats": ["pdf", "svg"]}})
    empty = pd.DataFrame(columns=["dataset", "variant", "seed", "method", "split", "metric", "setting", "level", "value"])
    save_csv(paths.metric_table("digits", "localization"), empty)
    written = figures.draw(cfg, "digits", ["localization"])
    assert sorted(p.name for p in written) == ["localization.csv", "localization.md", "localization.pdf", "localization.svg"]
    assert all(p.stat().st_size > 0 for p in written if p.suffix != ".csv")  # the table: an empty csv


def test_seed_lists_are_not_part_of_a_model():
    """Adding a plug-in or ProtoPNet seed must not change the config (so the checkpoints and rule
    params) of any other model: every variant's seed list is dropped at one place."""
    from xaibench.training.fit import model_config
    meta = {"classes": ["a", "b"], "image_size": 32, "dataset": "shapes", "content_sha256": "x"}
    one = config.validate({"train": {"seeds": [0, 1]}})
    two = config.validate({"train": {"seeds": [0, 1], "lap": {"plugin": {"seeds": [0, 1]}},
                                     "protopnet": {"seeds": [0, 1]}}})
    for variant in ("lap", "lap_plugin", "protopnet"):
        assert model_config(one, meta, variant, 0) == model_config(two, meta, variant, 0)
    assert catalog.seeds_for(two, "lap_plugin") == [0, 1] and catalog.seeds_for(one, "lap_plugin") == [0]
    assert catalog.seed_list({"lap": {}}, "lap_plugin") is None and catalog.seed_list({}, "standard") is None


def test_metrics_variants_restricts_a_family_to_the_listed_variants():
    from xaibench import metrics
    cfg = config.validate({"metrics": {"variants": {"noise": ["standard"]}}})
    assert catalog.scores(cfg, "noise", "standard") and not catalog.scores(cfg, "noise", "lap")
    assert catalog.scores(cfg, "equivariance", "lap")                     # families not listed: every variant
    assert not catalog.scores(cfg, "misalignment", "standard")            # still needs prototypes
    ctx = metrics.Context(cfg, "shapes", "lap", [0], "cpu")
    frame = metrics.run("noise", ctx)                                     # no model or map is read
    assert frame.empty and {"dataset", "variant", "seed", "metric", "value"} <= set(frame.columns)
    with pytest.raises(config.ConfigError, match="metrics.variants"):
        config.validate({"metrics": {"variants": {"noise": ["no_such_variant"]}}})


def test_figure_parts_hold_every_figure_once_with_equal_cost():
    names = list(catalog.FIGURES)
    parts = catalog.figure_parts(names)
    assert sorted(n for p in parts for n in p) == sorted(names) and len(parts) == 2
    cost = [sum(catalog.FIGURES[n].get("cost", 1) for n in p) for p in parts]
    assert max(cost) - min(cost) <= max(f.get("cost", 1) for f in catalog.FIGURES.values())
    assert all(p == sorted(p, key=names.index) for p in parts)  # catalog order inside a part
    assert catalog.figure_parts(["accuracy"]) == [["accuracy"]]  # no empty job
