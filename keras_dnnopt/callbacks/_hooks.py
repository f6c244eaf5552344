"""Shared machinery of the callbacks: reaching into the optimizer and the traced step.

A callback only sees Python-side hooks, while the training step is a traced
`tf.function`: a Python float read by the optimizer (`momentum`, `beta_1`) is baked
into the trace, and the gradients never reach a callback. The callbacks therefore
patch a method or attribute of the *instance* (the optimizer's `apply_gradients`,
the model's `train_step` or `compute_loss`), then force a retrace of the train
function; `fit` looks up `model.train_function` at every step on both Kerases, so
the next step runs the patched trace. `on_train_end` undoes the patches and
retraces again, so that a later `fit` without the callback runs an unpatched step.
"""

import contextlib
import threading

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf

_SCHEDULE_TYPE = keras.optimizers.schedules.LearningRateSchedule


def base_optimizer(optimizer):
    """The optimizer that holds the hyper-parameters: the inner optimizer of a
    `LossScaleOptimizer`, else the optimizer itself."""
    return getattr(optimizer, "inner_optimizer", None) or optimizer


def model_optimizer(callback):
    """The compiled optimizer of the callback's model, after checking the model."""
    model = check_model(callback.model)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"{type(callback).__name__} needs a compiled model: call `model.compile("
            "optimizer=..., loss=...)` before `fit`."
        )
    return optimizer


def _raw_learning_rate(optimizer):
    optimizer = base_optimizer(optimizer)
    if hasattr(optimizer, "_learning_rate"):
        return optimizer._learning_rate
    hyper = getattr(optimizer, "_hyper", None)  # tf_keras legacy optimizers
    if isinstance(hyper, dict) and "learning_rate" in hyper:
        return hyper["learning_rate"]
    return optimizer.learning_rate


def _is_variable(value):
    return isinstance(value, (tf.Variable, getattr(keras, "Variable", tf.Variable)))


def learning_rate_is_schedule(optimizer):
    """Whether the learning rate is a schedule or a callable (not settable)."""
    lr = _raw_learning_rate(optimizer)
    return isinstance(lr, _SCHEDULE_TYPE) or (callable(lr) and not _is_variable(lr))


def current_learning_rate(optimizer):
    """The learning rate as a Python float; a schedule is evaluated at the optimizer's
    `iterations` (the rate its next step uses, as Keras' own TensorBoard logs it)."""
    lr = _raw_learning_rate(optimizer)
    if isinstance(lr, _SCHEDULE_TYPE):
        lr = lr(base_optimizer(optimizer).iterations)
    elif callable(lr) and not _is_variable(lr):
        lr = lr()
    return float(np.asarray(tf.convert_to_tensor(lr)))


def set_learning_rate(optimizer, value):
    """Assigns the optimizer's learning-rate variable (the setter of both Kerases)."""
    base_optimizer(optimizer).learning_rate = float(value)


def check_settable_learning_rate(optimizer, who):
    if learning_rate_is_schedule(optimizer):
        raise ValueError(
            f"{who} sets the learning rate at every step, but the optimizer's learning rate "
            f"is a schedule ({type(_raw_learning_rate(optimizer)).__name__}), which cannot be "
            "assigned. Compile the model with a float learning rate for the test, e.g. "
            "`optimizer=keras.optimizers.SGD(learning_rate=1e-3)`. Received: "
            f"learning_rate={_raw_learning_rate(optimizer)!r}"
        )


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"Argument `{name}` must be a bool. Received: {name}={value!r}")
    return value


def retrace(model):
    """Makes `fit` trace a new train function at its next step."""
    model.make_train_function(force=True)


