"""The bridge that lets keras-tuner tune models of either Keras (Keras 3 and tf_keras).

keras-tuner 1.4.x imports `keras` itself: whenever Keras 3 is installed (TensorFlow >= 2.16
always installs it) it works against Keras 3, even when TensorFlow's `tf.keras` is tf_keras
(`TF_USE_LEGACY_KERAS=1`). A tf_keras model then trips over three Keras-3-only spots in
`keras_tuner.Tuner`:

1. `Tuner._try_build` checks `isinstance(model, keras.Model)` against Keras 3's class and
   rejects the model ("Expected the model-building function ... to return a valid Keras
   Model instance"); it also clears Keras 3's session, not tf_keras'.
2. `Tuner.run_trial` passes Keras 3 callbacks (`TunerCallback`, `SaveBestEpoch`) to
   `model.fit`, which tf_keras' `CallbackList` cannot drive (they lack its private hooks,
   e.g. `_implements_train_batch_hooks`).
3. The `History` returned by `fit` is tf_keras', which `tuner_utils.validate_trial_results`
   does not recognise (it checks for Keras 3's `History`).

Rather than monkeypatching keras-tuner (which would change it for every other user in the
process), `TunerBridge` is a mixin that overrides those three methods of the `Tuner`
instances that keras_dnnopt creates: it checks the model against the Keras in use
(`keras_dnnopt.backend.check_model`, with its clear message for a model of the other Keras),
clears that Keras' session, wraps keras-tuner's callbacks in a tf_keras `Callback` that
forwards every hook, and hands keras-tuner's own `History` class the epoch logs. On Keras 3
the same code runs and changes nothing but the error message. The overridden methods are
private to keras-tuner; `setup.cfg` pins `keras-tuner<1.5`, and `tests/test_tuning.py`
exercises every tuner kind on both Kerases, so a change upstream shows up as a test failure.

A fourth, Keras-independent fix: `Tuner._configure_tensorboard_dir` imports `tensorboard`
unconditionally on the TensorFlow backend, but TensorFlow 2.21 no longer installs it, so every
trial failed with `ModuleNotFoundError`. The override only goes upstream when a `TensorBoard`
callback is actually given (the only case that needs it).
"""

import gc

import keras_tuner as kt
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.backend import config as kt_config

# keras-tuner's own Keras (Keras 3 whenever installed): the classes its isinstance checks use.
from keras_tuner.src.backend import keras as kt_keras
from keras_tuner.src.engine import tuner as kt_tuner_module
from keras_tuner.src.engine import tuner_utils

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, check_model, keras


class _ForwardingCallback(keras.callbacks.Callback):
    """Runs one of keras-tuner's Keras 3 callbacks inside a tf_keras `fit`, forwarding every
    hook (tf_keras' `CallbackList` only drives tf_keras callbacks)."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _forward(hook):
    def method(self, *args, **kwargs):
        return getattr(self.callback, hook)(*args, **kwargs)

    method.__name__ = hook
    return method


for _hook in ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
              "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
              "on_test_batch_begin", "on_test_batch_end", "on_predict_begin",
              "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"):
    setattr(_ForwardingCallback, _hook, _forward(_hook))
del _hook


def _bridge_callbacks(callbacks):
    """Wraps keras-tuner's Keras 3 callbacks for a tf_keras `fit`; others pass unchanged."""
    if not USING_TF_KERAS or callbacks is None:
        return callbacks
    return [
        _ForwardingCallback(cb) if isinstance(cb, kt_keras.callbacks.Callback) else cb
        for cb in callbacks
    ]


def _bridge_results(results):
    """Gives keras-tuner a `History` it recognises: the tf_keras `History` of a fit becomes
    keras-tuner's (Keras 3) `History` holding the same per-epoch logs, so that keras-tuner
    still finds the best epoch (not only the last one)."""
    if isinstance(results, list):
        return [_bridge_results(r) for r in results]
    if USING_TF_KERAS and isinstance(results, keras.callbacks.History):
        history = kt_keras.callbacks.History()
        history.history = dict(results.history)
        history.epoch = list(results.epoch)
        return history
    return results


def check_built_model(model):
    """Checks what a model-building function returned, as a fatal keras-tuner error (which
    stops the search at once instead of counting a failed trial)."""
    try:
        return check_model(model, "model")
    except TypeError as error:
        raise kt.errors.FatalTypeError(
            f"The model-building function (or `HyperModel.build()`) must return a "
            f"{KERAS_NAME} model (`keras_dnnopt.backend.keras.Model`). {error}"
        ) from error


class TunerBridge:
    """Mixin making a `keras_tuner.Tuner` subclass tune models of the Keras in use.

    Put it first among the bases: `class RandomSearch(TunerBridge, keras_tuner.RandomSearch)`.
    See the module docstring for what it overrides and why.
    """

    def _try_build(self, hp):
        # Mirrors keras_tuner 1.4.8 `Tuner._try_build`, checking against the Keras in use.
        keras.backend.clear_session()
        gc.collect()
        model = check_built_model(self._build_hypermodel(hp))
        size = kt_tuner_module.maybe_compute_model_size(model)
        if self.max_model_size and size > self.max_model_size:
            raise kt.errors.FailedTrialError(f"Oversized model: {size} parameters. Skip model.")
        return model

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # Mirrors keras_tuner 1.4.8 `Tuner._build_and_fit_model`, bridging the callbacks in
        # and the History out.
        if "callbacks" in kwargs:
            kwargs["callbacks"] = _bridge_callbacks(kwargs["callbacks"])
        hp = trial.hyperparameters
        model = self._try_build(hp)
        results = _bridge_results(self.hypermodel.fit(hp, model, *args, **kwargs))
        if kt_config.multi_backend():
            # Read back by `load_model` / Hyperband to rebuild the model before loading weights.
            kt_utils.save_json(self._get_build_config_fname(trial.trial_id),
                               model.get_build_config())
        tuner_utils.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # Upstream imports tensorboard even without a TensorBoard callback; TF 2.21 does not
        # install it.
        if any(cb.__class__.__name__ == "TensorBoard" for cb in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)


class RandomSearch(TunerBridge, kt.RandomSearch):
    """`keras_tuner.RandomSearch` that also tunes tf_keras models (same arguments)."""


class Hyperband(TunerBridge, kt.Hyperband):
    """`keras_tuner.Hyperband` that also tunes tf_keras models (same arguments)."""


class BayesianOptimization(TunerBridge, kt.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` that also tunes tf_keras models (same arguments)."""


TUNERS = {
    "random": RandomSearch,
    "hyperband": Hyperband,
    "bayesian": BayesianOptimization,
}
