"""`cross_validate`: k-fold cross-validation of a Keras model-building function."""

import collections
import weakref

import numpy as np

from keras_dnnopt.backend import check_model, keras
from keras_dnnopt.distribute.strategy import check_built_in_scope
from keras_dnnopt.utils.validation import check_number, check_positive

CrossValidationResult = collections.namedtuple(
    "CrossValidationResult", ["fold_metrics", "mean", "std", "folds", "models"])
CrossValidationResult.__doc__ = """What `cross_validate` returns.

- `fold_metrics`: a list of `k` dicts, `model.evaluate(..., return_dict=True)` on each
  held-out fold (e.g. `{"loss": ..., "accuracy": ...}`).
- `mean`, `std`: dicts of the mean and standard deviation over the folds of each metric
  (`np.std`, i.e. population standard deviation, ddof=0, as scikit-learn reports it).
- `folds`: a list of `k` `(train_indices, validation_indices)` pairs.
- `models`: the `k` trained models with `return_models=True`, else None."""


def _import_sklearn_model_selection():
    try:
        from sklearn import model_selection
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cross_validate needs scikit-learn (its KFold / StratifiedKFold). "
            "Install it with `pip install keras_dnnopt[data]`.") from error
    return model_selection


def _class_labels(y):
    """Integer class labels from integer labels or one-hot / probability rows."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y))


def _is_compiled(model):
    # Keras 3: `model.compiled`; tf_keras: `model._is_compiled`.
    return bool(getattr(model, "compiled", False) or getattr(model, "_is_compiled", False))


def cross_validate(build_fn, x, y, k=5, stratified=True, epochs=1, batch_size=32,
                   fit_kwargs=None, seed=None, shuffle=True, return_models=False):
    """k-fold cross-validation: trains a fresh model per fold and scores it on the held-out fold.

    The data are split with scikit-learn's `StratifiedKFold` (each fold keeps the class
    proportions of `y`) or `KFold`. For each fold, `build_fn()` makes a new compiled model,
    which is trained on the other `k - 1` folds with `fit(epochs=..., batch_size=...,
    **fit_kwargs)` and evaluated on the fold (`evaluate(return_dict=True)`). No weights are
    shared between folds: `build_fn` must return a new model each time.

    Args:
        build_fn: a function without arguments returning a new compiled `keras.Model` of the
            Keras in use, e.g. `lambda: hypermodel.build(best_hp)` after `tune`.
        x: the inputs, an array (or tensor) indexable along its first axis.
        y: the targets: integer class labels, one-hot rows, or (with `stratified=False`) any
            targets such as regression values.
        k: the number of folds, an int >= 2. Defaults to 5.
        stratified: whether to stratify the folds by class (classification labels only).
            Defaults to True.
        epochs: the training epochs per fold, an int >= 1. Defaults to 1.
        batch_size: the training batch size, an int >= 1. Defaults to 32.
        fit_kwargs: more keyword arguments of `fit` (e.g. `callbacks`). Defaults to None.
        seed: the seed of the shuffling of the folds and of Keras' initialisation (fold `i`
            calls `keras.utils.set_random_seed(seed + i)`), or None. Defaults to None.
        shuffle: whether to shuffle the samples before splitting. Defaults to True.
        return_models: whether to keep the `k` trained models in the result. Defaults to
            False.

    Returns:
        A `CrossValidationResult` `(fold_metrics, mean, std, folds, models)`.

    Raises:
        ValueError: if `k < 2`, `k` is larger than the number of samples or (stratified)
            than the samples of a class (naming the class and its count), `x` and `y` differ
            in length, or `build_fn` returns a model it already returned (weights shared
            across folds), an uncompiled model, or, under a `tf.distribute` strategy's
            scope, a model whose variables were not created in that scope (built before
            it).
        TypeError: if `build_fn` is not callable or returns something that is not a model
            of the Keras in use.
        ImportError: without scikit-learn (`pip install keras_dnnopt[data]`).

    Example:

    ```python
    def build():
        model = keras_dnnopt.models.mobilenet_v1((8, 8, 1), 10, alpha=0.25)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = cross_validate(build, x, y, k=5, epochs=3, seed=0)
    print(result.mean["accuracy"], result.std["accuracy"])
    ```

    Reference:
        - [Kohavi, 1995. A Study of Cross-Validation and Bootstrap for Accuracy Estimation
          and Model Selection](https://www.ijcai.org/Proceedings/95-2/Papers/016.pdf)
    """
    if not callable(build_fn):
        raise TypeError("Argument `build_fn` must be a function returning a new compiled "
                        f"model. Received: build_fn={build_fn!r}")
    k = check_number("k", k, low=2, integer=True)
    epochs = check_positive("epochs", epochs, integer=True)
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if seed is not None:
        seed = check_number("seed", seed, low=0, integer=True)
    if len(x) != len(y):
        raise ValueError("Arguments `x` and `y` must have the same number of samples. "
                         f"Received: len(x)={len(x)}, len(y)={len(y)}")
    if k > len(y):
        raise ValueError(f"Argument `k` must be <= the number of samples ({len(y)}). "
                         f"Received: k={k}")
    model_selection = _import_sklearn_model_selection()
    random_state = seed if shuffle else None
    if stratified:
        labels = _class_labels(y)
        classes, counts = np.unique(labels, return_counts=True)
        for label, count in zip(classes.tolist(), counts.tolist(), strict=True):
            if count < k:
                raise ValueError(
                    f"Argument `k` must be <= the number of samples of every class for "
                    f"stratified k-fold: class {label!r} has {count} sample(s). Received: "
                    f"k={k} (use a smaller k, or stratified=False)")
        splitter = model_selection.StratifiedKFold(k, shuffle=shuffle,
                                                   random_state=random_state)
        folds = list(splitter.split(np.zeros(len(labels)), labels))
    else:
        splitter = model_selection.KFold(k, shuffle=shuffle, random_state=random_state)
        folds = list(splitter.split(np.zeros(len(y))))

    x_array, y_array = np.asarray(x), np.asarray(y)
    fit_kwargs = dict(fit_kwargs or {})
    fit_kwargs.setdefault("verbose", 0)
    fold_metrics, models, seen = [], [], []
    for index, (train, val) in enumerate(folds):
        if seed is not None:
            keras.utils.set_random_seed(seed + index)
        model = build_fn()
        try:
            check_model(model, "model")
        except TypeError as error:
            raise TypeError(f"Argument `build_fn` must return a model of the Keras in use. "
                            f"{error}") from error
        # Weak references: a model can only come back if build_fn keeps it alive itself.
        if any(model is ref() for ref in seen):
            raise ValueError(
                "Argument `build_fn` must return a new model for each fold (the folds must "
                f"not share weights); fold {index} received the model of an earlier fold "
                f"({model.name!r}). Build the model inside build_fn.")
        if not _is_compiled(model):
            raise ValueError("Argument `build_fn` must return a compiled model (call "
                             f"`model.compile(...)` in build_fn). Received: {model.name!r}")
        # Under `with strategy.scope(): cross_validate(...)` each fold trains under the
        # strategy: a model built before, outside the scope, would fail deep inside `fit`.
        check_built_in_scope(
            model, model.distribute_strategy, "build_fn",
            fix="build and compile the model inside build_fn (cross_validate calls it in "
            "the current scope), not before it")
        seen.append(weakref.ref(model))
        model.fit(x_array[train], y_array[train], epochs=epochs, batch_size=batch_size,
                  **fit_kwargs)
        scores = model.evaluate(x_array[val], y_array[val], batch_size=batch_size,
                                verbose=0, return_dict=True)
        fold_metrics.append({name: float(value) for name, value in scores.items()})
        if return_models:
            models.append(model)
    names = list(fold_metrics[0])
    mean = {name: float(np.mean([m[name] for m in fold_metrics])) for name in names}
    std = {name: float(np.std([m[name] for m in fold_metrics])) for name in names}
    return CrossValidationResult(fold_metrics, mean, std, folds,
                                 models if return_models else None)
