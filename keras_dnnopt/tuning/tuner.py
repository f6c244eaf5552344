"""`tune`: a hyperparameter search with keras-tuner, on Keras 3 and tf_keras."""

import collections
import tempfile

import keras_tuner as kt
import numpy as np

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.tuning._compat import TUNERS
from keras_dnnopt.tuning.hypermodel import MobileNetHyperModel
from keras_dnnopt.utils.validation import check_choice, check_number

TuneResult = collections.namedtuple("TuneResult", ["model", "hyperparameters", "tuner"])
TuneResult.__doc__ = """What `tune` returns: `(model, hyperparameters, tuner)`.

`model` is the best trial's model with the weights of its best epoch, compiled; `hyperparameters`
the best `keras_tuner.HyperParameters` (`.values` is a dict); `tuner` the keras-tuner tuner, for
`tuner.results_summary()`, `tuner.oracle.trials` or `tuner.get_best_models(n)`."""

_DEFAULT_MAX_EPOCHS = 10


def _default_hypermodel(x, y):
    """A `MobileNetHyperModel` fitting the arrays `x` (images) and `y` (labels)."""
    if isinstance(x, tf.data.Dataset) or y is None:
        raise ValueError(
            "Argument `hypermodel` is needed when `x` is a tf.data.Dataset (or `y` is None): "
            "the default MobileNetHyperModel reads the input shape and classes from arrays. "
            "Pass `hypermodel=MobileNetHyperModel(input_shape, num_classes)`. "
            f"Received: x of type {type(x).__name__}, y={type(y).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(
            "Argument `x` must be a batch of images `(samples, height, width, channels)` for "
            "the default MobileNetHyperModel (add a channel axis to grayscale images: "
            f"`x[..., None]`). Received: x.shape={x.shape}")
    if y.ndim == 2 and y.shape[1] > 1:
        num_classes, loss = y.shape[1], "categorical_crossentropy"
    else:
        num_classes, loss = int(y.max()) + 1, "sparse_categorical_crossentropy"
    return MobileNetHyperModel(x.shape[1:], num_classes, num_train_samples=len(x), loss=loss)


