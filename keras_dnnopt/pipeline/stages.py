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

# A training stage's resume state, inside its folder in progress: Keras' `BackupAndRestore`
# folder and the logs of the epochs it holds.
BACKUP_DIR = "backup"
HISTORY_FILE = "history.json"

# Each stage's part in the seeds of its epochs (`_epoch_rng`).
STAGE_KEYS = {"data": 0, "baseline": 1, "student": 2, "distill": 3, "prune": 4, "quantize": 5,
              "export": 6, "search": 7}


class Run:
    """What the stages share: the configuration, the output folders and the data."""

    def __init__(self, config, store, log=print):
        self.config = config
        self.store = store
        self.log = log
        self._dataset = None
        self._model_cache = {}
        # What is running, for the message of an interrupted run.
        self.current_stage = None
        self.current_epoch = None
        self.current_backup, self.current_epochs = None, None  # the training in progress

    @property
    def task(self):
        """`"classification"` or `"regression"`."""
        return self.config["task"]

    @property
    def regression(self):
        return self.config["task"] == "regression"

    @property
    def tabular(self):
        """Whether each sample is a feature vector (an MLP's input), not an image."""
        return len(self.dataset.input_shape) == 1

    @property
    def user_model(self):
        """The path of the user's trained model (`model`), the baseline; or None."""
        return self.config.get("model")

    @property
    def augment_options(self):
        """The training augmentation (`augmentation_layers` arguments), or False (also for
        tabular data, which has no image to rotate)."""
        cfg = self.config["data"]
        if not cfg["augment"] or self.tabular:
            return False
        augment = {"rotation": cfg["rotation"] or None, "zoom": cfg["zoom"] or None,
                   "translation": cfg["translation"] or None}
        return {k: v for k, v in augment.items() if v is not None} or False

    # -- data ---------------------------------------------------------------------------
    @property
    def dataset(self):
        if self._dataset is None:
            from keras_dnnopt.data import load_dataset

            cfg = self.config["data"]
            # The stages train on `_training_data`, augmented there (`augment_options`).
            # A user's own model sees the data as given, never normalised here.
            self._dataset = load_dataset(
                self.config["dataset"],
                validation_split=cfg["validation_split"],
                test_split=cfg["test_split"],
                batch_size=self.config["batch_size"],
                normalize=cfg["normalize"] and not self.user_model,
                augment=False,
                deduplicate=cfg["deduplicate"],
                seed=self.config["seed"],
                image_size=tuple(cfg["image_size"]),
                task=self.config["task"],
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
        if self.tabular or self.regression:
            count = 0  # Grad-CAM explains a class score over an image
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

    # -- the task ---------------------------------------------------------------------
    def loss(self):
        """The training loss: cross-entropy, or for regression the MSE in units of the
        targets' variance (so one learning rate suits targets of any scale)."""
        if self.regression:
            return scaled_mse(self.dataset.target_std)
        return keras.losses.SparseCategoricalCrossentropy()

    def metrics(self):
        if self.regression:
            return [keras.metrics.RootMeanSquaredError(name="rmse")]
        return ["accuracy"]

    def report(self, model, data):
        """`evaluate_report` of a model or a `.tflite` path on `data` for the run's task."""
        from keras_dnnopt.evaluation import evaluate_report

        return evaluate_report(model, data, task=self.task)

    def scores(self, model, data):
        """The test metrics a stage records: accuracy and macro F1, or MSE/RMSE/MAE/R^2."""
        report = self.report(model, data)
        keys = ("mse", "rmse", "mae", "r2") if self.regression else ("accuracy", "f1_macro")
        return {key: float(report.metrics[key]) for key in keys}


def scaled_mse(target_std):
    """The mean squared error divided by `target_std**2`, per sample: a Keras loss function
    (the stages compile it; models are saved without it)."""
    from keras_dnnopt.backend import tf

    scale = 1.0 / float(target_std) ** 2

    def loss(y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(y_pred))
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1) * scale

    return loss


# -- shared helpers ---------------------------------------------------------------------

def _seed(run, offset):
    keras.utils.set_random_seed(run.config["seed"] * 100 + offset)


