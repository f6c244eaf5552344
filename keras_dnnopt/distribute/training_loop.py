"""`fit_distributed`: a training loop that runs a compiled model's own `train_step` under any
`tf.distribute` strategy, `MultiWorkerMirroredStrategy` on Keras 3 included.

Why it exists: on Keras 3, `model.fit` under `MultiWorkerMirroredStrategy` fails upstream
(keras-team/keras#20585), while a loop built from TensorFlow's primitives works. This is
that loop, written here because neither Keras 3 nor TensorFlow ships one: each step is
`strategy.run(model.train_step, ...)` on a batch of `strategy.experimental_distribute_dataset`
(so the model's own loss, loss scaling, gradient all-reduce and metrics are used unchanged,
a `Distiller` included), and the epoch logs are the model's metrics read in cross-replica
context, i.e. summed over every replica of every worker. The Keras callbacks are driven
through `keras.callbacks.CallbackList`, as `fit` does.

Fault tolerance (`backup_dir`) is the equivalent of Keras' `BackupAndRestore`, written with
`tf.train.Checkpoint` + `tf.train.CheckpointManager` because Keras 3's `BackupAndRestore`
is a `fit` callback with no chief/worker logic: at the end of every epoch every worker
saves the model, the optimizer (its step counter included, so schedules continue) and the
epoch number (the chief into `backup_dir`, the others into a temporary folder they delete,
as TensorFlow's multi-worker guide prescribes: every worker takes part in saving); at the
start, the latest checkpoint is restored and training resumes with the epoch after it. The
backup is deleted when training completes (after a barrier, so that no worker is still
writing).
"""

import os
import shutil

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras, tf
from keras_dnnopt.distribute.strategy import check_built_in_scope, is_chief
from keras_dnnopt.utils.validation import check_positive


def _worker_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return "local"
    return f"{resolver.task_type}_{resolver.task_id}"


class _Backup:
    """Per-epoch checkpoints of the model, its optimizer and the epoch counter."""

    def __init__(self, model, strategy, backup_dir):
        self.chief = is_chief(strategy)
        self.backup_dir = backup_dir
        self.write_dir = (backup_dir if self.chief else
                          os.path.join(backup_dir, f"workertemp_{_worker_id(strategy)}"))
        with strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir,
                                                  max_to_keep=1)

    def restore(self):
        """Restores the latest backup (the chief's) and returns the epoch to start from."""
        latest = tf.train.latest_checkpoint(self.backup_dir)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).expect_partial()
        return int(self.epoch.numpy())

    def save(self, next_epoch):
        self.epoch.assign(next_epoch)
        self.manager.save()
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def delete(self, strategy):
        _barrier(strategy)  # no worker is still writing its last checkpoint
        if self.chief:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _barrier(strategy):
    """Returns once every replica of every worker got here (an all-reduce of a zero)."""
    if strategy.num_replicas_in_sync == 1:
        return

    @tf.function
    def all_reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.zeros([])))

    all_reduce()


def _build(model, strategy, dataset):
    """Creates every variable (model, compiled metrics and loss, optimizer) before the
    distributed step is traced, as `fit` does: variables cannot be created per replica."""
    if USING_TF_KERAS:
        return  # tf_keras creates them lazily in `init_scope`, under the strategy
    batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)  # noqa: SLF001 (what Keras 3's fit calls)


