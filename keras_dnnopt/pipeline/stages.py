"""The seven stages of `dnnopt optimize`, each a function `stage(run, workdir) -> result`.

Every stage reads what earlier stages saved (through `Run`), writes its own files into
`workdir` (a temporary folder the runner moves into place once the stage is finished)
and returns a dict: `summary` (one line), `metrics`, and optionally `history` (per-epoch
logs), `artifact` (its main file) and `extra` (anything the report needs).

The chain is built from the package's own parts: `data.load_dataset`, `models`,
`schedules.WarmupCosineDecay`, `distillation.Distiller`, `compression.prune` /
`quantize`, `export.export_tflite` and LiteRT evaluation, `evaluation.evaluate_report`,
`profiling.profile` and `visualization.grad_cam`.
"""

import os
import shutil
import sys

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, keras

MODEL_FILE = "model.keras"
FLOAT_TFLITE = "model_float.tflite"
GRADCAM_FILE = "gradcam.npy"

# The stages whose folder holds a trained Keras model (MODEL_FILE), latest last.
MODEL_STAGES = ("baseline", "student", "distill", "prune")


class Run:
    """What the stages share: the configuration, the output folders and the data."""

    def __init__(self, config, store, log=print):
        self.config = config
        self.store = store
        self.log = log
        self._dataset = None
        self._model_cache = {}

    # -- data ---------------------------------------------------------------------------
    @property
    def dataset(self):
        if self._dataset is None:
            from keras_dnnopt.data import load_dataset

            cfg = self.config["data"]
            augment = False
            if cfg["augment"]:
                augment = {"rotation": cfg["rotation"] or None, "zoom": cfg["zoom"] or None,
                           "translation": cfg["translation"] or None}
                augment = {k: v for k, v in augment.items() if v is not None} or False
            self._dataset = load_dataset(
                self.config["dataset"],
                validation_split=cfg["validation_split"],
                test_split=cfg["test_split"],
                batch_size=self.config["batch_size"],
                normalize=cfg["normalize"],
                augment=augment,
                deduplicate=cfg["deduplicate"],
                seed=self.config["seed"],
                image_size=tuple(cfg["image_size"]),
            )
            if self._dataset.y_test is None or len(self._dataset.y_test) == 0:
                raise ValueError("The dataset has no test split to evaluate on; set "
                                 "`data.test_split` > 0.")
        return self._dataset

    def normalized(self, x):
        """Images as the models see them (after the dataset's normaliser)."""
        normalizer = self.dataset.normalizer
        x = np.asarray(x, dtype="float32")
        return x if normalizer is None else np.asarray(normalizer(x), dtype="float32")

    @property
    def steps_per_epoch(self):
        return int(np.ceil(len(self.dataset.y_train) / self.config["batch_size"]))

    @property
    def fit_verbose(self):
        mode = self.config["verbose"]
        if mode == "auto":
            return 1 if sys.stdout.isatty() else 2
        return {"bars": 1, "lines": 2, "quiet": 0}[mode]

    def gradcam_images(self):
        """The first few test images (raw, normalised) and labels the Grad-CAM plots use."""
        count = min(self.config["report"]["gradcam_images"], len(self.dataset.y_test))
        raw = self.dataset.x_test[:count]
        return raw, self.normalized(raw), self.dataset.y_test[:count]

    # -- models of earlier stages -------------------------------------------------------
    def model_of(self, stage):
        if stage not in self._model_cache:
            path = os.path.join(self.store.folder(stage), MODEL_FILE)
            self._model_cache[stage] = keras.models.load_model(path, compile=False)
        return self._model_cache[stage]

    def latest_model_stage(self, before):
        """The last model-producing stage of this run that comes before `before`."""
        from keras_dnnopt.pipeline.config import STAGES

        earlier = [s for s in MODEL_STAGES if STAGES.index(s) < STAGES.index(before)]
        stages = [s for s in self.config["stages"] if s in earlier]
        if not stages:
            raise ValueError(
                f"Stage `{before}` needs a trained model from an earlier stage "
                f"({', '.join(earlier)}); none is in `stages`. "
                f"Received: stages={self.config['stages']}"
            )
        return stages[-1]

    def teacher(self):
        return self.model_of("baseline") if "baseline" in self.config["stages"] else None