def build_model(data, architecture, alpha, dropout, depth, name):
    """A fresh model for `data`: an MLP of `depth` hidden layers for tabular data (a
    regression MLP outputs the targets in their own units), else `architecture`."""
    from keras_dnnopt.models import mlp, mobilenet_v1, mobilenet_v2, plain_cnn

    if len(data.input_shape) == 1:
        if data.task == "regression":
            return mlp(data.input_shape, alpha=alpha, depth=depth, dropout=dropout,
                       batch_norm_momentum=0.9, task="regression",
                       num_outputs=data.num_outputs, target_mean=data.target_mean,
                       target_std=data.target_std, name=f"{name}_mlp")
        return mlp(data.input_shape, data.num_classes, alpha=alpha, depth=depth,
                   dropout=dropout, batch_norm_momentum=0.9, name=f"{name}_mlp")
    if data.task == "regression":
        raise ValueError("`task: regression` is supported on tabular data (`x` of rank 2, "
                         "an MLP); image regression is not. Received: images of shape "
                         f"{tuple(data.input_shape)}")
    builder = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2,
               "plain_cnn": plain_cnn}[architecture]
    return builder(input_shape=data.input_shape, num_classes=data.num_classes, alpha=alpha,
                   dropout=dropout, batch_norm_momentum=0.9, name=f"{name}_{architecture}")


def deployable(model):
    """`model` as it is exported and quantized: a regression MLP's final `Rescaling`
    folded into its last `Dense` (`models.fold_output_rescaling`: an int8 file would
    otherwise end in a `MUL` that XNNPACK may refuse); any other model unchanged."""
    from keras_dnnopt.models import fold_output_rescaling

    return fold_output_rescaling(model)


def strip_names(run):
    """Whether the run's `.tflite` files leave out their tensor names: `export.strip_names`,
    or by default only under a size budget (where every byte counts)."""
    value = run.config["export"]["strip_names"]
    return run.config["budget"]["max_size"] is not None if value is None else bool(value)


def _build(run, section):
    cfg = run.config[section]
    return build_model(run.dataset, cfg["architecture"], cfg["alpha"], cfg["dropout"],
                       cfg["depth"], section)


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
    warmup = min(steps * warmup_epochs, total // 2)  # the warm-up never outlasts the decay
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


def _epoch_rng(run, epoch, seed=None):
    """The random generator of one epoch of the stage in progress: a function of the seed
    (the run's, or `seed`: a search trial's own), the stage and the epoch only, so a
    resumed stage draws what an uninterrupted one would have drawn."""
    stage_key = STAGE_KEYS[run.current_stage] if run.current_stage in STAGE_KEYS else 0
    return np.random.default_rng([run.config["seed"] if seed is None else seed, stage_key,
                                  epoch])


def _training_data(run, start, epochs, seed=None):
    """The training batches of epochs `start` to `epochs - 1`, one after the other.

    Each epoch has its own order and its own freshly seeded augmentation layers, both drawn
    from `_epoch_rng(run, epoch)`, and the batches are augmented in order (no parallel map,
    whose interleaving would reorder the draws): the same epoch always sees the same
    batches, whether the run was interrupted before it or not.
    """
    from functools import reduce

    from keras_dnnopt.backend import tf
    from keras_dnnopt.data.pipeline import resolve_augmentation

    data = run.dataset
    x = tf.constant(np.asarray(data.x_train, dtype="float32"))
    y = tf.constant(np.asarray(data.y_train))
    normalizer = data.normalizer
    pieces = []
    for epoch in range(start, epochs):
        rng = _epoch_rng(run, epoch, seed)
        order = rng.permutation(len(data.y_train))
        augment = resolve_augmentation(run.augment_options, data.input_shape,
                                       int(rng.integers(2**31 - 1)))

        def batch(indices, augment=augment):
            images = tf.gather(x, indices)
            if augment is not None:
                images = augment(images, training=True)
            if normalizer is not None:
                images = normalizer(images)
            return tf.cast(images, tf.float32), tf.gather(y, indices)

        pieces.append(tf.data.Dataset.from_tensor_slices(order)
                      .batch(run.config["batch_size"]).map(batch))
    return reduce(lambda a, b: a.concatenate(b), pieces).prefetch(tf.data.AUTOTUNE)


class _EpochProgress(keras.callbacks.Callback):
    """Tells the run which epoch is in progress, records each finished epoch's logs in the
    stage's resume folder (before `BackupAndRestore` saves that epoch), and reseeds the
    model's own randomness (dropout) from the seed and the epoch at each epoch's start."""

    def __init__(self, run, history_path, history):
        super().__init__()
        self.run = run
        self.history_path = history_path
        self.history = history

    def on_epoch_begin(self, epoch, logs=None):
        from keras_dnnopt.backend import tf

        self.run.current_epoch = epoch
        seed = int(_epoch_rng(self.run, epoch).integers(2**31 - 1))
        stochastic = False
        for layer in self.model._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):  # Keras 3
                generator.state.assign(np.asarray([seed, 0], dtype=generator.state.dtype))
            stochastic = stochastic or (isinstance(layer, keras.layers.Dropout)
                                        and layer.rate > 0)
        if USING_TF_KERAS and stochastic:
            # tf_keras' dropout draws from stateful random ops whose state lives in the
            # traced train step: a fresh trace under a fresh seed restarts it.
            tf.random.set_seed(seed)
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        from keras_dnnopt.pipeline.store import write_json

        self.history[epoch] = {key: float(value) for key, value in (logs or {}).items()}
        write_json(self.history_path, {str(k): v for k, v in sorted(self.history.items())})


