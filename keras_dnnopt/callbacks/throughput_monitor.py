"""`ThroughputMonitor`: training samples per second, per epoch and running."""

import time

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.callbacks._hooks import (
    model_optimizer,
    retrace,
    skip_batch_end_hook,
)
from keras_dnnopt.utils.patching import MethodPatch
from keras_dnnopt.utils.validation import check_number


def _batch_size(data):
    """The leading dimension of the first tensor of a batch, as an int64 scalar."""
    for leaf in tf.nest.flatten(data):
        if leaf is None:
            continue
        if isinstance(leaf, tf.SparseTensor):
            return tf.cast(leaf.dense_shape[0], tf.int64)
        if isinstance(leaf, tf.RaggedTensor):
            return tf.cast(leaf.nrows(), tf.int64)
        return tf.cast(tf.shape(leaf)[0], tf.int64)
    return tf.constant(0, tf.int64)


class ThroughputMonitor(keras.callbacks.Callback):
    """Measures training throughput in samples per second and adds it to the logs.

    Samples are counted exactly, whatever the input (arrays, `tf.data` with a partial
    last batch, generators): in `on_train_begin` the callback wraps the model's
    `train_step` on the instance so that the traced step adds the batch size (the
    leading dimension of the first tensor of the batch) to a counter variable, and forces
    a retrace; `on_train_end` restores `train_step`. The counter is read once per epoch
    (and every `frequency` batches if set), so the cost is one scalar add per step.

    The time of an epoch runs from `on_epoch_begin` to the end of its training steps
    (the start of validation, or `on_epoch_end`), so validation is not counted. The
    first epoch includes the tracing of the train function.

    Logs: the epoch logs get `log_key` (samples per second of that epoch); with
    `frequency`, the batch logs get the running rate of the epoch so far every
    `frequency` batches. Attributes: `epoch_samples`, `epoch_seconds` and
    `samples_per_second` (one entry per epoch), `total_samples`, `total_seconds` and
    `running_samples_per_second` (over all epochs so far).

    Args:
        frequency: also log the running rate every `frequency` batches, an integer >= 1,
            or `None` for epoch logs only. Defaults to `None`.
        log_key: the key in the logs, a non-empty string. Defaults to
            `"samples_per_second"`.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    ```python
    monitor = ThroughputMonitor()
    history = model.fit(x, y, epochs=3, callbacks=[monitor])
    history.history["samples_per_second"], monitor.total_samples
    ```
    """

    def __init__(self, frequency=None, log_key="samples_per_second"):
        super().__init__()
        # tf_keras: the logs are not read, so they may stay tensors; without this, a batch
        # hook makes tf_keras convert every step's logs to NumPy (a host sync per step).
        self._supports_tf_logs = True
        if frequency is not None:
            frequency = check_number("frequency", frequency, low=1, integer=True)
        self.frequency = frequency
        if frequency is None:
            skip_batch_end_hook(self)  # nothing to do per batch: keep fit asynchronous
        if not isinstance(log_key, str) or not log_key:
            raise ValueError(
                f"Argument `log_key` must be a non-empty string. Received: log_key={log_key!r}"
            )
        self.log_key = log_key
        self.epoch_samples = []
        self.epoch_seconds = []
        self.samples_per_second = []
        self.total_samples = 0
        self.total_seconds = 0.0
        self._counter = None
        self._patch = None
        self._counted = 0
        self._epoch_start = None
        self._train_end = None
        self._batches = 0

    @property
    def running_samples_per_second(self):
        """Samples per second over all epochs so far (0.0 before the first epoch ends)."""
        return self.total_samples / self.total_seconds if self.total_seconds > 0 else 0.0

    def _read_counter(self):
        return int(self._counter.numpy())

    def on_train_begin(self, logs=None):
        model_optimizer(self)  # checks the model
        if self._counter is None:
            self._counter = tf.Variable(0, trainable=False, dtype=tf.int64)
        counter = self._counter

        def make_wrapper(train_step):
            def wrapped(data):
                counter.assign_add(_batch_size(data))
                return train_step(data)

            return wrapped

        self._counted = self._read_counter()
        self._patch = MethodPatch(self.model, "train_step", make_wrapper)
        retrace(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._batches = 0
        self._train_end = None
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.frequency is None or self._batches % self.frequency or logs is None:
            return
        seconds = time.perf_counter() - self._epoch_start
        samples = self._read_counter() - self._counted
        if seconds > 0:
            logs[self.log_key] = samples / seconds

    def on_test_begin(self, logs=None):
        if self._epoch_start is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end if self._train_end is not None else time.perf_counter()
        seconds = end - self._epoch_start
        counted = self._read_counter()
        samples, self._counted = counted - self._counted, counted
        rate = samples / seconds if seconds > 0 else 0.0
        self.epoch_samples.append(samples)
        self.epoch_seconds.append(seconds)
        self.samples_per_second.append(rate)
        self.total_samples += samples
        self.total_seconds += seconds
        self._epoch_start = None
        if logs is not None:
            logs[self.log_key] = rate

    def on_train_end(self, logs=None):
        if self._patch is not None:
            self._patch.restore()
            self._patch = None
            retrace(self.model)
