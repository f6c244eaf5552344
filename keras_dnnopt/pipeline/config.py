"""The run configuration of `dnnopt optimize`: defaults, YAML loading and validation.

A run is set by a nested mapping of sections (`data`, `baseline`, `student`, `distill`,
`prune`, `quantize`, `export`, `report`) plus a few top-level keys. Every key has a
default (`DEFAULTS`), so a YAML file only names what it changes. Each value is checked
where it enters: a bad key or value is reported with its dotted name, the value given and
what is allowed, before any training starts.
"""

import copy
import hashlib
import json
import os

from keras_dnnopt.data.datasets import DATASET_NAMES

STAGES = ("data", "baseline", "student", "distill", "prune", "quantize", "export")
ARCHITECTURES = ("mobilenet_v1", "mobilenet_v2", "plain_cnn")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("warmup_cosine", "step", "one_cycle", "constant")
QUANTIZE_METHODS = ("auto", "qat", "ptq")
EXPORT_QUANTIZATIONS = ("int8_full", "int8", "float16", "dynamic", "none")


class _Spec:
    """A key's check: its kind and its bounds or choices."""

    def __init__(self, kind, low=None, high=None, choices=None, low_inclusive=True,
                 high_inclusive=True):
        self.kind = kind
        self.low, self.high = low, high
        self.low_inclusive, self.high_inclusive = low_inclusive, high_inclusive
        self.choices = choices

    def allowed(self):
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "stages":
            return "a list of stage names from " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "shape":
            return "a list of two positive integers [height, width]"
        text = "an integer" if self.kind == "int" else "a number"
        if self.low is not None:
            text += f" {'>=' if self.low_inclusive else '>'} {self.low}"
        if self.high is not None:
            text += f"{' and' if self.low is not None else ''} "
            text += f"{'<=' if self.high_inclusive else '<'} {self.high}"
        return text

    def accepts(self, value):
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "stages":
            return (isinstance(value, (list, tuple)) and len(value) > 0
                    and all(isinstance(v, str) and v in self.choices for v in value)
                    and len(set(value)) == len(value))
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "shape":
            return (isinstance(value, (list, tuple)) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                            for v in value))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if self.low is not None and (value < self.low if self.low_inclusive
                                     else value <= self.low):
            return False
        if self.high is not None and (value > self.high if self.high_inclusive
                                      else value >= self.high):
            return False
        return True


def _int(low=None, high=None):
    return _Spec("int", low, high)


def _float(low=None, high=None, low_inclusive=True, high_inclusive=True):
    return _Spec("float", low, high, low_inclusive=low_inclusive,
                 high_inclusive=high_inclusive)


def _choice(*choices):
    return _Spec("choice", choices=choices)


_BOOL = _Spec("bool")

# Each key: (default, spec). The defaults are the bundled run: `dnnopt optimize` on digits
# in under 10 minutes on a 2-core CPU.
SCHEMA = {
    "dataset": ("digits", None),  # a name or a folder: checked by `_check_dataset`
    "seed": (0, _int(0)),
    "batch_size": (64, _int(1)),
    "stages": (list(STAGES), _Spec("stages", choices=STAGES)),
    "verbose": ("auto", _choice("auto", "bars", "lines", "quiet")),
    "data": {
        "validation_split": (0.1, _float(0.0, 1.0, high_inclusive=False)),
        "test_split": (0.2, _float(0.0, 1.0, low_inclusive=False, high_inclusive=False)),
        "deduplicate": (True, _BOOL),
        "normalize": (True, _BOOL),
        "augment": (True, _BOOL),
        "rotation": (0.03, _float(0.0, 1.0)),
        "zoom": (0.05, _float(0.0, 1.0)),
        "translation": (0.0, _float(0.0, 1.0)),
        "image_size": ([64, 64], _Spec("shape")),
    },
    "baseline": {
        "architecture": ("mobilenet_v1", _choice(*ARCHITECTURES)),
        "alpha": (0.5, _float(0.0, 4.0, low_inclusive=False)),
        "dropout": (0.1, _float(0.0, 1.0, high_inclusive=False)),
        "epochs": (12, _int(1)),
        "optimizer": ("sgd", _choice(*OPTIMIZERS)),
        "learning_rate": (0.1, _float(0.0, low_inclusive=False)),
        "schedule": ("warmup_cosine", _choice(*SCHEDULES)),
        "warmup_epochs": (1, _int(0)),
        "weight_decay": (0.0, _float(0.0)),
    },
    "student": {
        "architecture": ("mobilenet_v1", _choice(*ARCHITECTURES)),
        "alpha": (0.25, _float(0.0, 4.0, low_inclusive=False)),
        "dropout": (0.0, _float(0.0, 1.0, high_inclusive=False)),
        "epochs": (12, _int(0)),  # training alone, the reference for distillation; 0 skips it
        "learning_rate": (0.1, _float(0.0, low_inclusive=False)),
        "schedule": ("warmup_cosine", _choice(*SCHEDULES)),
    },
    "distill": {
        "epochs": (12, _int(1)),
        "temperature": (4.0, _float(0.0, low_inclusive=False)),
        "alpha": (0.1, _float(0.0, 1.0)),
        "learning_rate": (0.1, _float(0.0, low_inclusive=False)),
        "schedule": ("warmup_cosine", _choice(*SCHEDULES)),
    },
    "prune": {
        "target_sparsity": (0.5, _float(0.0, 1.0, low_inclusive=False, high_inclusive=False)),
        "epochs": (8, _int(1)),
        "ramp_fraction": (0.6, _float(0.0, 1.0, low_inclusive=False)),
        "frequency": (10, _int(1)),
        "structure": ("unstructured", _choice("unstructured", "2:4")),
        "distill": (True, _BOOL),
        "learning_rate": (0.02, _float(0.0, low_inclusive=False)),
    },
    "quantize": {
        "method": ("auto", _choice(*QUANTIZE_METHODS)),
        "epochs": (3, _int(1)),
        "learning_rate": (0.005, _float(0.0, low_inclusive=False)),
        "distill": (True, _BOOL),
        "calibration_steps": (20, _int(1)),
    },
    "export": {
        "quantization": ("int8_full", _choice(*EXPORT_QUANTIZATIONS)),
        "latency_runs": (100, _int(1)),
        "threads": (1, _int(1)),
    },
    "report": {
        "gradcam_images": (4, _int(0, 16)),
        "plots": (True, _BOOL),
    },
}

