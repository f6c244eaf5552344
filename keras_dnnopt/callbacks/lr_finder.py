"""`LRFinder`: the learning-rate range test, with the model and optimizer restored after."""

import math
import warnings

import numpy as np

from keras_dnnopt.backend import check_model, keras, optimizer_variables, tf
from keras_dnnopt.callbacks._hooks import (
    base_optimizer,
    check_settable_learning_rate,
    current_learning_rate,
    model_optimizer,
    retrace,
    set_learning_rate,
)
from keras_dnnopt.utils.figures import check_save_path, new_figure, require_matplotlib, save_figure
from keras_dnnopt.utils.patching import MethodPatch
from keras_dnnopt.utils.validation import check_choice, check_number

SUGGESTION_METHODS = ("steepest", "min_loss")


def _optimizer_is_built(optimizer):
    return bool(getattr(optimizer, "built", False) or getattr(optimizer, "_built", False))


def _build_optimizer(optimizer, variables):
    """Creates the optimizer's slots now, with their initial values, so that they can be
    snapshotted (both Kerases otherwise create them while tracing the first step)."""
    if _optimizer_is_built(optimizer) or not hasattr(optimizer, "build"):
        return
    try:
        with tf.name_scope(optimizer.name):
            optimizer.build(variables)
        if hasattr(optimizer, "built"):
            optimizer.built = True
    except Exception:  # an optimizer that cannot be built early
        pass  # its slots will be created by the first step and reset to zeros after


