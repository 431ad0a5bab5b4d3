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
    ("featviz", "methods"): "FEATVIZ",
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
    external = tree["properties"]["models"]["properties"]["external"]["additionalProperties"]["properties"]
    external["arch"]["enum"] = list(catalog.ARCHITECTURES)
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
    _rename_deprecated(cfg)
    external = _declare_external(cfg)
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    variants = cfg["train"]["variants"]
    variants += [name for name in external if name not in variants]  # an external model runs once declared
    _check_numbers(cfg)
    if relations:
        _check_relations(cfg)
    return cfg


def _declare_external(cfg: dict) -> list[str]:
    """Make each `models.external` name a variant of the catalog before the schema's enums are built
    (its settings block is part of every slice that names it); return the names."""
    from . import catalog
    models = cfg.get("models")
    external = models.get("external") if isinstance(models, dict) else None
    if not isinstance(external, dict):
        return []  # the schema says what is wrong
    for name, block in external.items():
        try:
            catalog.add_external(name, block if isinstance(block, dict) else {})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return list(external)


# Renamed settings: old key path -> new one (`*`: any key at that level, e.g. every external model).
# The old name keeps working for one release, with a note.
RENAMED = {"train.salience": "train.cyborg",  # the CYBORG loss block (metrics.salience is paper E's measures)
           "models.external.*.cam_layer": "models.external.*.layer"}  # any module by name, not trunk.<i> only


def _rename_deprecated(cfg: dict) -> None:
    import sys
    for old, new in RENAMED.items():
        (*parents, last), new_last = old.split("."), new.split(".")[-1]
        nodes = [("", cfg)]
        for part in parents:
            nodes = [(f"{path}{key}.", child) for path, node in nodes if isinstance(node, dict)
                     for key, child in node.items() if part in ("*", key)]
        for path, node in nodes:
            if isinstance(node, dict) and last in node:
                was, now = f"{path}{last}", f"{path}{new_last}"
                if new_last in node:
                    raise ConfigError(f"{was} and {now} are both set; {was} is the old name of {now}: keep one")
                node[new_last] = node.pop(last)
                print(f"xaibench: note: setting {was} is now called {now}; the old name works until the next release",
                      file=sys.stderr)


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
    _check_external(cfg)
    _check_runnable(cfg, catalog)
    return cfg


def _check_external(cfg: dict) -> None:
    """External checkpoints exist and are PyTorch archives (torch.save and torch.jit.save both write a
    zip), checked without torch before any job; classes and input size are checked when imported."""
    import zipfile
    for name, block in cfg["models"]["external"].items():
        key, path = f"models.external.{name}", Path(block["path"])
        if not path.is_file():
            raise ConfigError(f"{key}.path: {path} not found (run from the project folder, or give an absolute path)")
        if not zipfile.is_zipfile(path):
            raise ConfigError(f"{key}.path: {path} is not a PyTorch file (torch.save / torch.jit.save write a zip "
                              "archive); it is corrupt or of another format: save it again")
        if block["format"] == "state_dict" and block["normalisation"] is not None:
            raise ConfigError(f"{key}.normalisation: only for torchscript and export models; a state_dict model "
                              "is a Classifier, which normalises its inputs itself")
        _check_layer(key, block)
        if block["format"] == "torchscript" and block["layer"] is not None:
            raise ConfigError(f"{key}.layer: TorchScript modules take no forward hooks, so Grad-CAM reads their "
                              "features(x); for another layer save the model with torch.export (format: export)")
        names = _export_layers(path) if block["format"] == "export" else None
        if block["format"] == "export" and block["layer"] is None:
            raise ConfigError(f"{key}.layer: required for an export file ({path} has only forward(x) -> logits): "
                              f"name the module Grad-CAM explains{', e.g. one of: ' + ', '.join(names[-5:]) if names else ''}")
        if names is not None and block["layer"] not in names:
            from .registry import closest
            raise ConfigError(f"{key}.layer: {path} has no module {block['layer']!r}; closest names: "
                              f"{closest(block['layer'], names)}")


def _check_layer(key: str, options: dict) -> None:
    """A `reshape` reshapes a named layer's output: refused without a `layer`."""
    if options.get("reshape") is not None and options.get("layer") is None:
        raise ConfigError(f"{key}.reshape: needs {key}.layer, the module whose output it reshapes")