# The config sections each stage's result depends on, beyond those of the stages before it.
STAGE_SECTIONS = {
    "data": ("dataset", "seed", "batch_size", "data"),
    "baseline": ("baseline",),
    "student": ("student",),
    "distill": ("distill",),
    "prune": ("prune",),
    "quantize": ("quantize", "export"),
    "export": ("export",),
}


class ConfigError(ValueError):
    """A bad key or value in a run configuration."""


def defaults():
    """The default run configuration, a fresh nested dict."""
    return {key: ({k: copy.deepcopy(v[0]) for k, v in spec.items()}
                  if isinstance(spec, dict) else copy.deepcopy(spec[0]))
            for key, spec in SCHEMA.items()}


def _check_dataset(value, source):
    if isinstance(value, str) and (value in DATASET_NAMES or os.path.isdir(value)):
        return
    raise ConfigError(
        f"{source}`dataset` must be one of {', '.join(DATASET_NAMES)} or an existing folder "
        f"of class subfolders. Received: dataset={value!r}"
    )


def _check_value(name, value, spec, source):
    if not spec.accepts(value):
        raise ConfigError(
            f"{source}`{name}` must be {spec.allowed()}. Received: {name}={value!r}"
        )


def validate(config, source=""):
    """Checks a complete or partial configuration against the schema.

    Args:
        config: a mapping of top-level keys and sections.
        source: a prefix for the error messages (such as the file name).

    Raises:
        ConfigError: naming the first unknown key or bad value, with the value given
            and the allowed keys or values.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}the configuration must be a mapping of keys to values. "
                          f"Received: {type(config).__name__}")
    for key, value in config.items():
        if key not in SCHEMA:
            raise ConfigError(
                f"{source}unknown key `{key}`. Allowed keys: {', '.join(SCHEMA)}"
            )
        spec = SCHEMA[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}`{key}` must be a section (a mapping of keys: "
                    f"{', '.join(spec)}). Received: {key}={value!r}"
                )
            for sub, sub_value in value.items():
                if sub not in spec:
                    raise ConfigError(
                        f"{source}unknown key `{key}.{sub}`. Allowed keys in `{key}`: "
                        f"{', '.join(spec)}"
                    )
                _check_value(f"{key}.{sub}", sub_value, spec[sub][1], source)
        elif key == "dataset":
            _check_dataset(value, source)
        else:
            _check_value(key, value, spec[1], source)


def merge(base, overrides):
    """`base` with the keys of `overrides` replaced, section by section."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(copy.deepcopy(value))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path=None, overrides=None):
    """The run configuration: defaults, then a YAML file, then explicit overrides.

    Args:
        path: a YAML (or JSON) file of keys to change, or None.
        overrides: a mapping of keys to change after the file (command-line options), or
            None.

    Returns:
        The complete, validated configuration as a nested dict.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ConfigError: for a file that is not a mapping, an unknown key or a bad value;
            the message names the key, the value and what is allowed.
    """
    config = defaults()
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Argument `--config`: no such file: {path!r}")
        import yaml

        with open(path, encoding="utf-8") as handle:
            try:
                loaded = yaml.safe_load(handle)
            except yaml.YAMLError as error:
                raise ConfigError(f"{path}: not valid YAML: {error}") from None
        loaded = {} if loaded is None else loaded
        validate(loaded, source=f"{path}: ")
        config = merge(config, loaded)
    if overrides:
        validate(overrides, source="command line: ")
        config = merge(config, overrides)
    if "data" not in config["stages"]:
        config["stages"] = ["data", *config["stages"]]
    # Stages run in the chain's order whatever the order of the list.
    config["stages"] = [stage for stage in STAGES if stage in config["stages"]]
    return config


def stage_fingerprint(config, stage):
    """A hash of the configuration a stage's result depends on: its own sections and
    those of every stage before it (so a change upstream redoes what follows)."""
    sections = []
    for name in STAGES:
        sections.extend(STAGE_SECTIONS[name])
        if name == stage:
            break
    # Which stages run upstream matters too (a student distilled or not).
    relevant = {key: config[key] for key in sections}
    relevant["stages"] = [s for s in config["stages"] if STAGES.index(s) <= STAGES.index(stage)]
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
