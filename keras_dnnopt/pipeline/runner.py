"""`optimize`: runs the stages of the chain in order, resuming, and writes the report card.

A stage is skipped (its saved result reused) when its folder holds a finished result made
with the same configuration (its sections and those upstream, see
`config.stage_fingerprint`) from the same upstream results (each stage records the run
token of those it read). Anything else, or `force=True`, redoes it and everything after.

A stage interrupted (Ctrl-C) or killed resumes at the next run from its folder in progress
(`store.StageStore.begin`): its training continues from its last finished epoch. A run is
reproducible: seeded, with TensorFlow's op determinism on, and every epoch's data order,
augmentation and dropout drawn from the seed and the epoch alone (`stages._epoch_rng`), so a
resumed run ends where an uninterrupted one does.

`OUT/run.json` holds a hash of the configuration the folder's results were made with; a
run with another configuration is refused (`ConfigChanged`) unless `overwrite=True`.
"""

import datetime
import hashlib
import json
import os
import platform
import time
import uuid

import numpy as np

from keras_dnnopt.backend import KERAS_NAME, keras, tf
from keras_dnnopt.pipeline import stages as stage_module
from keras_dnnopt.pipeline.config import (
    STAGES,
    ConfigError,
    budget_of,
    resolve_stages,
    stage_fingerprint,
)
from keras_dnnopt.pipeline.store import StageStore, atomic_path, read_json, write_json

RUN_FILE = "run.json"
# Every run leaves its deployable model here, whatever its stages: the Keras model the file
# was exported from (`keras_dnnopt.load_model` reads it back) and the file.
FINAL_KERAS = "model.keras"
FINAL_TFLITE = "model.tflite"
# Settings that change what is shown, not what is computed: left out of the hash.
UNHASHED = ("verbose",)


class StageFailed(RuntimeError):
    """A stage raised: its name is in the message, the cause is chained."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: says which stage (and epoch) it stopped in.

    Attributes:
        stage: the stage that was running.
        epoch: the epoch of its training in progress (from 1), or None.
    """

    def __init__(self, stage, epoch=None):
        self.stage, self.epoch = stage, epoch
        where = stage if epoch is None else f"{stage}, epoch {epoch}"
        super().__init__(f"interrupted during {where}; run the same command again to resume")

    def __str__(self):
        return self.args[0]


class BudgetNotMet(RuntimeError):
    """No candidate of the search meets the budget (`dnnopt optimize` exits with status 3).

    The report card is written all the same: it shows every candidate, which limits bind
    and the closest candidate.

    Attributes:
        binding: the limits that rule out the most candidates, most binding first
            (`"max_size"`, `"max_latency"`, `"max_macs"`, `"min_accuracy"`).
        closest: the closest candidate's description, or None.
        card: the report card.
    """

    def __init__(self, message, binding, closest, card):
        super().__init__(message)
        self.binding, self.closest, self.card = binding, closest, card


class ConfigChanged(ConfigError):
    """The output folder holds results of another configuration.

    Attributes:
        changes: the dotted keys that differ, e.g. `["baseline.epochs"]`.
    """

    def __init__(self, message, changes):
        super().__init__(message)
        self.changes = changes


def config_hash(config):
    """A hash of everything in a resolved configuration that changes the results."""
    relevant = {key: value for key, value in config.items() if key not in UNHASHED}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _changed_keys(old, new, prefix=""):
    keys = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in UNHASHED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(_changed_keys(a, b, f"{prefix}{key}."))
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _check_same_config(config, out_dir):
    """Raises `ConfigChanged` when `out_dir` holds results of another configuration."""
    path = os.path.join(out_dir, RUN_FILE)
    if not os.path.isfile(path):
        return
    try:
        previous = read_json(path)
    except ValueError:
        return
    if previous.get("config_hash") == config_hash(config):
        return
    changes = _changed_keys(previous.get("config", {}), config)
    shown = ", ".join(
        f"{key} {_lookup(previous.get('config', {}), key)!r} -> {_lookup(config, key)!r}"
        for key in changes[:5]) + (", ..." if len(changes) > 5 else "")
    raise ConfigChanged(
        f"{out_dir!r} holds the results of another configuration (changed: "
        f"{shown or 'unknown'}); they are not mixed with this run's",
        changes,
    )


def _lookup(config, dotted):
    value = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _determinism():
    """Turns TensorFlow's op determinism on; returns a function that restores the state."""
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()

    def restore():
        if not was_on and hasattr(tf_config, "disable_op_determinism"):
            tf_config.disable_op_determinism()

    return restore


