"""`LearningRateMonitor`: puts the optimizer's current learning rate into the logs."""

from keras_dnnopt.backend import keras
from keras_dnnopt.callbacks._hooks import (
    check_bool,
    current_learning_rate,
    model_optimizer,
    skip_batch_end_hook,
)


class LearningRateMonitor(keras.callbacks.Callback):
    """Writes the optimizer's current learning rate into the logs as `learning_rate`.

    At the end of every epoch (and of every batch with `log_every_batch=True`) the
    learning rate is added to the logs, so that `History`, `CSVLogger` and `TensorBoard`
    record it: place this callback *before* them in `callbacks=[...]` (Keras adds its
    own `History` last). A float learning rate is read from the optimizer's variable; a
    `LearningRateSchedule` is evaluated at the optimizer's `iterations`, i.e. the rate
    the next step will use (the convention of Keras' `TensorBoard`): after epoch `e` of
    `n` steps each, that is `schedule(n * (e + 1))`.

    Args:
        log_every_batch: whether to add the rate to the batch logs too (one read of
            the optimizer's state per batch). Defaults to `False`.

    Raises:
        ValueError: if `log_every_batch` is not a bool.

    Example:

    ```python
    history = model.fit(x, y, epochs=5, callbacks=[LearningRateMonitor()])
    history.history["learning_rate"]  # one float per epoch
    ```
    """

    def __init__(self, log_every_batch=False):
        super().__init__()
        # tf_keras: the logs are not read, so they may stay tensors; without this, a batch
        # hook makes tf_keras convert every step's logs to NumPy (a host sync per step).
        self._supports_tf_logs = True
        self.log_every_batch = check_bool("log_every_batch", log_every_batch)
        if not self.log_every_batch:
            skip_batch_end_hook(self)  # nothing to do per batch: keep fit asynchronous

    def _log(self, logs):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(model_optimizer(self))

    def on_train_batch_end(self, batch, logs=None):
        if self.log_every_batch:
            self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log(logs)