def tune(x, y=None, validation_data=None, tuner="random", max_trials=10, directory=None,
         project_name="keras_dnnopt_tuning", hypermodel=None, objective="val_accuracy",
         overwrite=False, seed=None, fit_kwargs=None, verbose=0, **tuner_kwargs):
    """Searches hyperparameters with keras-tuner and returns the best model.

    Runs keras-tuner's `RandomSearch` (`"random"`), `Hyperband` (`"hyperband"`) or
    `BayesianOptimization` (`"bayesian"`) over `hypermodel`, training each trial on
    `(x, y)` and scoring it on `validation_data`. Works on Keras 3 and on tf_keras (where
    plain keras-tuner 1.4 rejects the models) through the tuners of
    `keras_dnnopt.tuning` (`RandomSearch`, `Hyperband`, `BayesianOptimization`).

    Args:
        x: the training inputs (arrays or a tf.data.Dataset, as for `model.fit`).
        y: the training targets (None with a dataset).
        validation_data: `(x_val, y_val)` or a dataset, the data the objective is measured
            on (needed for a `val_` objective unless `fit_kwargs` has `validation_split`).
            Defaults to None.
        tuner: `"random"`, `"hyperband"` or `"bayesian"`. Defaults to `"random"`.
        max_trials: the largest number of trials (models tried), an int >= 1; for Hyperband a
            cap on top of its own schedule (`max_epochs`, `factor`). Defaults to 10.
        directory: where keras-tuner keeps the trials; None makes a fresh temporary directory.
            Defaults to None.
        project_name: the sub-directory of this search. Defaults to `"keras_dnnopt_tuning"`.
        hypermodel: a `keras_tuner.HyperModel` or a function `build(hp) -> compiled model`;
            None uses `MobileNetHyperModel` sized for `x` and `y` (arrays of images and
            integer or one-hot labels). Defaults to None.
        objective: the metric to optimise (name or `keras_tuner.Objective`); names ending in
            `loss`/`error` are minimised, others maximised. Defaults to `"val_accuracy"`.
        overwrite: whether to start afresh rather than resume a project found in
            `directory/project_name`. Defaults to False.
        seed: the seed of the tuner's sampling and of Keras' weights initialisation
            (`keras.utils.set_random_seed`), or None. Defaults to None.
        fit_kwargs: more keyword arguments of `fit` for every trial, e.g.
            `{"epochs": 3, "batch_size": 32, "callbacks": [...]}` for a `build` function
            (`MobileNetHyperModel` takes `epochs` and `batch_size` from its search space).
            Defaults to None.
        verbose: the verbosity of the search and of `fit`. Defaults to 0.
        **tuner_kwargs: passed to the keras-tuner class, e.g. `hyperparameters=`,
            `tune_new_entries=`, `executions_per_trial=`, `max_epochs=` and `factor=` for
            Hyperband (`max_epochs` defaults to the hypermodel's largest `epochs`, or 10, and
            at least `factor`, which defaults to 3).

    Returns:
        A `TuneResult` `(model, hyperparameters, tuner)`: the best model (trained, best
        epoch's weights), its `keras_tuner.HyperParameters` and the tuner.

    Raises:
        ValueError: for an unknown `tuner` name, `max_trials < 1`, a `val_` objective with
            no validation data, or default-hypermodel data that are not image arrays.
        TypeError: if `hypermodel` is neither a HyperModel nor callable, or builds something
            that is not a model of the Keras in use.
        RuntimeError: if every trial failed (with the last failure's traceback).

    Example:

    ```python
    model, hp, tuner = tune(x_train, y_train, validation_data=(x_val, y_val),
                            tuner="bayesian", max_trials=20, seed=0)
    print(hp.values)
    ```

    Reference:
        - [O'Malley et al., 2019. KerasTuner](https://github.com/keras-team/keras-tuner)
        - [Li et al., 2018. Hyperband](https://arxiv.org/abs/1603.06560)
    """
    check_choice("tuner", tuner, tuple(TUNERS))
    max_trials = check_number("max_trials", max_trials, low=1, integer=True)
    fit_kwargs = dict(fit_kwargs or {})
    objective_name = objective if isinstance(objective, str) else getattr(objective, "name", "")
    if (str(objective_name).startswith("val_") and validation_data is None
            and not fit_kwargs.get("validation_split")):
        raise ValueError(
            f"Argument `validation_data` is needed for objective={objective_name!r} (or give "
            "`fit_kwargs={'validation_split': ...}`, or an objective without 'val_'). "
            "Received: validation_data=None")
    if hypermodel is None:
        hypermodel = _default_hypermodel(x, y)
    elif not (isinstance(hypermodel, kt.HyperModel) or callable(hypermodel)):
        raise TypeError(
            "Argument `hypermodel` must be a keras_tuner.HyperModel or a function "
            f"build(hp) -> model. Received: hypermodel={hypermodel!r}")

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="keras_dnnopt_tuning_")
    if tuner == "hyperband":
        # At least `factor` epochs: with fewer, Hyperband has a single bracket of one trial.
        tuner_kwargs.setdefault("max_epochs", max(
            getattr(hypermodel, "max_epochs", _DEFAULT_MAX_EPOCHS),
            tuner_kwargs.get("factor", 3)))
    else:
        tuner_kwargs["max_trials"] = max_trials
    search = TUNERS[tuner](hypermodel=hypermodel, objective=objective, directory=directory,
                           project_name=project_name, overwrite=overwrite, seed=seed,
                           **tuner_kwargs)
    if tuner == "hyperband":
        # HyperbandOracle takes no `max_trials`, but the base Oracle stops the search once
        # `max_trials` trials exist.
        search.oracle.max_trials = max_trials

    if validation_data is not None:
        fit_kwargs["validation_data"] = validation_data
    fit_kwargs.setdefault("verbose", verbose)
    search.search(x, y, **fit_kwargs)

    trials = list(search.oracle.trials.values())
    if not any(t.status == kt.engine.trial.TrialStatus.COMPLETED for t in trials):
        last = trials[-1].message if trials else "no trial ran"
        raise RuntimeError(f"Every trial of the search failed. The last failure:\n{last}")
    best_hp = search.get_best_hyperparameters(1)[0]
    best_model = search.get_best_models(1)[0]
    return TuneResult(best_model, best_hp, search)