def _check_runnable(config):
    """Errors the configuration would only meet mid-run, reported before training."""
    chosen = config["stages"]
    needs = {"distill": ("baseline",), "prune": ("baseline", "student", "distill"),
             "quantize": ("baseline", "student", "distill", "prune"),
             "export": ("baseline", "student", "distill", "prune")}
    for stage, options in needs.items():
        if stage in chosen and not any(option in chosen for option in options):
            what = "the teacher" if stage == "distill" else "a trained model"
            raise ConfigError(
                f"`stages` includes `{stage}`, which needs {what} from one of "
                f"{', '.join(options)}. Received: stages={chosen}"
            )


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _status(index, total, stage, text):
    return f"[{index}/{total}] {stage:<9} {text}"


def _metric_text(metrics, summary=""):
    """The numbers of a stage's line; its summary for a stage that measures nothing (the
    data, post-training quantization set up for the export)."""
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f"accuracy {metrics['accuracy']:.4f}")
    if metrics.get("f1_macro") is not None:
        parts.append(f"F1 {metrics['f1_macro']:.4f}")
    if metrics.get("rmse") is not None:
        parts.append(f"RMSE {metrics['rmse']:.4g}")
    if metrics.get("mae") is not None:
        parts.append(f"MAE {metrics['mae']:.4g}")
    if metrics.get("params") is not None:
        parts.append(f"{metrics['params']:,} params")
    if metrics.get("size_bytes") is not None:
        parts.append(f"{metrics['size_bytes'] / 1024:.1f} KiB")
    if metrics.get("latency_ms") is not None:
        parts.append(f"{metrics['latency_ms']:.3f} ms")
    return ", ".join(parts) or summary


def optimize(config, out_dir, force=False, overwrite=False, command=None, log=print,
             budget=None):
    """Runs the optimization chain and writes its report card.

    Args:
        config: a validated configuration (`keras_dnnopt.pipeline.load_config`).
        out_dir: the output folder (created when missing). It receives `stages/<n>_<stage>/`
            (each stage's model, files and `stage.json`), `config.yaml`, `metrics.json`,
            `report.md`, `report.html`, `plots/` and the final `.tflite` file.
        force: redo every stage even when a finished result could be reused (and accept a
            folder made with another configuration). Defaults to False.
        overwrite: accept a folder whose results were made with another configuration:
            the stages whose configuration (and upstream) is unchanged are still reused,
            the others are redone. Defaults to False.
        command: the command line, for the report.
        log: where the one-line status of each stage goes.
        budget: a `keras_dnnopt.pipeline.Budget` (its limits replace the configuration's
            `budget` section), or None. Under a budget the chain after the baseline is
            replaced by the search for the most accurate model within it
            (`keras_dnnopt.pipeline.search`). Defaults to None.

    Returns:
        The report card (a dict; see `keras_dnnopt.pipeline.report.write_report`). The
        deployable model is `OUT/model.tflite`, and the Keras model it was exported from
        `OUT/model.keras`, for every run that exports (budget or not).

    Raises:
        ConfigError: for a configuration this Keras cannot run (QAT on Keras 3) or a
            chain with a stage missing what it needs.
        ConfigChanged: (a `ConfigError`) when `out_dir` holds results of another
            configuration and neither `overwrite` nor `force` is set.
        Interrupted: (a `KeyboardInterrupt`) on Ctrl-C, naming the stage and epoch; the
            next run with the same configuration resumes there.
        StageFailed: when a stage fails; the stages finished before it are kept and the
            report covers them.
        BudgetNotMet: when no candidate of the search meets the budget; the report card
            is written first and says which limit binds.
    """
    if budget is not None:
        from keras_dnnopt.pipeline.budget import Budget

        if not isinstance(budget, Budget):
            raise TypeError("Argument `budget` must be a `keras_dnnopt.pipeline.Budget` or "
                            f"None. Received: budget={budget!r}")
        limits = budget.to_dict()
        config = {**config, "budget": {
            "max_size": limits["max_size"], "max_latency": limits["max_latency_ms"],
            "max_macs": limits["max_macs"], "min_accuracy": limits["min_accuracy"],
            "max_rmse": limits["max_rmse"]},
            "stages": list(config["stages"])}
        config = resolve_stages(config)
    _check_runnable(config)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Argument `out` must be a folder. Received: out={out_dir!r}, a file")
    if not (overwrite or force):
        _check_same_config(config, out_dir)
    preloaded = _check_data_and_model(config, log)
    os.makedirs(out_dir, exist_ok=True)
    store = StageStore(out_dir, STAGES)
    store.clean_temporaries()
    _write_config(config, out_dir)
    write_json(os.path.join(out_dir, RUN_FILE),
               {"config_hash": config_hash(config), "config": config})
    restore_determinism = _determinism()
    try:
        return _optimize(config, store, force, command, log, preloaded)
    finally:
        restore_determinism()


