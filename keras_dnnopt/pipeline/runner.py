"""`optimize`: runs the stages of the chain in order, resuming, and writes the report card.

A stage is skipped (its saved result reused) when its folder holds a finished result made
with the same configuration (its sections and those upstream, see
`config.stage_fingerprint`) from the same upstream results (each stage records the run
token of those it read). Anything else, or `force=True`, redoes it and everything after.
"""

import datetime
import os
import platform
import time
import uuid

import numpy as np

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf
from keras_dnnopt.pipeline import stages as stage_module
from keras_dnnopt.pipeline.config import STAGES, ConfigError, stage_fingerprint
from keras_dnnopt.pipeline.store import StageStore, publish_mode


class StageFailed(RuntimeError):
    """A stage raised: its name is in the message, the cause is chained."""


def _check_runnable(config):
    """Errors the configuration would only meet mid-run, reported before training."""
    if stage_module.quantize_method(config) == "qat" and not USING_TF_KERAS:
        raise ConfigError(
            "`quantize.method` is 'qat', but quantization-aware training goes through "
            "TF-MOT, which only accepts tf_keras models and this run uses Keras 3. Set "
            "TF_USE_LEGACY_KERAS=1 before running (pip install tf-keras), or use "
            "`quantize.method: ptq` (full-integer post-training quantization) or 'auto'. "
            "Received: quantize.method='qat'"
        )
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


def _metric_text(metrics):
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f"accuracy {metrics['accuracy']:.4f}")
    if metrics.get("f1_macro") is not None:
        parts.append(f"F1 {metrics['f1_macro']:.4f}")
    if metrics.get("params") is not None:
        parts.append(f"{metrics['params']:,} params")
    if metrics.get("size_bytes") is not None:
        parts.append(f"{metrics['size_bytes'] / 1024:.1f} KiB")
    if metrics.get("latency_ms") is not None:
        parts.append(f"{metrics['latency_ms']:.3f} ms")
    return ", ".join(parts)


def optimize(config, out_dir, force=False, command=None, log=print):
    """Runs the optimization chain and writes its report card.

    Args:
        config: a validated configuration (`keras_dnnopt.pipeline.load_config`).
        out_dir: the output folder (created when missing). It receives `stages/<n>_<stage>/`
            (each stage's model, files and `stage.json`), `config.yaml`, `metrics.json`,
            `report.md`, `report.html`, `plots/` and the final `.tflite` file.
        force: redo every stage even when a finished result could be reused.
        command: the command line, for the report.
        log: where the one-line status of each stage goes.

    Returns:
        The report card (a dict; see `keras_dnnopt.pipeline.report.write_report`).

    Raises:
        ConfigError: for a configuration this Keras cannot run (QAT on Keras 3) or a
            chain with a stage missing what it needs.
        StageFailed: when a stage fails; the stages finished before it are kept and the
            report covers them.
    """
    _check_runnable(config)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Argument `out` must be a folder. Received: out={out_dir!r}, a file")
    os.makedirs(out_dir, exist_ok=True)
    store = StageStore(out_dir, STAGES)
    store.clean_temporaries()
    _write_config(config, out_dir)
    run = stage_module.Run(config, store, log=log)

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
                log(_status(index, len(chosen), stage,
                            f"reused (finished earlier): {_metric_text(record['metrics'])}"))
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
                        f"{_metric_text(records[stage]['metrics'])}"))
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
    return card


def _run_stage(run, store, stage, fingerprint, inputs):
    workdir = store.begin(stage)
    begun = time.perf_counter()
    try:
        result = stage_module.STAGE_FUNCTIONS[stage](run, workdir)
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
        store.abandon(workdir)
        raise
    except Exception as error:
        store.abandon(workdir)
        raise StageFailed(f"Stage `{stage}` failed: {type(error).__name__}: {error}") from error


def _write_config(config, out_dir):
    import yaml

    path = os.path.join(out_dir, "config.yaml")
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.replace(temp, path)


def _relative(path, out_dir):
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def write_card(run, records, command, seconds):
    """Draws the plots and writes `report.md`, `report.html` and `metrics.json`."""
    from keras_dnnopt import __version__
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
    final = next((s for s in reversed(list(records)) if records[s]["metrics"]
                  and records[s]["metrics"].get("accuracy") is not None), None)
    notes = []
    if "quantize" in records:
        extra = records["quantize"]["extra"]
        if extra["method"] == "ptq" and not USING_TF_KERAS:
            notes.append("Quantization-aware training needs tf_keras (TF-MOT rejects Keras 3 "
                         "models): this run used full-integer post-training quantization. Run "
                         "with TF_USE_LEGACY_KERAS=1 for QAT.")
    if "export" in records:
        final_file = _copy_final(run, records["export"])
        notes.append(f"The deployable file: `{_relative(final_file, out_dir)}`. Its inputs are "
                     "normalised images (see the data section); the file's own input type and "
                     "scale are in its signature.")
        agreement = records["export"]["extra"]["agreement"]
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
        "stages": stages,
        "final": final,
        "seconds": round(seconds, 1),
        "plots": _draw_plots(run, records, notes) if run.config["report"]["plots"] else {},
        "notes": notes,
    }
    write_report(out_dir, card)
    return card


def _copy_final(run, export_record):
    """Copies the exported file next to the report (atomically) and returns its path."""
    import shutil
    import tempfile

    source = os.path.join(run.store.folder("export"), export_record["artifact"])
    target = os.path.join(run.store.out_dir, export_record["artifact"])
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=run.store.out_dir)
    os.close(handle)
    try:
        shutil.copyfile(source, temp)
        publish_mode(temp)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return target


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
    if "export" in records:
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
