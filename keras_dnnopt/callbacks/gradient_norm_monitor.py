"""`GradientNormMonitor`: the global norm of the training gradients, sampled every N steps."""

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.callbacks._hooks import model_optimizer, retrace
from keras_dnnopt.utils.patching import MethodPatch
from keras_dnnopt.utils.validation import check_number


class GradientNormMonitor(keras.callbacks.Callback):
    """Records the global norm of the training gradients every `frequency` steps.

    A callback never sees the gradients, so in `on_train_begin` this one wraps the
    optimizer's `apply_gradients` on the instance (the `train_step` of both Kerases goes
    through it) and forces a retrace. At optimizer steps `t` with `t % frequency == 0`
    the traced step computes `tf.linalg.global_norm` of the non-None gradients (under a
    `tf.cond`, so other steps only pay for the test) into a variable; `on_train_batch_end`
    reads it after those steps. The norm is that of the gradients as `train_step` hands
    them to the optimizer: before the optimizer's own `clipnorm`/`clipvalue`, and, under
    a `LossScaleOptimizer`, still multiplied by the loss scale. `on_train_end` restores
    the original `apply_gradients`.

    The sampled norm goes into the batch logs under `log_key` (for the progress bar and
    `TensorBoard(update_freq=...)`), the latest one into the epoch logs (for `History`),
    and every sample into `steps` and `grad_norms`.

    Args:
        frequency: sample every `frequency` optimizer steps, an integer >= 1. Defaults
            to 50.
        log_key: the key of the norm in the logs, a non-empty string. Defaults to
            `"grad_norm"`.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    ```python
    monitor = GradientNormMonitor(frequency=100)
    model.fit(x, y, epochs=3, callbacks=[monitor])
    monitor.steps, monitor.grad_norms  # optimizer step and norm of each sample
    ```
    """

    def __init__(self, frequency=50, log_key="grad_norm"):
        super().__init__()
        # tf_keras: the logs are not read, so they may stay tensors; without this, a batch
        # hook makes tf_keras convert every step's logs to NumPy (a host sync per step).
        self._supports_tf_logs = True
        self.frequency = check_number("frequency", frequency, low=1, integer=True)
        if not isinstance(log_key, str) or not log_key:
            raise ValueError(
                f"Argument `log_key` must be a non-empty string. Received: log_key={log_key!r}"
            )
        self.log_key = log_key
        self.steps = []
        self.grad_norms = []
        self._patch = None
        self._norm = None
        self._norm_step = None
        self._step = 0

    def _make_wrapper(self, optimizer):
        frequency = tf.constant(self.frequency, tf.int64)

        def make_wrapper(apply_gradients):
            def wrapped(grads_and_vars, *args, **kwargs):
                grads_and_vars = list(grads_and_vars)
                grads = [g for g, _ in grads_and_vars if g is not None]
                step = tf.cast(optimizer.iterations, tf.int64)

                def record():
                    norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads])
                    self._norm.assign(norm)
                    self._norm_step.assign(step)
                    return tf.constant(True)

                if grads:
                    tf.cond(tf.equal(step % frequency, 0), record, lambda: tf.constant(False))
                return apply_gradients(grads_and_vars, *args, **kwargs)

            return wrapped

        return make_wrapper

    def on_train_begin(self, logs=None):
        optimizer = model_optimizer(self)
        if self._norm is None:
            self._norm = tf.Variable(0.0, trainable=False, dtype=tf.float32)
            self._norm_step = tf.Variable(-1, trainable=False, dtype=tf.int64)
        self._step = int(optimizer.iterations.numpy())
        self._patch = MethodPatch(optimizer, "apply_gradients", self._make_wrapper(optimizer))
        retrace(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if (self._step - 1) % self.frequency:
            return
        step = int(self._norm_step.numpy())
        if step < 0 or (self.steps and self.steps[-1] == step):
            return
        norm = float(self._norm.numpy())
        self.steps.append(step)
        self.grad_norms.append(norm)
        if logs is not None:
            logs[self.log_key] = norm

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.grad_norms:
            logs[self.log_key] = self.grad_norms[-1]

    def on_train_end(self, logs=None):
        if self._patch is not None:
            self._patch.restore()
            self._patch = None
            retrace(self.model)