def _check_data_and_model(config, log):
    """Loads the user's data file (and model) before anything is written, so that a bad
    array, a task that does not match the targets or a model that does not fit the data
    is one error and the output folder of an earlier run stays as it was. Returns the
    loaded dataset (None for the bundled and folder datasets, loaded by the data stage)."""
    dataset = config["dataset"]
    if not (config.get("model") or config["task"] == "regression"
            or str(dataset).endswith(".npz")):
        return None
    probe = stage_module.Run(config, None, log=log)
    try:
        data = probe.dataset
    except ValueError as error:
        raise ConfigError(f"`dataset` {dataset!r}: {' '.join(str(error).split())}") from None
    if config["task"] == "regression" and len(data.input_shape) != 1:
        raise ConfigError(
            "`task: regression` (--task regression) needs tabular data (`x` of rank 2, one "
            "feature vector a sample, an MLP); image regression is not supported. Received: "
            f"samples of shape {tuple(data.input_shape)} in dataset={dataset!r}")
    if config.get("model"):
        try:
            stage_module.load_user_model(config["model"], data)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return data


def _optimize(config, store, force, command, log, preloaded=None):
    out_dir = store.out_dir
    run = stage_module.Run(config, store, log=log)
    run._dataset = preloaded

    chosen = config["stages"]
    records = {}
    redo = force
    started = time.perf_counter()
    failure = None
    try:
        for index, stage in enumerate(chosen, start=1):
            fingerprint = stage_fingerprint(config, stage)
            inputs = {name: records[name]["token"] for name in records}
            record = None if redo else store.record(stage)
            if (record is not None and record.get("fingerprint") == fingerprint
                    and record.get("inputs") == inputs):
                records[stage] = record
                log(_status(index, len(chosen), stage, "reused (finished earlier): "
                            f"{_metric_text(record['metrics'], record['summary'])}"))
                continue
            if record is not None:
                log(_status(index, len(chosen), stage,
                            "redoing: its configuration or an earlier stage changed"))
            redo = True  # everything after a redone stage is redone too
            log(_status(index, len(chosen), stage,
                        f"{stage_module.STAGE_TITLES[stage]} ..."))
            records[stage] = _run_stage(run, store, stage, fingerprint, inputs)
            log(_status(index, len(chosen), stage,
                        f"done in {_duration(records[stage]['seconds'])}: "
                        f"{_metric_text(records[stage]['metrics'], records[stage]['summary'])}"))
    except BaseException as error:  # noqa: BLE001 - the report of what finished is still due
        failure = error
    card = None
    if records:
        try:
            card = write_card(run, records, command, time.perf_counter() - started)
        except Exception as report_error:  # noqa: BLE001
            if failure is None:
                raise
            log(f"dnnopt: the report of the finished stages failed too: {report_error}")
    if failure is not None:
        raise failure
    if card is not None:
        log(f"Report: {os.path.join(out_dir, 'report.html')} (and report.md, metrics.json)")
    search = records.get("search")
    if search is not None and search["extra"]["chosen"] is None:
        raise BudgetNotMet(f"no candidate meets the budget: {search['summary']}",
                           search["extra"]["binding"], search["extra"]["closest"], card)
    return card