class DynamicHyperparameter:
    """A float hyper-parameter of an optimizer computed in the traced step.

    Stands in for a Python float attribute such as SGD's `momentum` or Adam's `beta_1`:
    wherever the optimizer turns it into a tensor (`tf.cast`, `ops.cast`, arithmetic),
    it gives `value_fn()`, evaluated inside the trace. A comparison with a Python number
    uses `reference` (the configured float), because optimizers branch on it in Python
    to decide whether the feature is on (Keras 3 SGD: `if self.momentum != 0`), which a
    tensor could not answer while tracing.

    Optimizers read the attribute once per *variable* (SGD's `update_step`), so a bare
    stand-in would put `value_fn`'s ops into the step once per variable (83 copies for
    `mobilenet_v1(alpha=0.25)`: the graph of the train step nearly doubled). Inside
    `computed_once()`, which the owner wraps around one optimizer step, the value is
    computed once per graph and reused; outside it, at every read.
    """

    def __init__(self, value_fn, reference):
        self._value_fn = value_fn
        self.reference = float(reference)
        # {thread id: {graph (None when eager): the value tensor}} for the threads inside
        # `computed_once()` (tf.distribute runs replicas in threads).
        self._caches = {}

    @contextlib.contextmanager
    def computed_once(self):
        """Within the block, every read in one graph gives one tensor, computed once.

        Wrap it around exactly one optimizer step: the value must not change inside the
        block (here: a function of `optimizer.iterations`, which the optimizer increments
        at the end of its step). A nested block starts a cache of its own, and the outer
        one comes back on exit.
        """
        thread = threading.get_ident()
        previous = self._caches.get(thread)
        self._caches[thread] = {}
        try:
            yield
        finally:
            if previous is None:
                self._caches.pop(thread, None)
            else:
                self._caches[thread] = previous

    def value(self):
        cache = self._caches.get(threading.get_ident())
        if cache is None:
            return tf.cast(self._value_fn(), tf.float32)
        # Keyed by graph: a tensor made in one graph (say a `tf.cond` branch, where Keras 3
        # runs the update under gradient accumulation) cannot be used in another.
        graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
        if graph not in cache:
            cache[graph] = tf.cast(self._value_fn(), tf.float32)
        return cache[graph]

    def __float__(self):
        return float(self.value())

    def __repr__(self):
        return f"<DynamicHyperparameter reference={self.reference}>"

    def __eq__(self, other):
        return self.reference == other

    def __ne__(self, other):
        return self.reference != other

    def __lt__(self, other):
        return self.reference < other

    def __le__(self, other):
        return self.reference <= other

    def __gt__(self, other):
        return self.reference > other

    def __ge__(self, other):
        return self.reference >= other

    def __hash__(self):
        return id(self)

    def __neg__(self):
        return -self.value()

    def __add__(self, other):
        return self.value() + other

    def __radd__(self, other):
        return other + self.value()

    def __sub__(self, other):
        return self.value() - other

    def __rsub__(self, other):
        return other - self.value()

    def __mul__(self, other):
        return self.value() * other

    def __rmul__(self, other):
        return other * self.value()

    def __truediv__(self, other):
        return self.value() / other

    def __rtruediv__(self, other):
        return other / self.value()

    def __pow__(self, other):
        return self.value() ** other

    def __rpow__(self, other):
        return other ** self.value()


def _convert_dynamic_hyperparameter(value, dtype=None, name=None, as_ref=False):
    del name, as_ref
    tensor = value.value()
    return tf.cast(tensor, dtype) if dtype is not None else tensor


tf.register_tensor_conversion_function(DynamicHyperparameter, _convert_dynamic_hyperparameter)


def skip_batch_end_hook(callback):
    """Makes Keras see `callback.on_train_batch_end` as not implemented (for this instance).

    Keras runs `fit` asynchronously, without a host sync after every step, only while no
    callback implements a batch-end hook (Keras 3: `CallbackList._configure_async_dispatch`;
    tf_keras: `Callback._implements_train_batch_hooks`). Both test the `_is_default` flag of
    the method, so binding the base class's default method on the instance keeps a
    callback that has nothing to do per batch from costing a sync per step.
    """
    callback.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(callback)