def _export_layers(path: Path) -> list[str] | None:
    """Module names of a torch.export archive (torch.export.save), read from its model.json without
    torch; None when the archive is not laid out as the known versions write it (the import job checks)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next(n for n in archive.namelist() if n.endswith("/models/model.json"))
            graph = json.loads(archive.read(entry))["graph_module"]
        return [call["fqn"] for call in graph["module_call_graph"] if call["fqn"]]
    except (StopIteration, KeyError, TypeError, ValueError):
        return None


def _check_runnable(cfg: dict, catalog) -> None:
    """What a step would refuse only when its job runs, refused here, before any job (and any output) is
    touched: repeated names, explainer options by name and type, families that cannot run on these
    map sizes or seeds, a device that is not there."""
    _check_repeats(cfg)
    for method, options in cfg["explain"]["options"].items():
        if "options" in catalog.EXPLAINERS[method]:  # an entry without it is checked when its job runs
            _check_options(f"explain.options.{method}", options, catalog.EXPLAINERS[method]["options"])
        _check_layer(f"explain.options.{method}", options)
    side = catalog.native_side(cfg["train"]["arch"], cfg["data"]["image_size"])
    for family in cfg["metrics"]["families"]:
        need = catalog.FAMILIES[family].get("min_native_side", 0)
        if side < need and cfg["metrics"]["salience"]["resolution"] == "native":
            raise ConfigError(f"metrics.families: {family} needs maps of at least {need}x{need}, but {cfg['train']['arch']} "
                              f"at data.image_size {cfg['data']['image_size']} gives {side}x{side}; use a larger image_size, "
                              "metrics.salience.resolution: input, or drop the family")
    device = cfg["device"]
    if device.startswith(("cuda", "mps")):
        import torch  # only when a device other than the CPU is asked for (the no-op run stays fast)
        ok = torch.backends.mps.is_available() if device == "mps" else (
            torch.cuda.is_available() and int(device.partition(":")[2] or 0) < torch.cuda.device_count())
        if not ok:
            raise ConfigError(f"device: '{device}' requested but not available on this machine (use device: auto)")


def _check_options(key: str, options: dict, defaults: dict) -> None:
    """Each option must be one the method takes, of its default's type (numbers: int for int defaults)."""
    for name, value in options.items():
        if name not in defaults:
            raise ConfigError(f"{key}.{name}: not an option; choose from: {', '.join(defaults) or '(none)'}")
        want = defaults[name]
        if want is None:
            continue  # no type to hold it to (gradcam's layer: the schema's pattern checks it)
        kind, what = ((bool, "true or false") if isinstance(want, bool) else (int, "an integer") if isinstance(want, int)
                      else ((int, float), "a number") if isinstance(want, float) else (type(want), f"a {type(want).__name__}"))
        if isinstance(value, bool) != isinstance(want, bool) or not isinstance(value, kind):
            raise ConfigError(f"{key}.{name}: {value!r} should be {what} (default {want!r})")


def _check_repeats(node, path: str = "") -> None:
    """Lists of names and seeds must not repeat an entry (it would run or count a thing twice)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_repeats(value, f"{path}{key}.")
    elif isinstance(node, list) and (all(isinstance(v, str) for v in node) or path.endswith("seeds.")):
        repeated = sorted({v for v in node if node.count(v) > 1}, key=str)
        if repeated:
            raise ConfigError(f"{path.rstrip('.')}: {repeated} listed more than once")


# Settings that name files the user provides (read, never written by the pipeline).
INPUT_PATHS = ("data.folder.root", "data.folder.masks", "data.cub.root", "train.pretrained")


def rebase_inputs(cfg: dict, run_dir: Path) -> dict:
    """`cfg` with relative input paths made relative to `run_dir`, the folder a named run works in
    (runs/<run>/), so `data/raw/cub` still names the project's data/raw/cub from there."""
    up = Path(*[".."] * len(Path(run_dir).parts))
    out = copy.deepcopy(cfg)
    for key in INPUT_PATHS + tuple(f"models.external.{n}.path" for n in out.get("models", {}).get("external", {})):
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        value = node.get(last)
        if isinstance(value, str) and not Path(value).is_absolute() and up.parts:
            node[last] = str(up / value)
    return out


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); restore it") from None
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