def _run_stage(run, store, stage, fingerprint, inputs):
    workdir, _ = store.begin(stage, {"fingerprint": fingerprint, "inputs": inputs,
                                     "keras": KERAS_NAME})
    begun = time.perf_counter()
    run.current_stage, run.current_epoch, run.current_backup = stage, None, None
    try:
        # Each stage starts from the same seeds whatever ran (or was reused) before it.
        keras.utils.set_random_seed(config_seed(run.config, stage))
        result = _stage_functions()[stage](run, workdir)
        record = {
            "stage": stage,
            "title": stage_module.STAGE_TITLES[stage],
            "summary": result["summary"],
            "seconds": round(time.perf_counter() - begun, 2),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "token": uuid.uuid4().hex,
            "fingerprint": fingerprint,
            "inputs": inputs,
            "keras": KERAS_NAME,
            "artifact": result.get("artifact"),
            "metrics": result.get("metrics", {}),
            "history": result.get("history"),
            "extra": result.get("extra", {}),
        }
        store.commit(stage, workdir, record)
        run._model_cache.pop(stage, None)
        return record
    except KeyboardInterrupt:
        # The folder in progress stays: the next run resumes from it.
        raise Interrupted(stage, stage_module.interrupted_epoch(run)) from None
    except Exception as error:
        store.abandon(workdir)
        raise StageFailed(f"Stage `{stage}` failed: {type(error).__name__}: {error}") from error


def _stage_functions():
    """Every stage's function: the chain's (`stages`) and the budgeted search."""
    from keras_dnnopt.pipeline.search import search_stage

    return {"search": search_stage, **stage_module.STAGE_FUNCTIONS}


def config_seed(config, stage):
    """The seed Python, NumPy and TensorFlow get at the start of `stage`."""
    return config["seed"] * 100 + STAGES.index(stage)


def _write_config(config, out_dir):
    import yaml

    with atomic_path(os.path.join(out_dir, "config.yaml")) as temp:
        with open(temp, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)


def _relative(path, out_dir):
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def write_card(run, records, command, seconds):
    """Draws the plots and writes `report.md`, `report.html` and `metrics.json`."""
    from keras_dnnopt._version import __version__
    from keras_dnnopt.pipeline.report import write_report

    out_dir = run.store.out_dir
    stages = []
    for stage, record in records.items():
        artifact = record.get("artifact")
        stages.append({
            "name": stage, "title": record["title"], "summary": record["summary"],
            "seconds": record["seconds"],
            "artifact": (_relative(os.path.join(run.store.folder(stage), artifact), out_dir)
                         if artifact else None),
            "metrics": record["metrics"],
        })
    score = "rmse" if run.regression else "accuracy"
    final = next((s for s in reversed(list(records)) if records[s]["metrics"]
                  and records[s]["metrics"].get(score) is not None), None)
    notes = []
    if "quantize" in records:
        extra = records["quantize"]["extra"]
        if extra["method"] == "qat":
            route = ("TF-MOT (tf_keras)" if extra.get("route") == "tfmot"
                     else "keras_dnnopt's native fake-quant layers (Keras 3)")
            notes.append(f"Quantization route: quantization-aware training ({extra['scheme']}) "
                         f"through {route}; the int8 file uses the ranges learned in training.")
        else:
            why = (f"`quantize.method: auto` chose it: {extra['reason']}" if extra.get("reason")
                   else "`quantize.method: ptq`")
            notes.append("Quantization route: full-integer post-training quantization, "
                         f"calibrated at export ({why}).")
    final_stage = next((s for s in ("search", "export") if s in records
                        and records[s].get("artifact")), None)
    if final_stage is not None:
        _copy_final(run, final_stage, records[final_stage])
        notes.append(f"The deployable file: `{FINAL_TFLITE}`, exported from `{FINAL_KERAS}` "
                     "(read it back with `keras_dnnopt.load_model`). "
                     + ("Its inputs are the data as given (your own model: no normalisation "
                        "here)" if run.user_model else
                        "Its inputs are normalised samples (see the data section)")
                     + "; the file's own input type and scale are in its signature.")
    if "export" in records:
        agreement = records["export"]["extra"]["agreement"]
        if run.regression:
            notes.append(f"The exported file's outputs differ from its float Keras model's by "
                         f"at most {agreement['max_abs_diff']:.4g} (mean "
                         f"{agreement['mean_abs_diff']:.4g}) on the test samples.")
        else:
            notes.append(f"The exported file agrees with its float Keras model on "
                         f"{agreement['top1_agreement']:.1%} of the test images (top-1).")
    notes.append("Latencies are medians of LiteRT inferences at batch 1 on "
                 f"{run.config['export']['threads']} thread(s) of this machine "
                 f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores).")
    dataset = records["data"]["extra"]["dataset"] if "data" in records else {}
    card = {
        "title": f"dnnopt optimize: {dataset.get('name', run.config['dataset'])}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command or "keras_dnnopt.pipeline.optimize(...)",
        "environment": {
            "keras": KERAS_NAME, "keras_version": keras.__version__,
            "tensorflow": tf.__version__, "keras_dnnopt": __version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        },
        "dataset": {k: v for k, v in dataset.items() if k != "class_names"},
        "config": run.config,
        "task": run.task,
        "stages": stages,
        "final": final,
        "seconds": round(seconds, 1),
        "plots": _draw_plots(run, records, notes) if run.config["report"]["plots"] else {},
        "notes": notes,
    }
    if "search" in records:
        card["search"] = _search_card(records["search"])
    write_report(out_dir, card)
    return card