def _fit(run, trainee, epochs, optimizer, callbacks=(), loss=None, workdir=None):
    """Trains `trainee` for `epochs`, resumable: `keras.callbacks.BackupAndRestore` keeps
    the weights and optimizer state of the last finished epoch in `workdir/backup/`, and a
    rerun of the stage continues from there with the same data, augmentation and dropout
    draws it would have had."""
    from keras_dnnopt.callbacks import LearningRateMonitor
    from keras_dnnopt.pipeline.store import read_json

    backup_dir = os.path.join(workdir, BACKUP_DIR)
    history_path = os.path.join(workdir, HISTORY_FILE)
    start = backup_epoch(backup_dir)
    history = {}
    if start and os.path.isfile(history_path):
        history = {int(k): v for k, v in read_json(history_path).items() if int(k) < start}
    trainee.compile(optimizer=optimizer, loss=loss or run.loss(), metrics=run.metrics())
    run.current_backup, run.current_epochs = backup_dir, epochs
    if start >= epochs:
        run.log(f"          resuming after its last epoch (all {epochs} were finished)")
    elif start:
        finished = "epoch 1 was" if start == 1 else f"epochs 1-{start} were"
        run.log(f"          resuming at epoch {start + 1}/{epochs} ({finished} finished)")
    # Restarted after its last epoch (killed before the stage was saved): the backup
    # restores the weights and no epoch runs; the data is only there to be passed.
    train = _training_data(run, min(start, epochs - 1), epochs)
    fitted = trainee.fit(
        train, validation_data=run.dataset.validation, epochs=epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=[LearningRateMonitor(), *callbacks, _EpochProgress(run, history_path, history),
                   _backup_callback(backup_dir)],
        shuffle=False, verbose=run.fit_verbose)
    del fitted
    run.current_epoch = run.current_backup = None
    shutil.rmtree(backup_dir, ignore_errors=True)
    keys = list(history[min(history)]) if history else []
    return {key: [history[e][key] for e in sorted(history)] for key in keys}


def _backup_callback(backup_dir):
    if USING_TF_KERAS:
        # tf_keras saves a TensorFlow checkpoint (data files first, its index renamed into
        # place last), the epoch included: atomic as it is.
        return keras.callbacks.BackupAndRestore(backup_dir)
    return _AtomicBackupAndRestore(backup_dir)


if not USING_TF_KERAS:
    class _AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        """Keras 3's `BackupAndRestore`, its two files written atomically and consistently.

        Keras 3 writes `latest.weights.h5` in place, then `training_metadata.json`: a kill
        in between leaves new weights with the old epoch (or half a file). Here each
        epoch's weights go to their own file, renamed into place, and the metadata (which
        names that file) is replaced last, atomically; the older weights are removed after.
        """

        def _save_model(self):
            from keras_dnnopt.pipeline.store import write_json

            os.makedirs(self.backup_dir, exist_ok=True)
            name = f"epoch-{self._current_epoch}.weights.h5"
            temp = os.path.join(self.backup_dir, f".tmp-{name}")
            self.model.save_weights(temp, overwrite=True)
            os.replace(temp, os.path.join(self.backup_dir, name))
            write_json(self._training_metadata_path,
                       {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                        "weights": name})
            for old in os.listdir(self.backup_dir):
                if old.startswith("epoch-") and old != name:
                    os.remove(os.path.join(self.backup_dir, old))

        def _load_model(self):
            from keras_dnnopt.pipeline.store import read_json

            if not os.path.isfile(self._training_metadata_path):
                return
            metadata = read_json(self._training_metadata_path)
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
            self.model._initial_epoch = metadata["epoch"]