class LRFinder(keras.callbacks.Callback):
    """The learning-rate range test: sweeps the learning rate up and records the loss.

    Over `num_steps` training steps the learning rate grows exponentially from
    `min_learning_rate` to `max_learning_rate`:
    `lr_i = min_learning_rate * (max_learning_rate / min_learning_rate) ** (i / (num_steps - 1))`
    (assigned to the optimizer's learning-rate variable before each batch). After each
    step the callback records the batch loss (the loss of that step, not Keras' running
    mean of the epoch) and its exponentially smoothed, bias-corrected value
    `avg_i = smoothing * avg_{i-1} + (1 - smoothing) * loss_i`,
    `smoothed_i = avg_i / (1 - smoothing ** (i + 1))`. Training stops after `num_steps`,
    or as soon as the smoothed loss exceeds `divergence_threshold` times the lowest one
    (or is not finite). On train end the model's weights and the optimizer's state (all
    its variables: iterations, slots, learning rate) are restored to their values before
    the test; if the optimizer had not created its slots yet, they are created before the
    test with their initial values and returned to them after.

    The batch loss is read by wrapping the model's `compute_loss` on the instance (the
    `train_step` of both Kerases calls it); a custom `train_step` that bypasses it falls
    back to `logs["loss"]` with a warning.

    Then `suggestion()` proposes a learning rate, `plot()` draws the curve, and
    `learning_rates`, `losses` and `smoothed_losses` hold the record.

    Args:
        min_learning_rate: the first learning rate, a float > 0. Defaults to 1e-7.
        max_learning_rate: the last learning rate, a float > `min_learning_rate`.
            Defaults to 10.0.
        num_steps: the number of training steps of the sweep, an integer >= 2.
            Defaults to 100.
        smoothing: the factor of the exponential moving average of the loss, in
            [0, 1); 0 keeps the raw loss. Defaults to 0.98.
        divergence_threshold: stop when the smoothed loss exceeds this multiple of the
            lowest smoothed loss, a float > 1. Defaults to 4.0.

    Raises:
        ValueError: if an argument is out of range; at the start of `fit`, if the
            optimizer's learning rate is a schedule (compile with a float learning rate
            for the test), or if the model has no weights yet.

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    finder = LRFinder(min_learning_rate=1e-6, max_learning_rate=1.0, num_steps=200)
    finder.find(model, x, y, batch_size=64)
    learning_rate = finder.suggestion()
    finder.plot(path="lr_find.png")
    ```

    Reference:
        Smith, [Cyclical Learning Rates for Training Neural Networks](
        https://arxiv.org/abs/1506.01186), WACV 2017.
    """

    def __init__(self, min_learning_rate=1e-7, max_learning_rate=10.0, num_steps=100,
                 smoothing=0.98, divergence_threshold=4.0):
        super().__init__()
        self.min_learning_rate = check_number("min_learning_rate", min_learning_rate, low=0.0,
                                              low_inclusive=False)
        self.max_learning_rate = check_number("max_learning_rate", max_learning_rate, low=0.0,
                                              low_inclusive=False)
        if self.max_learning_rate <= self.min_learning_rate:
            raise ValueError(
                "Argument `max_learning_rate` must be > `min_learning_rate`. Received: "
                f"min_learning_rate={min_learning_rate!r}, max_learning_rate={max_learning_rate!r}"
            )
        self.num_steps = check_number("num_steps", num_steps, low=2, integer=True)
        self.smoothing = check_number("smoothing", smoothing, low=0.0, high=1.0,
                                      high_inclusive=False)
        self.divergence_threshold = check_number("divergence_threshold", divergence_threshold,
                                                 low=1.0, low_inclusive=False)
        self.learning_rates = []
        self.losses = []
        self.smoothed_losses = []
        self._reset_state()

    def _reset_state(self):
        self._weights = None
        self._optimizer_state = None
        self._original_learning_rate = None
        self._loss_patch = None
        self._loss_variable = None
        self._loss_traced = False
        self._warned = False
        self._average = 0.0
        self._best = math.inf

    def learning_rate_at(self, step):
        """The learning rate of sweep step `step` (0-based): the exponential closed form."""
        ratio = self.max_learning_rate / self.min_learning_rate
        return self.min_learning_rate * ratio ** (step / (self.num_steps - 1))

    # ------------------------------------------------------------------ the test

    def find(self, model, x, y=None, batch_size=32, **fit_kwargs):
        """Runs the range test: `model.fit` with enough epochs for `num_steps` steps.

        Args:
            model: a compiled Keras model (with a float learning rate).
            x, y: the training data, as for `model.fit` (`y=None` for a dataset).
            batch_size: the batch size for array inputs (ignored for a dataset or a
                generator). Defaults to 32.
            **fit_kwargs: more `fit` arguments (`callbacks` are added after this one;
                `epochs` is set here). `verbose` defaults to 0.

        Returns:
            This `LRFinder`, with the record filled in.
        """
        check_model(model)
        if "epochs" in fit_kwargs:
            raise ValueError(
                "`LRFinder.find` sets `epochs` itself (enough for `num_steps` steps); pass "
                f"`num_steps` to LRFinder instead. Received: epochs={fit_kwargs['epochs']!r}"
            )
        callbacks = [self, *(fit_kwargs.pop("callbacks", None) or [])]
        fit_kwargs.setdefault("verbose", 0)
        steps = fit_kwargs.get("steps_per_epoch")
        if isinstance(x, tf.data.Dataset):
            cardinality = int(x.cardinality())
            steps = steps or (cardinality if cardinality > 0 else None)
        else:
            leaves = tf.nest.flatten(x)
            shape = getattr(leaves[0], "shape", None) if leaves else None
            if shape is not None and len(shape) > 0:  # arrays or tensors
                fit_kwargs.setdefault("batch_size", batch_size)
                steps = steps or math.ceil(int(shape[0]) / fit_kwargs["batch_size"])
            elif hasattr(x, "__len__"):  # a PyDataset / Sequence: len() counts batches
                steps = steps or len(x)
        # Every epoch has at least one step, and the callback stops fit at `num_steps`.
        epochs = math.ceil(self.num_steps / steps) if steps else self.num_steps
        model.fit(x, y, epochs=epochs, callbacks=callbacks, **fit_kwargs)
        return self

    def on_train_begin(self, logs=None):
        optimizer = model_optimizer(self)
        check_settable_learning_rate(optimizer, "LRFinder")
        if not self.model.weights:
            raise ValueError(
                "LRFinder needs a built model to snapshot and restore its weights: give the "
                "model an `Input` (or call it on a batch) before `fit`."
            )
        self.learning_rates, self.losses, self.smoothed_losses = [], [], []
        self._reset_state()
        self._weights = [np.array(w) for w in self.model.get_weights()]
        _build_optimizer(base_optimizer(optimizer), self.model.trainable_variables)
        self._optimizer_state = {
            id(v): (v, np.array(v.numpy())) for v in optimizer_variables(optimizer)
        }
        self._original_learning_rate = current_learning_rate(optimizer)

        self._loss_variable = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        loss_variable = self._loss_variable

        def make_wrapper(compute_loss):
            def wrapped(*args, **kwargs):
                loss = compute_loss(*args, **kwargs)
                self._loss_traced = True
                loss_variable.assign(tf.cast(loss, tf.float32))
                return loss

            return wrapped

        self._loss_patch = MethodPatch(self.model, "compute_loss", make_wrapper)
        retrace(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        step = len(self.learning_rates)
        learning_rate = self.learning_rate_at(min(step, self.num_steps - 1))
        set_learning_rate(self.model.optimizer, learning_rate)
        self.learning_rates.append(learning_rate)

    def on_train_batch_end(self, batch, logs=None):
        if self._loss_traced:
            loss = float(self._loss_variable.numpy())
        else:
            if not self._warned:
                warnings.warn(
                    "LRFinder: the model's train_step does not call `compute_loss`, so the "
                    "recorded loss is `logs['loss']`, Keras' running mean over the epoch, "
                    "which lags the per-step loss.",
                    stacklevel=2,
                )
                self._warned = True
            loss = float((logs or {}).get("loss", math.nan))
        step = len(self.losses)
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        smoothed = self._average / (1.0 - self.smoothing ** (step + 1))
        self.losses.append(loss)
        self.smoothed_losses.append(smoothed)
        if not math.isfinite(smoothed):
            self.model.stop_training = True
            return
        self._best = min(self._best, smoothed)
        if step > 0 and smoothed > self.divergence_threshold * self._best:
            self.model.stop_training = True
        if len(self.losses) >= self.num_steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._weights is None:
            return
        optimizer = self.model.optimizer
        self.model.set_weights(self._weights)
        for variable in optimizer_variables(optimizer):
            saved = self._optimizer_state.get(id(variable))
            if saved is not None and saved[0] is variable:
                variable.assign(saved[1])
            else:  # created during the test: back to a fresh state
                variable.assign(np.zeros_like(np.asarray(variable.numpy())))
        set_learning_rate(optimizer, self._original_learning_rate)
        if self._loss_patch is not None:
            self._loss_patch.restore()
        self._weights = self._optimizer_state = None
        self._loss_patch = None
        retrace(self.model)

    # ------------------------------------------------------------------ results

    def suggestion(self, method="steepest"):
        """A learning rate suggested by the recorded curve.

        Args:
            method: `"steepest"`: the learning rate where the smoothed loss falls
                fastest with respect to `log(lr)` (the most negative
                `np.gradient(smoothed_losses, log(learning_rates))`), looked for before
                the lowest smoothed loss; `"min_loss"`: the learning rate of the lowest
                smoothed loss divided by 10. Defaults to `"steepest"`.

        Returns:
            The learning rate, a Python float.

        Raises:
            ValueError: if `method` is unknown, or fewer than 3 steps were recorded.
        """
        check_choice("method", method, SUGGESTION_METHODS)
        count = min(len(self.learning_rates), len(self.smoothed_losses))
        if count < 3:
            raise ValueError(
                "LRFinder.suggestion needs at least 3 recorded steps: run the range test "
                f"first (`find` or `fit(callbacks=[finder])`). Received: {count} steps"
            )
        lrs = np.asarray(self.learning_rates[:count], dtype="float64")
        smoothed = np.asarray(self.smoothed_losses[:count], dtype="float64")
        finite = np.isfinite(smoothed)
        lrs, smoothed = lrs[finite], smoothed[finite]
        best = int(np.argmin(smoothed))
        if method == "min_loss":
            return float(lrs[best] / 10.0)
        end = max(best + 1, 3)  # the descending part of the curve, at least 3 points
        slopes = np.gradient(smoothed[:end], np.log(lrs[:end]))
        return float(lrs[int(np.argmin(slopes))])

    def plot(self, ax=None, path=None):
        """Plots the (raw and smoothed) loss against the learning rate on a log scale.

        Args:
            ax: a matplotlib `Axes` to draw into, or `None` for a new figure. Defaults
                to `None`.
            path: a file to save the figure to (an extension matplotlib can write; none
                means PNG), or `None`. Written atomically. Defaults to `None`.

        Returns:
            The matplotlib `Figure`.

        Raises:
            ImportError: if matplotlib is not installed
                (`pip install keras_dnnopt[viz]`).
            ValueError: if `path` is not a file name matplotlib can write.
        """
        require_matplotlib("LRFinder.plot")
        check_save_path(path, "path")  # a bad file name fails before any drawing
        if ax is None:
            figure, (ax,) = new_figure("LRFinder.plot", figsize=(6.0, 4.0))
        else:
            figure = ax.figure
        count = min(len(self.learning_rates), len(self.losses))
        lrs = self.learning_rates[:count]
        ax.plot(lrs, self.losses[:count], alpha=0.3, label="loss")
        ax.plot(lrs, self.smoothed_losses[:count], label="smoothed loss")
        if count >= 3:
            suggested = self.suggestion()
            ax.axvline(suggested, color="tab:red", linestyle="--",
                       label=f"suggestion {suggested:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("Learning-rate range test")
        ax.legend()
        save_figure(figure, path, name="path")  # atomic: never a half-written image
        return figure
