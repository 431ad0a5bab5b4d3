"""Load, merge and validate settings.

params.yaml is the one source of settings (read by Snakemake and DVC alike); presets are
overlays merged on top. Validation fills every default from the JSON schema, so the rest of
the code reads keys without fallbacks, and a wrong key fails here with one line naming it.
"""
from __future__ import annotations

import copy
import json
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
}


def schema() -> dict:
    """The settings schema, with the enums of registered names filled from `xaibench.catalog`."""
    from . import catalog
    tree = yaml.safe_load(resources.files("xaibench").joinpath("params.schema.yaml").read_text())
    for (section, key), index in CATALOG_ENUMS.items():
        node = tree["properties"][section]
        node = node if key is None else node["properties"][key]
        (node.get("items") or node)["enum"] = list(getattr(catalog, index))
    tree["properties"]["explain"]["properties"]["options"]["propertyNames"] = {"enum": list(catalog.EXPLAINERS)}
    return tree


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{path}: {error.message}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{path}: {error.instance!r} is not allowed; choose from {error.validator_value}"
    return f"{path}: {error.message}"


def validate(cfg: dict) -> dict:
    """Validate `cfg` in place, filling defaults; raise ConfigError naming the first bad key."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"settings must be a mapping of sections, got {type(cfg).__name__}")
    from . import catalog
    # seeds restrictions the settings name explicitly (defaults are filled below): each must be a
    # subset of train.seeds. Checked only when given, so the partial settings a rule passes (which
    # leave train.seeds at its default) stay valid.
    given = {v: _at(cfg.get("train", {}), e["seeds"]) for v, e in catalog.VARIANTS.items() if e.get("seeds")}
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    shapes = cfg["data"]["shapes"]
    if set(shapes["classes"]) & set(shapes["ood_classes"]):
        raise ConfigError("data.shapes.ood_classes: must not overlap data.shapes.classes")
    for variant, seeds in given.items():
        extra = sorted(set(seeds or ()) - set(cfg["train"]["seeds"]))
        if extra:
            raise ConfigError(f"train.{catalog.VARIANTS[variant]['seeds']}: seeds {extra} are not in train.seeds "
                              f"{cfg['train']['seeds']}")
    for variant in cfg["train"]["variants"]:
        source = catalog.VARIANTS[variant].get("source")
        if source and source not in cfg["train"]["variants"]:
            raise ConfigError(f"train.variants: {variant} is trained from the {source} model; add {source} too")
    return cfg


def _at(node, key_path: str):
    """The value at a dotted key path of a (raw) settings mapping, or None when absent."""
    for part in key_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, list) else None


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
    """Parse the JSON a Snakemake rule passes on the command line and validate it."""
    try:
        return validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not valid JSON: {exc}") from None