def interrupted_epoch(run):
    """The epoch (from 1) a stage interrupted in its training resumes at, or None outside
    training. Between two epochs (the last one already backed up) that is the next one,
    not the one whose `on_epoch_begin` ran last."""
    if run.current_epoch is None:
        return None
    epoch = run.current_epoch + 1
    finished = backup_epoch(run.current_backup) if run.current_backup else 0
    if finished >= epoch:
        epoch = min(finished + 1, run.current_epochs)
    return epoch


def backup_epoch(backup_dir):
    """The number of epochs a stage's `BackupAndRestore` folder holds as finished (0 when
    there is none): the epoch its training resumes at."""
    if not os.path.isdir(backup_dir):
        return 0
    if not USING_TF_KERAS:
        from keras_dnnopt.pipeline.store import read_json

        path = os.path.join(backup_dir, "training_metadata.json")
        return int(read_json(path)["epoch"]) if os.path.isfile(path) else 0
    from keras_dnnopt.backend import tf

    checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if checkpoint is None:
        return 0
    for name, _ in tf.train.list_variables(checkpoint):
        if "ckpt_saved_epoch" in name:
            return int(tf.train.load_variable(checkpoint, name)) + 1
    return 0


def _distiller(run, student, teacher=None):
    return make_distiller(run, run.teacher() if teacher is None else teacher, student)


def make_distiller(run, teacher, student):
    """Our `Distiller` for the run's task: soft targets at the configured temperature, or
    for regression the student matched to the teacher's outputs (MSE in units of the
    targets' variance)."""
    from keras_dnnopt.distillation import Distiller

    cfg = run.config["distill"]
    if run.regression:
        return Distiller(teacher, student, alpha=cfg["alpha"], from_logits=True,
                         distillation_loss=scaled_mse(run.dataset.target_std))
    return Distiller(teacher, student, temperature=cfg["temperature"], alpha=cfg["alpha"],
                     from_logits=False)


def _fine_tune(run, model, cfg, workdir, callbacks=()):
    """Trains `model` for the section's epochs from its learning rate down a cosine, through
    the teacher when the section distills and a teacher exists. Returns the history and
    whether it distilled."""
    distilled = cfg["distill"] and run.teacher() is not None
    trainee = _distiller(run, model) if distilled else model
    schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], 0)
    history = _fit(run, trainee, cfg["epochs"], _optimizer("sgd", schedule), callbacks=callbacks,
                   workdir=workdir)
    return history, distilled


def _grad_cam(model, images):
    from keras_dnnopt.visualization import grad_cam

    if len(images) == 0:
        return None
    return np.asarray(grad_cam(model, images), dtype="float32")


def _measure(run, model, workdir, with_accuracy=True):
    """Accuracy and macro F1 (regression: MSE, RMSE, MAE, R^2) on the test split,
    parameters and MACs, and the float TFLite file's size and LiteRT latency at batch 1."""
    from keras_dnnopt.export import benchmark_tflite, export_tflite, file_sizes
    from keras_dnnopt.profiling import profile

    metrics = {}
    if with_accuracy:
        metrics.update(run.scores(model, run.dataset.test))
    model_profile = profile(model)
    metrics["params"] = int(model_profile.params)
    metrics["macs"] = int(model_profile.macs)
    path = os.path.join(workdir, FLOAT_TFLITE)
    export_tflite(deployable(model), path)
    sizes = file_sizes(path)
    metrics["size_bytes"] = int(sizes.size_bytes)
    metrics["size_gzip_bytes"] = int(sizes.gzipped_size_bytes)
    cfg = run.config["export"]
    latency = benchmark_tflite(path, threads=cfg["threads"], runs=cfg["latency_runs"])
    metrics["latency_ms"] = float(latency.median_ms)
    return metrics