# -- shared helpers ---------------------------------------------------------------------

def _seed(run, offset):
    keras.utils.set_random_seed(run.config["seed"] * 100 + offset)


def _build(run, section):
    from keras_dnnopt import models

    cfg = run.config[section]
    data = run.dataset
    builder = getattr(models, cfg["architecture"])
    return builder(
        input_shape=data.input_shape, num_classes=data.num_classes, alpha=cfg["alpha"],
        dropout=cfg["dropout"], batch_norm_momentum=0.9, name=f"{section}_{cfg['architecture']}",
    )


def _optimizer(name, schedule, weight_decay=0.0):
    kwargs = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, **kwargs)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True, **kwargs)


def _schedule(run, learning_rate, epochs, warmup_epochs=0, kind="warmup_cosine"):
    """The learning-rate schedule of a stage's training, over its steps:

    - `"warmup_cosine"`: linear warm-up for `warmup_epochs`, then cosine decay to 0;
    - `"step"`: the same warm-up, then x0.1 at 50% and again at 75% of the steps;
    - `"one_cycle"`: Smith's one-cycle (`OneCycle`) peaking at `learning_rate`;
    - `"constant"`: `learning_rate` throughout.
    """
    from keras_dnnopt.schedules import OneCycle, StepDecay, WarmupCosineDecay

    steps = run.steps_per_epoch
    total = steps * epochs
    warmup = min(steps * warmup_epochs, total - 1)
    if kind == "constant":
        return learning_rate
    if kind == "one_cycle":
        return OneCycle(max_learning_rate=learning_rate, total_steps=max(total, 2))
    if kind == "step":
        # StepDecay counts its boundaries from the end of the warm-up.
        first = max(total // 2 - warmup, 1)
        second = max(3 * total // 4 - warmup, first + 1)
        return StepDecay(learning_rate=learning_rate, boundaries=[first, second], gamma=0.1,
                         warmup_steps=warmup)
    return WarmupCosineDecay(learning_rate=learning_rate, decay_steps=max(total - warmup, 1),
                             warmup_steps=warmup)


def _fit(run, trainee, epochs, optimizer, callbacks=(), loss=None):
    from keras_dnnopt.callbacks import LearningRateMonitor

    data = run.dataset
    trainee.compile(optimizer=optimizer,
                    loss=loss or keras.losses.SparseCategoricalCrossentropy(),
                    metrics=["accuracy"])
    # The training pipeline reshuffles itself every epoch (`make_pipeline`); `shuffle=False`
    # only tells Keras not to (Keras 3 warns that it would ignore it on a dataset).
    history = trainee.fit(data.train, validation_data=data.validation, epochs=epochs,
                          callbacks=[LearningRateMonitor(), *callbacks], shuffle=False,
                          verbose=run.fit_verbose)
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _distiller(run, student):
    from keras_dnnopt.distillation import Distiller

    return Distiller(run.teacher(), student, temperature=run.config["distill"]["temperature"],
                     alpha=run.config["distill"]["alpha"], from_logits=False)


def _fine_tune(run, model, cfg, callbacks=()):
    """Trains `model` for the section's epochs from its learning rate down a cosine, through
    the teacher when the section distills and a teacher exists. Returns the history and
    whether it distilled."""
    distilled = cfg["distill"] and run.teacher() is not None
    trainee = _distiller(run, model) if distilled else model
    schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], 0)
    history = _fit(run, trainee, cfg["epochs"], _optimizer("sgd", schedule), callbacks=callbacks)
    return history, distilled


def _grad_cam(model, images):
    from keras_dnnopt.visualization import grad_cam

    if len(images) == 0:
        return None
    return np.asarray(grad_cam(model, images), dtype="float32")


