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
from keras_dnnopt.pipeline import budget as budget_module

STAGES = ("data", "baseline", "student", "distill", "prune", "quantize", "export", "search")
# The fixed chain, the default run; a budget replaces what follows the baseline by `search`.
CHAIN = STAGES[:-1]
# The stages a budgeted run keeps before its search (which replaces the fixed chain).
SEARCH_KEEPS = ("data", "baseline")
# The stages the default chain leaves out when it starts from the user's model (`model`).
USER_MODEL_SKIPS = ("student", "distill")
ARCHITECTURES = ("mobilenet_v1", "mobilenet_v2", "plain_cnn")
# Tabular data (one feature vector per sample) always gets the MLP family (`models.mlp`),
# whose depth the `depth` keys set; images get `architecture`.
TASKS = ("classification", "regression")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("warmup_cosine", "step", "one_cycle", "constant")
QUANTIZE_METHODS = ("auto", "qat", "ptq")
EXPORT_QUANTIZATIONS = ("int8_full", "int8", "float16", "dynamic", "none")


class _Spec:
    """A key's check: its kind and its bounds or choices."""

    def __init__(self, kind, low=None, high=None, choices=None, low_inclusive=True,
                 high_inclusive=True, item=None, parse=None, example=None):
        self.kind = kind
        self.low, self.high = low, high
        self.low_inclusive, self.high_inclusive = low_inclusive, high_inclusive
        self.choices = choices
        self.item = item  # "list" and "optional": the spec of the items / of the value
        self.parse, self.example = parse, example  # "parsed": a unit parser

    def allowed(self):
        if self.kind == "list":
            return f"a non-empty list of distinct values, each {self.item.allowed()}"
        if self.kind == "optional":
            return f"null (no limit) or {self.item.allowed()}"
        if self.kind == "parsed":
            return self.example
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
        if self.kind == "list":
            return (isinstance(value, (list, tuple)) and len(value) > 0
                    and all(self.item.accepts(v) for v in value)
                    and len({repr(v) for v in value}) == len(value))
        if self.kind == "optional":
            return value is None or self.item.accepts(value)
        if self.kind == "parsed":
            try:
                self.parse(value)
            except ValueError:
                return False
            return True
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


def _parsed(parse, example):
    return _Spec("parsed", parse=parse, example=example)


def _optional(spec):
    return _Spec("optional", item=spec)


def _list(spec):
    return _Spec("list", item=spec)


SEARCH_QUANTIZATIONS = ("int8_ptq", "int8_qat", "float16", "dynamic", "none")

# Each key: (default, spec). The defaults are the bundled run: `dnnopt optimize` on digits
# in under 10 minutes on a 2-core CPU.
SCHEMA = {
    "dataset": ("digits", None),  # a name, a folder or a .npz file: `_check_dataset`
    "seed": (0, _int(0)),
    "task": ("classification", _choice(*TASKS)),
    # A trained `.keras` model of the user's, the baseline instead of one trained here.
    "model": (None, None),  # checked by `_check_model`
    "batch_size": (64, _int(1)),
    "stages": (list(CHAIN), _Spec("stages", choices=STAGES)),
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
        "depth": (3, _int(1, 16)),  # hidden layers of an MLP (tabular data)
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
        "depth": (2, _int(1, 16)),  # hidden layers of an MLP (tabular data)
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
        # Leave the tensor names out of the .tflite (`export_tflite(strip_names=True)`):
        # same ops and outputs, fewer bytes. None: only when `budget.max_size` is set.
        "strip_names": (None, _optional(_BOOL)),
    },
    "report": {
        "gradcam_images": (4, _int(0, 16)),
        "plots": (True, _BOOL),
    },
    # Any limit set here (or `search.enabled`) replaces the fixed chain after the baseline
    # by the search for the most accurate model within the limits (`pipeline.search`).
    "budget": {
        "max_size": (None, _optional(_parsed(budget_module.parse_size,
                                             "a size such as 64KB, 1.5MiB or 4096 (bytes)"))),
        "max_latency": (None, _optional(_parsed(
            budget_module.parse_duration, "a duration such as 2ms or 500us (a bare number "
                                          "is milliseconds)"))),
        "max_macs": (None, _optional(_parsed(budget_module.parse_count,
                                             "a count such as 5M, 300K or 5000000"))),
        "min_accuracy": (None, _optional(_float(0.0, 1.0, low_inclusive=False))),
        # Regression: the largest test RMSE, in the targets' own units.
        "max_rmse": (None, _optional(_float(0.0, low_inclusive=False))),
    },
    "search": {
        "enabled": (False, _BOOL),
        "architecture": ("mobilenet_v1", _choice(*ARCHITECTURES)),
        "alphas": ([0.25, 0.5, 0.75], _list(_float(0.0, 4.0, low_inclusive=False))),
        # Hidden layers of the MLPs searched on tabular data (images: not used).
        "depths": ([1, 2, 3], _list(_int(1, 16))),
        # Fractions of the data's image side (sides under 16 pixels are not searched).
        "resolutions": ([1.0, 0.75, 0.5], _list(_float(0.0, 1.0, low_inclusive=False))),
        "prune_ratios": ([0.0, 0.25, 0.5], _list(_float(0.0, 1.0, high_inclusive=False))),
        # Whole blocks removed (`compression.remove_blocks`): a fresh model loses them
        # before training (criterion "repeats", known exactly in advance), your `--model`
        # the least important on the data (criterion "output"). Tabular data: not used
        # (its MLP depth is searched).
        "removed_blocks": ([0, 4], _list(_int(0, 64))),
        "quantizations": (["int8_ptq", "int8_qat", "float16"],
                          _list(_choice(*SEARCH_QUANTIZATIONS))),
        "distill": ([True, False], _list(_BOOL)),
        "dropout": (0.0, _float(0.0, 1.0, high_inclusive=False)),
        "trials": (12, _int(1)),
        "time_budget": (None, _optional(_parsed(
            lambda v: budget_module.parse_duration(v, "time_budget", "s"),
            "a duration such as 20m, 1h or 900 (seconds)"))),
        "epochs": (12, _int(1)),
        "rungs": (3, _int(1)),
        "eta": (3, _int(2)),
        "learning_rate": (0.1, _float(0.0, low_inclusive=False)),
    },
}