def _save_model(model, workdir, run):
    from keras_dnnopt.pipeline.store import atomic_path

    with atomic_path(os.path.join(workdir, MODEL_FILE)) as temp:
        model.save(temp)
    _, images, _ = run.gradcam_images()
    _save_heatmaps(_grad_cam(model, images), workdir)


def _save_heatmaps(heatmaps, workdir):
    from keras_dnnopt.pipeline.store import atomic_path

    if heatmaps is not None:
        with atomic_path(os.path.join(workdir, GRADCAM_FILE)) as temp:
            np.save(temp, heatmaps)


def _describe(cfg):
    return f"{cfg['architecture']} alpha {cfg['alpha']:g}"


# -- the stages -------------------------------------------------------------------------

def data_stage(run, workdir):
    """Loads, de-duplicates, splits, normalises and sets up augmentation of the data."""
    data = run.dataset
    dedup = data.dedup_report
    info = {
        "name": str(data.name),
        "task": run.task,
        "input_shape": list(data.input_shape),
        "num_classes": None if data.num_classes is None else int(data.num_classes),
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
    kind = "samples of" if run.tabular else "images"
    target = (f"{data.num_outputs} regression target(s)" if run.regression
              else f"{info['num_classes']} classes")
    if run.tabular:
        info["normalization"] = ("per-feature mean and variance of the training split"
                                 if data.normalizer is not None else "none")
        info["augmentation"] = "none (tabular data)"
    summary = (f"{info['num_train']} train / {info['num_val']} validation / "
               f"{info['num_test']} test {kind} {tuple(info['input_shape'])}, {target}")
    if info["duplicates_removed"] is not None:
        summary += f", {info['duplicates_removed']} duplicates removed"
    return {"summary": summary, "metrics": {}, "extra": {"dataset": info}}


def _augmentation_text(cfg):
    if not cfg["augment"]:
        return "none"
    parts = [f"{key} {cfg[key]:g}" for key in ("rotation", "zoom", "translation") if cfg[key]]
    return ", ".join(parts) or "none"


def baseline_stage(run, workdir):
    """Trains the baseline (the teacher) with a warm-up cosine schedule; or takes the user's
    trained model (`model`) as it is."""
    if run.user_model:
        return _user_baseline(run, workdir)
    cfg = run.config["baseline"]
    _seed(run, 1)
    model = _build(run, "baseline")
    schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], cfg["warmup_epochs"],
                         cfg["schedule"])
    history = _fit(run, model, cfg["epochs"],
                   _optimizer(cfg["optimizer"], schedule, cfg["weight_decay"]), workdir=workdir)
    _save_model(model, workdir, run)
    metrics = _measure(run, model, workdir)
    return {"summary": f"{_describe(cfg)}, {cfg['epochs']} epochs, {cfg['optimizer']} with a "
                       f"{cfg['schedule'].replace('_', ' ')} schedule (peak "
                       f"{cfg['learning_rate']:g})",
            "metrics": metrics, "history": history, "artifact": MODEL_FILE}


def load_user_model(path, dataset):
    """The user's trained `.keras` model, checked against the data: its input must take one
    sample of `dataset` and its output give one score per class (or per target).

    Raises:
        ValueError: naming `model`, for a file that does not load (another Keras's, say)
            or a model that does not fit the data.
    """
    from keras_dnnopt.export import load_model

    try:
        model = load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a foreign file
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(
            f"`model` could not be loaded: {detail}. It must be a `.keras` file saved by the "
            f"Keras in use ({'tf_keras' if USING_TF_KERAS else 'Keras 3'}; switch with "
            f"TF_USE_LEGACY_KERAS=1). Received: model={path!r}") from None
    expected_in = tuple(dataset.input_shape)
    given_in = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if given_in != expected_in:
        raise ValueError(
            f"`model` takes inputs of shape {given_in}, but the data's samples have shape "
            f"{expected_in}: give a model made for this data. Received: model={path!r}")
    outputs = dataset.num_outputs if dataset.task == "regression" else dataset.num_classes
    given_out = model.output_shape[1:] if not isinstance(model.output_shape, list) else None
    if given_out is None or int(np.prod(given_out)) != outputs:
        raise ValueError(
            f"`model` outputs shape {given_out}, but the data has {outputs} "
            f"{'targets' if dataset.task == 'regression' else 'classes'} (one output each, "
            f"class probabilities for classification). Received: model={path!r}")
    return model