def _copy_final(run, stage, record):
    """Copies the final file and its Keras model to `OUT/model.tflite` and `OUT/model.keras`
    (atomically); the fixed chain's file also keeps its own name (`model_int8_full.tflite`)."""
    import shutil

    folder = run.store.folder(stage)
    copies = [(record["artifact"], FINAL_TFLITE), (FINAL_KERAS, FINAL_KERAS)]
    if record["artifact"] != FINAL_TFLITE:
        copies.append((record["artifact"], record["artifact"]))
    for source, name in copies:
        if os.path.isfile(os.path.join(folder, source)):
            with atomic_path(os.path.join(run.store.out_dir, name)) as temp:
                shutil.copyfile(os.path.join(folder, source), temp)


def _search_card(record):
    """The report's search section: the budget, the chosen and closest candidates, the
    binding limits and every candidate's row."""
    extra = record["extra"]
    columns = ("key", "describe", "fidelity", "val_accuracy", "accuracy", "val_rmse", "rmse",
               "params", "macs", "size_bytes", "latency_ms", "dropped")
    return {
        "budget": extra["budget_text"], "limits": extra["budget"], "epochs": extra["epochs"],
        "chosen": extra["chosen"], "closest": extra["closest"], "binding": extra["binding"],
        "trained": extra["trained"], "space": extra["space"],
        "out_of_time": extra["out_of_time"], "summary": record["summary"],
        "trials": [{column: row.get(column) for column in columns} for row in extra["trials"]],
    }


def _draw_plots(run, records, notes):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        notes.append("No plots: matplotlib is missing (pip install keras_dnnopt[viz]).")
        return {}
    from keras_dnnopt.pipeline import plots as plot_module
    from keras_dnnopt.visualization import plot_confusion_matrix, plot_sparsity

    out_dir = run.store.out_dir
    folder = os.path.join(out_dir, "plots")
    os.makedirs(folder, exist_ok=True)
    drawn = {}

    histories = {records[s]["title"]: records[s]["history"] for s in records
                 if records[s].get("history")}
    if histories:
        path = os.path.join(folder, "training.png")
        plot_module.plot_training_curves(histories, save_path=path)
        drawn["training"] = _relative(path, out_dir)
    if "prune" in records:
        path = os.path.join(folder, "sparsity.png")
        plot_sparsity(records["prune"]["extra"]["sparsity"], save_path=path)
        drawn["sparsity"] = _relative(path, out_dir)
    if "search" in records:
        extra = records["search"]["extra"]
        budget = budget_of(run.config)
        for measure, name in (("size_bytes", "pareto_size"), ("latency_ms", "pareto_latency")):
            path = os.path.join(folder, f"{name}.png")
            if plot_module.plot_pareto(extra["trials"], measure, budget, extra["chosen"],
                                       save_path=path):
                drawn[name] = _relative(path, out_dir)
    if "export" in records and "confusion_matrix" in records["export"]["extra"]:
        extra = records["export"]["extra"]
        path = os.path.join(folder, "confusion.png")
        plot_confusion_matrix(np.asarray(extra["confusion_matrix"]),
                              class_names=extra["class_names"], save_path=path)
        drawn["confusion"] = _relative(path, out_dir)
    heatmap_rows = {}
    for stage in ("baseline", "export"):
        path = os.path.join(run.store.folder(stage), stage_module.GRADCAM_FILE)
        if stage in records and os.path.isfile(path):
            label = "Baseline" if stage == "baseline" else "Final (exported model)"
            heatmap_rows[label] = np.load(path)
    if heatmap_rows:
        raw, _, labels = run.gradcam_images()
        path = os.path.join(folder, "gradcam.png")
        plot_module.plot_gradcam_grid(raw, heatmap_rows, save_path=path,
                                      labels=[str(label) for label in labels])
        drawn["gradcam"] = _relative(path, out_dir)
    return drawn
