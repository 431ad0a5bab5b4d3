"""Load, merge and validate settings.

params.yaml is the one source of settings (read by Snakemake and DVC alike); presets are
overlays merged on top. Validation fills every default from the JSON schema, so the rest of
the code reads keys without fallbacks, and a wrong key fails here with one line naming it.
"""
from __future__ import annotations

import copy
import json
import math
from importlib import resources
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators


class ConfigError(ValueError):
    """A settings file or value is wrong; the message names the key path and what is allowed."""


def _with_defaults(cls):
    """Extend a jsonschema validator so that it fills `default:` values while validating."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


# Settings whose allowed values are the names in a catalog section (so they cannot drift apart).
CATALOG_ENUMS = {
    ("datasets", None): "DATASETS",
    ("train", "arch"): "ARCHITECTURES",
    ("train", "variants"): "VARIANTS",
    ("explain", "methods"): "EXPLAINERS",
    ("metrics", "families"): "FAMILIES",
    ("featviz", "variants"): "VARIANTS",
}


def schema() -> dict:
    """The settings schema, with the enums of registered names filled from `xaibench.catalog`."""
    from . import catalog
    tree = yaml.safe_load(resources.files("xaibench").joinpath("params.schema.yaml").read_text())
    for (section, key), index in CATALOG_ENUMS.items():
        node = tree["properties"][section]
        node = node if key is None else node["properties"][key]
        (node.get("items") or node)["enum"] = list(getattr(catalog, index))
    explain = tree["properties"]["explain"]["properties"]
    explain["options"]["propertyNames"] = explain["variants"]["propertyNames"] = {"enum": list(catalog.EXPLAINERS)}
    explain["variants"]["additionalProperties"]["items"]["enum"] = list(catalog.VARIANTS)
    metrics = tree["properties"]["metrics"]["properties"]
    metrics["variants"]["propertyNames"] = {"enum": list(catalog.FAMILIES)}
    metrics["variants"]["additionalProperties"]["items"]["enum"] = list(catalog.VARIANTS)
    return tree


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{path}: {error.message}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{path}: {error.instance!r} is not allowed; choose from {error.validator_value}"
    return f"{path}: {error.message}"


def validate(cfg: dict, relations: bool = True) -> dict:
    """Validate `cfg` in place, filling defaults; raise ConfigError naming the first bad key.

    `relations=False` skips the checks across keys (subsets, orders): a rule's `--config` carries only
    the settings that job uses, the rest filled with defaults, and the workflow already checked the
    whole configuration at parse time.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"settings must be a mapping of sections, got {type(cfg).__name__}")
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _check_numbers(cfg)
    if relations:
        _check_relations(cfg)
    return cfg


def _check_numbers(node, path: str = "") -> None:
    """NaN and infinity pass the schema's bounds (`.inf > 0`); no setting means them."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_numbers(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_numbers(value, f"{path}{i}.")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path.rstrip('.')}: {node} is not a finite number")


def _check_relations(cfg: dict) -> None:
    """What the schema cannot express: ordered ranges, included subsets, splits that exist."""
    from .data import split_names  # light: numpy and PIL only

    shapes, train = cfg["data"]["shapes"], cfg["train"]
    if set(shapes["classes"]) & set(shapes["ood_classes"]):
        raise ConfigError("data.shapes.ood_classes: must not overlap data.shapes.classes")
    if shapes["n_ood"] > 0 and not shapes["ood_classes"]:
        raise ConfigError("data.shapes.ood_classes: empty, but data.shapes.n_ood asks for ood images; "
                          "name some classes or set n_ood: 0")
    lo, hi = shapes["scale"]
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.shapes.scale: {shapes['scale']} must be [low, high] with 0 < low <= high <= 1")
    for name in ("digits", "folder"):
        part = cfg["data"][name]
        if part["val_fraction"] + part["test_fraction"] >= 1:
            raise ConfigError(f"data.{name}: val_fraction + test_fraction must leave images for training (sum < 1)")
    fractions = cfg["metrics"]["deletion"]["fractions"]
    if fractions != sorted(set(fractions)):
        raise ConfigError(f"metrics.deletion.fractions: {fractions} must be strictly ascending")
    if not cfg["metrics"]["families"]:
        raise ConfigError("metrics.families: empty; name at least one family")
    for dataset in cfg["datasets"]:
        missing = [s for s in cfg["explain"]["splits"] if s not in split_names(dataset, cfg["data"])]
        if missing:
            raise ConfigError(f"explain.splits: {missing} not prepared for dataset {dataset} "
                              f"(it has {split_names(dataset, cfg['data'])})")
    no_masks = {"folder": ("null", cfg["data"]["folder"]["masks"] is None), "cub": ("false", cfg["data"]["cub"]["masks"] is False)}
    for name in (d for d in cfg["datasets"] if no_masks.get(d, ("", False))[1]):
        off = f"data.{name}.masks is {no_masks[name][0]}"
        if "salience" in train["variants"]:
            raise ConfigError(f"train.variants: salience needs human masks but {off}")
        if "lap" in train["variants"] and train["lap"]["injection"] == "mask":
            raise ConfigError(f"train.lap.injection: mask needs masks but {off} (use mil or none)")
    from . import catalog
    for variant, entry in catalog.VARIANTS.items():  # per-variant seed lists (lap_plugin, protopnet)
        extra = sorted(set(catalog.seed_list(train, variant) or ()) - set(train["seeds"]))
        if extra:
            raise ConfigError(f"train.{entry['seeds']}: seeds {extra} are not in train.seeds {train['seeds']}")
    for variant in cfg["train"]["variants"]:
        source = catalog.VARIANTS[variant].get("source")
        if source and source not in cfg["train"]["variants"]:
            raise ConfigError(f"train.variants: {variant} is trained from the {source} model; add {source} too")
    unknown = sorted(set(cfg["gate"]["variants"] or ()) - set(catalog.VARIANTS))
    if unknown:
        raise ConfigError(f"gate.variants: {unknown} are not training variants (choices: {', '.join(catalog.VARIANTS)})")
    missing = sorted(set(cfg["featviz"]["seeds"]) - set(cfg["train"]["seeds"]))
    if missing:
        raise ConfigError(f"featviz.seeds: {missing} not in train.seeds {cfg['train']['seeds']}; "
                          "prototypes are generated only for trained models")
    return cfg


def deep_merge(base: dict, overlay: dict) -> dict:
    """Return base updated recursively by overlay (lists and scalars are replaced)."""
    out = copy.deepcopy(base)
    for key, value in (overlay or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load(params: str | Path = "params.yaml", presets: list[str | Path] = ()) -> dict:
    """Read params.yaml, merge preset overlays in order, validate and fill defaults."""
    cfg = read_yaml(params)
    for preset in presets:
        cfg = deep_merge(cfg, read_yaml(preset))
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{params}{' + ' + ' + '.join(map(str, presets)) if presets else ''}: {exc}") from None


def from_json(text: str) -> dict:
    """Parse the JSON a Snakemake rule passes on the command line and validate it (its keys only)."""
    try:
        return validate(json.loads(text), relations=False)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not valid JSON: {exc}") from None