# The config sections each stage's result depends on, beyond those of the stages before it.
STAGE_SECTIONS = {
    "data": ("dataset", "task", "seed", "batch_size", "data"),
    "baseline": ("baseline", "model"),
    "student": ("student",),
    "distill": ("distill",),
    "prune": ("prune",),
    "quantize": ("quantize", "export"),
    "export": ("export",),
    "search": ("budget", "search"),
}


class ConfigError(ValueError):
    """A bad key or value in a run configuration."""


def defaults():
    """The default run configuration, a fresh nested dict."""
    return {key: ({k: copy.deepcopy(v[0]) for k, v in spec.items()}
                  if isinstance(spec, dict) else copy.deepcopy(spec[0]))
            for key, spec in SCHEMA.items()}


def _check_dataset(value, source):
    if isinstance(value, str) and (value in DATASET_NAMES or os.path.isdir(value) or (
            value.endswith(".npz") and os.path.isfile(value))):
        return
    raise ConfigError(
        f"{source}`dataset` must be one of {', '.join(DATASET_NAMES)}, an existing folder "
        f"of class subfolders or an existing .npz file of arrays (x_train, y_train, and "
        f"optionally x_val, y_val, x_test, y_test). Received: dataset={value!r}"
    )


def _check_model(value, source):
    if value is None or (isinstance(value, str) and value.endswith(".keras")
                         and os.path.isfile(value)):
        return
    raise ConfigError(
        f"{source}`model` must be null (train a baseline) or the path of an existing "
        f"`.keras` file (a trained model of the Keras in use). Received: model={value!r}"
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
        elif key == "model":
            _check_model(value, source)
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
    return resolve_stages(config)


def resolve_stages(config):
    """`config` with its `stages` completed: `data` first, the chain's order, and under a
    budget the search in place of the fixed chain after the baseline. The budget's limits
    and the search's time budget are held in base units (bytes, milliseconds, MACs,
    seconds), so that `64KB` and `64000` are the same run."""
    limits = config["budget"]
    for key, parse, scale in (("max_size", budget_module.parse_size, 1.0),
                              ("max_latency", budget_module.parse_duration, 1e3),
                              ("max_macs", budget_module.parse_count, 1.0)):
        if limits.get(key) is not None:
            value = parse(limits[key], key) * scale
            limits[key] = int(value) if float(value).is_integer() else value
    if config["search"]["time_budget"] is not None:
        seconds = budget_module.parse_duration(config["search"]["time_budget"], "time_budget",
                                               "s")
        config["search"]["time_budget"] = int(seconds) if seconds.is_integer() else seconds
    _check_task_budget(config)
    if config.get("model") and list(config["stages"]) == list(CHAIN):
        # The user's own model is the one to compress: it is pruned, quantized and exported
        # itself (distilling from its unpruned self), not replaced by a fresh student.
        config["stages"] = [s for s in CHAIN if s not in USER_MODEL_SKIPS]
    if "data" not in config["stages"]:
        config["stages"] = ["data", *config["stages"]]
    if search_enabled(config):
        config["stages"] = [s for s in config["stages"] if s in SEARCH_KEEPS] + ["search"]
    elif "search" in config["stages"]:
        raise ConfigError("`stages` includes `search`, which needs a budget (a `budget.*` "
                          "limit such as `max_size`) or `search.enabled: true`. "
                          f"Received: stages={config['stages']}")
    # Stages run in the chain's order whatever the order of the list.
    config["stages"] = [stage for stage in STAGES if stage in config["stages"]]
    return config


def _check_task_budget(config):
    """A limit on the other task's measure is a contradiction, not a limit to ignore."""
    limits = config["budget"]
    if config["task"] == "regression" and limits.get("min_accuracy") is not None:
        raise ConfigError(
            "`budget.min_accuracy` (--min-accuracy) applies to classification; a regression "
            "run is limited by `budget.max_rmse` (--max-rmse). Received: task='regression', "
            f"min_accuracy={limits['min_accuracy']!r}")
    if config["task"] == "classification" and limits.get("max_rmse") is not None:
        raise ConfigError(
            "`budget.max_rmse` (--max-rmse) applies to regression (--task regression); a "
            "classification run is limited by `budget.min_accuracy` (--min-accuracy). "
            f"Received: task='classification', max_rmse={limits['max_rmse']!r}")


def search_enabled(config):
    """Whether the run searches under a budget instead of running the fixed chain."""
    return bool(config["search"]["enabled"]) or any(
        value is not None for value in config["budget"].values())


def budget_of(config):
    """The run's `Budget`."""
    return budget_module.Budget.from_dict(config["budget"])


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    # The user's files by content: a data file or model replaced under the same name is
    # another run.
    for key in ("dataset", "model"):
        path = config.get(key)
        if key in sections and isinstance(path, str) and os.path.isfile(path):
            relevant[f"{key}_sha256"] = _file_digest(path)
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