def _distribute(dataset, strategy):
    options = tf.data.Options()
    # In-memory data cannot be sharded by file: every worker reads the same dataset and
    # keeps its slice of each global batch, so a step sees exactly the global batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def fit_distributed(model, dataset, epochs=1, strategy=None, callbacks=None, backup_dir=None,
                    verbose=0):
    """Trains a compiled model under a `tf.distribute` strategy, like `model.fit`.

    Works on both Kerases and under every strategy, and is *the* way to train under
    `MultiWorkerMirroredStrategy` on Keras 3, where `fit` fails upstream
    (keras-team/keras#20585). Every step runs the model's own `train_step` on each
    replica (so a `Distiller` or any model overriding `train_step` trains the same way as
    with `fit`), with gradients summed across replicas by the optimizer. Build and compile
    the model inside `strategy.scope()`.

    Args:
        model: a compiled `keras.Model` of the Keras in use, built under `strategy`.
        dataset: a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)` batches of the
            *global* batch size (see `global_batch_size`); every worker passes the same
            dataset and keeps its slice of each batch. Use `drop_remainder=True` under
            several workers, so that they all run the same number of steps.
        epochs: the number of epochs, an integer >= 1. Defaults to 1.
        strategy: the `tf.distribute.Strategy`; None uses the model's
            (`model.distribute_strategy`, the one it was built under). Defaults to None.
        callbacks: a list of `keras.callbacks.Callback` (epoch and batch hooks, logs as in
            `fit`; `model.stop_training` is honoured). Defaults to None.
        backup_dir: a folder for per-epoch fault-tolerance checkpoints (model, optimizer,
            epoch), shared by every worker (a network file system, or the same path on one
            machine). When a checkpoint is there, training resumes from the epoch after it;
            it is deleted when training completes. Defaults to None (no backup).
        verbose: 0 (silent) or 1 (a progress bar per epoch). Defaults to 0.

    Returns:
        The `keras.callbacks.History` of the run (`history.history[name]`: one value per
        epoch run, global across all replicas; `history.epoch`: the epochs run, which
        start after the restored one when resuming).

    Raises:
        TypeError: if `model` is not a model of the Keras in use, or `dataset` is not a
            `tf.data.Dataset`.
        ValueError: if the model is not compiled, its variables were not created in
            `strategy.scope()` (a model built before the strategy, outside its scope), or
            `epochs`/`verbose` is invalid.

    Example:

    ```python
    strategy = get_strategy("multi_worker")     # TF_CONFIG names this worker
    with strategy.scope():
        model = keras_dnnopt.models.plain_cnn((8, 8, 1), num_classes=10, alpha=0.25)
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    history = fit_distributed(model, dataset, epochs=5, strategy=strategy,
                              backup_dir="/shared/backup")
    ```
    """
    check_model(model, "model")
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError("Argument `dataset` must be a `tf.data.Dataset` of global batches, "
                        "e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(64). "
                        f"Received: dataset of type {type(dataset).__name__}")
    epochs = check_positive("epochs", epochs, integer=True)
    if verbose not in (0, 1):
        raise ValueError(f"Argument `verbose` must be 0 or 1. Received: verbose={verbose!r}")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("The model must be compiled (`model.compile(optimizer, loss)`) inside "
                         "`strategy.scope()` before `fit_distributed`. Received: a model "
                         "with no optimizer")
    strategy = strategy or model.distribute_strategy
    check_built_in_scope(model, strategy, "model",
                         fix="build and compile it inside `with strategy.scope():` and pass "
                         "that strategy")

    _build(model, strategy, dataset)
    backup = _Backup(model, strategy, backup_dir) if backup_dir is not None else None
    initial_epoch = backup.restore() if backup is not None else 0

    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    @tf.function
    def read_logs():  # in cross-replica context: aggregated over every replica and worker
        return model.get_metrics_result()

    distributed = _distribute(dataset, strategy)
    cardinality = int(dataset.cardinality())
    steps = cardinality if cardinality >= 0 else None  # for the progress bar
    # Callbacks run in the strategy's scope, as in `fit` (TF-MOT's pruning hooks need it).
    with strategy.scope():
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=model,
            epochs=epochs, steps=steps, verbose=verbose)
        model.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step, batch in enumerate(distributed):
                callback_list.on_train_batch_begin(step)
                train_step(batch)
                callback_list.on_train_batch_end(step, {})
            logs = {name: float(value) for name, value in read_logs().items()}
            if backup is not None:
                backup.save(epoch + 1)
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
    if backup is not None:
        backup.delete(strategy)
    return next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))