def _measure(run, model, workdir, with_accuracy=True):
    """Accuracy and macro F1 on the test split, parameters and MACs, and the float TFLite
    file's size and LiteRT latency at batch 1."""
    from keras_dnnopt.evaluation import evaluate_report
    from keras_dnnopt.export import benchmark_tflite, export_tflite, file_sizes
    from keras_dnnopt.profiling import profile

    metrics = {}
    if with_accuracy:
        report = evaluate_report(model, run.dataset.test)
        metrics["accuracy"] = report["accuracy"]
        metrics["f1_macro"] = report["f1_macro"]
    model_profile = profile(model)
    metrics["params"] = int(model_profile.params)
    metrics["macs"] = int(model_profile.macs)
    path = os.path.join(workdir, FLOAT_TFLITE)
    export_tflite(model, path)
    sizes = file_sizes(path)
    metrics["size_bytes"] = int(sizes.size_bytes)
    metrics["size_gzip_bytes"] = int(sizes.gzipped_size_bytes)
    cfg = run.config["export"]
    latency = benchmark_tflite(path, threads=cfg["threads"], runs=cfg["latency_runs"])
    metrics["latency_ms"] = float(latency.median_ms)
    return metrics


def _save_model(model, workdir, run):
    model.save(os.path.join(workdir, MODEL_FILE))
    _, images, _ = run.gradcam_images()
    heatmaps = _grad_cam(model, images)
    if heatmaps is not None:
        np.save(os.path.join(workdir, GRADCAM_FILE), heatmaps)


def _describe(cfg):
    return f"{cfg['architecture']} alpha {cfg['alpha']:g}"


# -- the stages -------------------------------------------------------------------------

def data_stage(run, workdir):
    """Loads, de-duplicates, splits, normalises and sets up augmentation of the data."""
    data = run.dataset
    dedup = data.dedup_report
    info = {
        "name": str(data.name),
        "input_shape": list(data.input_shape),
        "num_classes": int(data.num_classes),
        "class_names": [str(c) for c in data.class_names],
        "num_train": int(len(data.y_train)),
        "num_val": int(0 if data.y_val is None else len(data.y_val)),
        "num_test": int(len(data.y_test)),
        "duplicates_removed": (None if dedup is None
                               else int(dedup.num_input - len(dedup.kept_indices))),
        "augmentation": _augmentation_text(run.config["data"]),
        "normalization": "per-channel mean and variance of the training split"
        if data.normalizer is not None else "none",
    }
    summary = (f"{info['num_train']} train / {info['num_val']} validation / "
               f"{info['num_test']} test images {tuple(info['input_shape'])}, "
               f"{info['num_classes']} classes")
    if info["duplicates_removed"] is not None:
        summary += f", {info['duplicates_removed']} duplicates removed"
    return {"summary": summary, "metrics": {}, "extra": {"dataset": info}}


def _augmentation_text(cfg):
    if not cfg["augment"]:
        return "none"
    parts = [f"{key} {cfg[key]:g}" for key in ("rotation", "zoom", "translation") if cfg[key]]
    return ", ".join(parts) or "none"


def baseline_stage(run, workdir):
    """Trains the baseline (the teacher) with a warm-up cosine schedule."""
    cfg = run.config["baseline"]
    _seed(run, 1)
    model = _build(run, "baseline")
    schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], cfg["warmup_epochs"],
                         cfg["schedule"])
    history = _fit(run, model, cfg["epochs"],
                   _optimizer(cfg["optimizer"], schedule, cfg["weight_decay"]))
    _save_model(model, workdir, run)
    metrics = _measure(run, model, workdir)
    return {"summary": f"{_describe(cfg)}, {cfg['epochs']} epochs, {cfg['optimizer']} with a "
                       f"{cfg['schedule'].replace('_', ' ')} schedule (peak "
                       f"{cfg['learning_rate']:g})",
            "metrics": metrics, "history": history, "artifact": MODEL_FILE}


def student_stage(run, workdir):
    """Builds the lightweight student; trains it alone as the reference for distillation."""
    cfg = run.config["student"]
    _seed(run, 2)
    model = _build(run, "student")
    history = None
    if cfg["epochs"]:
        schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], 1, cfg["schedule"])
        history = _fit(run, model, cfg["epochs"], _optimizer("sgd", schedule))
    _save_model(model, workdir, run)
    metrics = _measure(run, model, workdir, with_accuracy=bool(cfg["epochs"]))
    trained = f"trained alone {cfg['epochs']} epochs" if cfg["epochs"] else "untrained"
    return {"summary": f"{_describe(cfg)}, {trained}", "metrics": metrics,
            "history": history, "artifact": MODEL_FILE}