def _user_baseline(run, workdir):
    model = load_user_model(run.user_model, run.dataset)
    _save_model(model, workdir, run)
    metrics = _measure(run, model, workdir)
    return {"summary": f"your model {os.path.basename(run.user_model)} ({model.name}, "
                       f"{metrics['params']:,} params), taken as trained, on the data as "
                       "given (not normalised here)",
            "metrics": metrics, "artifact": MODEL_FILE,
            "extra": {"user_model": os.path.abspath(run.user_model)}}


def student_stage(run, workdir):
    """Builds the lightweight student; trains it alone as the reference for distillation."""
    cfg = run.config["student"]
    _seed(run, 2)
    model = _build(run, "student")
    history = None
    if cfg["epochs"]:
        schedule = _schedule(run, cfg["learning_rate"], cfg["epochs"], 1, cfg["schedule"])
        history = _fit(run, model, cfg["epochs"], _optimizer("sgd", schedule), workdir=workdir)
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
                   _optimizer("sgd", schedule), workdir=workdir)
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
    history, distilled = _fine_tune(run, pruned, cfg, workdir,
                                    callbacks=[PruningCallback(model=pruned)])
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
    """`"qat"` or `"ptq"`: the method a configuration asks for (`auto` is QAT on both Kerases)."""
    method = config["quantize"]["method"]
    return "qat" if method == "auto" else method


def qat_route():
    """Which implementation of quantization-aware training runs on the Keras in use."""
    if USING_TF_KERAS:
        return "tfmot", "TF-MOT, tf_keras"
    return "native", "keras_dnnopt's native fake-quant layers, Keras 3"


def qat_unfit_reason(run):
    """Why `quantize.method: auto` takes post-training quantization instead of QAT here, or
    None. TF-MOT's QAT (tf_keras) starts each activation range at [-6, 6] and moves it by a
    slow moving average: a regression output in its targets' units (a mean of 150, say)
    stays clipped through a few epochs of fine-tuning, so a regression run on tf_keras is
    quantized after training, calibrated on the data."""
    if USING_TF_KERAS and run.regression:
        return ("TF-MOT's QAT starts its activation ranges at [-6, 6] and moves them slowly; "
                "a regression output in its targets' units would stay clipped")
    return None


def quantize_stage(run, workdir):
    """Quantization-aware training (both Kerases) or the set-up of full-integer PTQ; with
    `method: auto`, PTQ where QAT does not fit the model (`qat_unfit_reason`, or a layer
    QAT cannot quantize), the reason in the summary."""
    from keras_dnnopt.compression import quantize

    cfg = run.config["quantize"]
    source_stage = run.latest_model_stage("quantize")
    method = quantize_method(run.config)
    reason = qat_unfit_reason(run) if cfg["method"] == "auto" else None
    source = scheme = qat = None
    if method == "qat" and reason is None:
        _seed(run, 5)
        source = run.model_of(source_stage)
        # PQAT keeps the zeros of a pruned model through quantization-aware training.
        scheme = "pqat" if source_stage == "prune" else "default"
        try:
            qat = quantize(deployable(source), scheme=scheme)
        except ValueError as error:
            if cfg["method"] != "auto":
                raise
            reason = "QAT cannot quantize this model: " + " ".join(str(error).split())[:300]
    if method == "ptq" or reason is not None:
        export = run.config["export"]["quantization"]
        why = f" (`method: auto`: {reason})" if reason else ""
        return {"summary": f"post-training quantization ({export}) of the {source_stage} model "
                           f"at export, calibrated on {cfg['calibration_steps']} training "
                           f"batches{why}",
                "metrics": {}, "extra": {"method": "ptq", "source": source_stage,
                                         "reason": reason}}
    history, distilled = _fine_tune(run, qat, cfg, workdir)
    from keras_dnnopt.pipeline.store import atomic_path

    with atomic_path(os.path.join(workdir, "qat.weights.h5")) as temp:
        qat.save_weights(temp)
    scores = run.scores(qat, run.dataset.test)
    _, images, _ = run.gradcam_images()
    _save_heatmaps(_grad_cam(qat, images), workdir)
    how = " with distillation" if distilled else ""
    route, route_words = qat_route()
    return {"summary": f"quantization-aware training ({scheme}, {route_words}) of the "
                       f"{source_stage} model{how}, {cfg['epochs']} epochs (accuracy of the "
                       f"fake-quantized model)",
            "metrics": scores, "history": history, "artifact": "qat.weights.h5",
            "extra": {"method": "qat", "scheme": scheme, "route": route, "source": source_stage}}