def distill_stage(run, workdir):
    """Trains a fresh student from the teacher's soft targets and the labels."""
    cfg = run.config["distill"]
    if run.teacher() is None:
        raise ValueError("Stage `distill` needs the `baseline` stage (the teacher). "
                         f"Received: stages={run.config['stages']}")
    _seed(run, 3)
    student = _build(run, "student")
    schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], 1, cfg["schedule"])
    history = _fit(run, _distiller(run, student), cfg["epochs"],
                   _optimizer("sgd", schedule))
    _save_model(student, workdir, run)
    metrics = _measure(run, student, workdir)
    return {"summary": f"{_describe(run.config['student'])} from the teacher, "
                       f"T={cfg['temperature']:g}, alpha={cfg['alpha']:g}, {cfg['epochs']} epochs",
            "metrics": metrics, "history": history, "artifact": MODEL_FILE}


def prune_stage(run, workdir):
    """Prunes the latest model by magnitude to the target sparsity, distilling as it goes."""
    from keras_dnnopt.compression import PruningCallback, prune, sparsity_report, strip_pruning

    cfg = run.config["prune"]
    source_stage = run.latest_model_stage("prune")
    _seed(run, 4)
    source = run.model_of(source_stage)
    total = run.steps_per_epoch * cfg["epochs"]
    # The polynomial schedule updates the masks every `frequency` steps from step 0, so
    # the ramp ends on a multiple of it (and within the training steps).
    frequency = min(cfg["frequency"], total)
    end_step = max(int(cfg["ramp_fraction"] * total) // frequency * frequency, frequency)
    pruned = prune(source, cfg["target_sparsity"], begin_step=0, end_step=end_step,
                   frequency=frequency, structure=cfg["structure"])
    history, distilled = _fine_tune(run, pruned, cfg, callbacks=[PruningCallback(model=pruned)])
    stripped = strip_pruning(pruned)
    report = sparsity_report(stripped)
    _save_model(stripped, workdir, run)
    metrics = _measure(run, stripped, workdir)
    metrics["sparsity"] = float(report.overall)
    how = "with distillation" if distilled else "on labels only"
    target = "2:4" if cfg["structure"] == "2:4" else f"{cfg['target_sparsity']:.0%}"
    return {"summary": f"the {source_stage} model pruned to {target} {how}, {cfg['epochs']} "
                       f"epochs (sparsity reached: {report.overall:.1%} of prunable weights)",
            "metrics": metrics, "history": history, "artifact": MODEL_FILE,
            "extra": {"source": source_stage, "sparsity": report.to_dict()}}


def quantize_method(config):
    """`"qat"` or `"ptq"`: the method a configuration asks for on the Keras in use."""
    method = config["quantize"]["method"]
    if method == "auto":
        return "qat" if USING_TF_KERAS else "ptq"
    return method


def quantize_stage(run, workdir):
    """Quantization-aware training (tf_keras) or the set-up of full-integer PTQ."""
    from keras_dnnopt.compression import quantize

    cfg = run.config["quantize"]
    source_stage = run.latest_model_stage("quantize")
    method = quantize_method(run.config)
    if method == "ptq":
        export = run.config["export"]["quantization"]
        return {"summary": f"post-training quantization ({export}) of the {source_stage} model "
                           f"at export, calibrated on {cfg['calibration_steps']} training batches"
                           + ("" if USING_TF_KERAS else " (QAT needs tf_keras)"),
                "metrics": {}, "extra": {"method": "ptq", "source": source_stage}}
    _seed(run, 5)
    source = run.model_of(source_stage)
    # PQAT keeps the zeros of a pruned model through quantization-aware training.
    scheme = "pqat" if source_stage == "prune" else "default"
    qat = quantize(source, scheme=scheme)
    history, distilled = _fine_tune(run, qat, cfg)
    qat.save_weights(os.path.join(workdir, "qat.weights.h5"))
    from keras_dnnopt.evaluation import evaluate_report

    report = evaluate_report(qat, run.dataset.test)
    _, images, _ = run.gradcam_images()
    heatmaps = _grad_cam(qat, images)
    if heatmaps is not None:
        np.save(os.path.join(workdir, GRADCAM_FILE), heatmaps)
    how = " with distillation" if distilled else ""
    return {"summary": f"quantization-aware training ({scheme}) of the {source_stage} model"
                       f"{how}, {cfg['epochs']} epochs (accuracy of the fake-quantized model)",
            "metrics": {"accuracy": report["accuracy"], "f1_macro": report["f1_macro"]},
            "history": history, "artifact": "qat.weights.h5",
            "extra": {"method": "qat", "scheme": scheme, "source": source_stage}}


def _representative(run):
    data = run.dataset
    steps = run.config["quantize"]["calibration_steps"]
    count = min(len(data.x_train), steps * run.config["batch_size"])
    return run.normalized(data.x_train[:count])


def export_stage(run, workdir):
    """Exports the final model to TFLite and measures the file with LiteRT."""
    from keras_dnnopt.evaluation import evaluate_report
    from keras_dnnopt.export import benchmark_tflite, compare_outputs, export_tflite, file_sizes
    from keras_dnnopt.profiling import profile

    cfg = run.config["export"]
    quantize_record = (run.store.record("quantize")
                       if "quantize" in run.config["stages"] else None)
    source_stage = run.latest_model_stage("export")
    float_model = run.model_of(source_stage)
    model = float_model
    if quantize_record is not None and quantize_record["extra"]["method"] == "qat":
        from keras_dnnopt.compression import quantize

        model = quantize(float_model, scheme=quantize_record["extra"]["scheme"])
        model.load_weights(os.path.join(run.store.folder("quantize"), "qat.weights.h5"))
    quantization = cfg["quantization"]
    if quantize_record is None and quantization.startswith("int8"):
        quantization_note = " (no `quantize` stage: post-training quantization)"
    else:
        quantization_note = ""
    representative = _representative(run) if quantization.startswith("int8") else None
    name = f"model_{quantization}.tflite"
    path = os.path.join(workdir, name)
    export_tflite(model, path, quantization=quantization, representative_data=representative,
                  calibration_steps=run.config["quantize"]["calibration_steps"])
    report = evaluate_report(path, run.dataset.test)
    sizes = file_sizes(path)
    latency = benchmark_tflite(path, threads=cfg["threads"], runs=cfg["latency_runs"])
    model_profile = profile(float_model)
    agreement = compare_outputs(float_model, path, run.normalized(run.dataset.x_test))
    metrics = {
        "accuracy": report["accuracy"], "f1_macro": report["f1_macro"],
        "params": int(model_profile.params), "macs": int(model_profile.macs),
        "size_bytes": int(sizes.size_bytes), "size_gzip_bytes": int(sizes.gzipped_size_bytes),
        "latency_ms": float(latency.median_ms),
    }
    if quantize_record is None or quantize_record["extra"]["method"] != "qat":
        # PTQ: the final Keras model is the float one; its heatmaps explain the file.
        _, images, _ = run.gradcam_images()
        heatmaps = _grad_cam(float_model, images)
        if heatmaps is not None:
            np.save(os.path.join(workdir, GRADCAM_FILE), heatmaps)
    elif os.path.isfile(os.path.join(run.store.folder("quantize"), GRADCAM_FILE)):
        shutil.copy(os.path.join(run.store.folder("quantize"), GRADCAM_FILE),
                    os.path.join(workdir, GRADCAM_FILE))
    return {"summary": f"{quantization} TFLite file of the {source_stage} model"
                       f"{quantization_note}, run with LiteRT "
                       f"(top-1 agreement with the float model {agreement.top1_agreement:.1%})",
            "metrics": metrics, "artifact": name,
            "extra": {"quantization": quantization, "source": source_stage,
                      "agreement": agreement.to_dict(),
                      "confusion_matrix": np.asarray(report.confusion_matrix).tolist(),
                      "class_names": [str(c) for c in report.class_names]}}


STAGE_FUNCTIONS = {
    "data": data_stage,
    "baseline": baseline_stage,
    "student": student_stage,
    "distill": distill_stage,
    "prune": prune_stage,
    "quantize": quantize_stage,
    "export": export_stage,
}

STAGE_TITLES = {
    "data": "Data",
    "baseline": "Baseline (teacher)",
    "student": "Student alone",
    "distill": "Distilled student",
    "prune": "Pruned",
    "quantize": "Quantized",
    "export": "Exported TFLite (final)",
}