def _representative(run):
    data = run.dataset
    steps = run.config["quantize"]["calibration_steps"]
    count = min(len(data.x_train), steps * run.config["batch_size"])
    return run.normalized(data.x_train[:count])


def export_stage(run, workdir):
    """Exports the final model to TFLite and measures the file with LiteRT."""
    from keras_dnnopt.export import benchmark_tflite, compare_outputs, export_tflite, file_sizes
    from keras_dnnopt.profiling import profile

    cfg = run.config["export"]
    quantize_record = (run.store.record("quantize")
                       if "quantize" in run.config["stages"] else None)
    source_stage = run.latest_model_stage("export")
    float_model = run.model_of(source_stage)
    model = deployable(float_model)
    if quantize_record is not None and quantize_record["extra"]["method"] == "qat":
        from keras_dnnopt.compression import quantize

        model = quantize(model, scheme=quantize_record["extra"]["scheme"])
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
                  calibration_steps=run.config["quantize"]["calibration_steps"],
                  strip_names=strip_names(run))
    report = run.report(path, run.dataset.test)
    sizes = file_sizes(path)
    latency = benchmark_tflite(path, threads=cfg["threads"], runs=cfg["latency_runs"])
    model_profile = profile(float_model)
    agreement = compare_outputs(float_model, path, run.normalized(run.dataset.x_test))
    # The Keras model the file was exported from (the QAT model after QAT), for OUT/.
    from keras_dnnopt.export import save_model

    save_model(model, os.path.join(workdir, MODEL_FILE))
    keys = ("mse", "rmse", "mae", "r2") if run.regression else ("accuracy", "f1_macro")
    metrics = {
        **{key: float(report[key]) for key in keys},
        "params": int(model_profile.params), "macs": int(model_profile.macs),
        "size_bytes": int(sizes.size_bytes), "size_gzip_bytes": int(sizes.gzipped_size_bytes),
        "latency_ms": float(latency.median_ms),
    }
    if quantize_record is None or quantize_record["extra"]["method"] != "qat":
        # PTQ: the final Keras model is the float one; its heatmaps explain the file.
        _, images, _ = run.gradcam_images()
        _save_heatmaps(_grad_cam(float_model, images), workdir)
    elif os.path.isfile(os.path.join(run.store.folder("quantize"), GRADCAM_FILE)):
        _save_heatmaps(np.load(os.path.join(run.store.folder("quantize"), GRADCAM_FILE)),
                       workdir)
    if run.regression:
        agreed = (f"largest difference from the float model's output "
                  f"{agreement.max_abs_diff:.4g}, mean {agreement.mean_abs_diff:.4g}")
        extra = {}
    else:
        agreed = f"top-1 agreement with the float model {agreement.top1_agreement:.1%}"
        extra = {"confusion_matrix": np.asarray(report.confusion_matrix).tolist(),
                 "class_names": [str(c) for c in report.class_names]}
    names = ", tensor names left out" if strip_names(run) else ""
    return {"summary": f"{quantization} TFLite file of the {source_stage} model"
                       f"{quantization_note}{names}, run with LiteRT ({agreed})",
            "metrics": metrics, "artifact": name,
            "extra": {"quantization": quantization, "source": source_stage,
                      "agreement": agreement.to_dict(), **extra}}


STAGE_FUNCTIONS = {
    "data": data_stage,
    "baseline": baseline_stage,
    "student": student_stage,
    "distill": distill_stage,
    "prune": prune_stage,
    "quantize": quantize_stage,
    "export": export_stage,
}  # and "search": `pipeline.search.search_stage`, built on these (the runner adds it)

STAGE_TITLES = {
    "data": "Data",
    "baseline": "Baseline (teacher)",
    "student": "Student alone",
    "distill": "Distilled student",
    "prune": "Pruned",
    "quantize": "Quantized",
    "export": "Exported TFLite (final)",
    "search": "Searched under the budget (final)",
}
