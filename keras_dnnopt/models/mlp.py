"""`mlp`: a multilayer perceptron for tabular data (feature vectors), classification or
regression."""

from keras_dnnopt.backend import keras
from keras_dnnopt.layers.activations import (
    apply_activation_layers,
    check_activation,
    get_activation_layers,
)
from keras_dnnopt.layers.base_block import check_bool
from keras_dnnopt.utils.validation import check_choice, check_number, check_shape

TASKS = ("classification", "regression")


def _validate(*, input_shape, num_classes, alpha, depth, width, dropout, batch_norm,
              batch_norm_momentum, activation, task, num_outputs, target_mean, target_std,
              name):
    input_shape = check_shape("input_shape", input_shape, rank=1)
    if input_shape[0] is None:
        raise ValueError(
            "Argument `input_shape` must give the number of features, e.g. (10,). "
            f"Received: input_shape={input_shape!r}"
        )
    check_choice("task", task, TASKS)
    if task == "classification":
        check_number("num_classes", num_classes, low=2, integer=True)
    elif num_classes is not None:
        raise ValueError(
            "Argument `num_classes` is for task='classification'; a regression model has "
            f"`num_outputs`. Pass num_classes=None. Received: num_classes={num_classes!r}, "
            f"task={task!r}"
        )
    check_number("alpha", alpha, low=0, low_inclusive=False)
    check_number("depth", depth, low=1, integer=True)
    check_number("width", width, low=1, integer=True)
    check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
    check_bool("batch_norm", batch_norm)
    check_number("batch_norm_momentum", batch_norm_momentum, low=0, high=1,
                 high_inclusive=False)
    check_activation("activation", activation, allow_none=False)
    check_number("num_outputs", num_outputs, low=1, integer=True)
    if task == "classification":
        for arg, value in (("target_mean", target_mean), ("target_std", target_std)):
            if value is not None:
                raise ValueError(
                    f"Argument `{arg}` is for task='regression' (it rescales the "
                    f"regression output). Pass {arg}=None. Received: {arg}={value!r}, "
                    f"task={task!r}"
                )
    if (target_mean is None) != (target_std is None):
        raise ValueError(
            "Arguments `target_mean` and `target_std` go together: pass both (the model "
            "outputs `y * target_std + target_mean`) or neither. Received: "
            f"target_mean={target_mean!r}, target_std={target_std!r}"
        )
    if target_mean is not None:
        check_number("target_mean", target_mean)
        check_number("target_std", target_std, low=0, low_inclusive=False)
    if not isinstance(name, str) or not name:
        raise ValueError(f"Argument `name` must be a non-empty string. Received: name={name!r}")
    return input_shape


def mlp(input_shape, num_classes=None, alpha=1.0, depth=2, width=64, dropout=0.0,
        batch_norm=True, batch_norm_momentum=0.99, activation="relu", task="classification",
        num_outputs=1, target_mean=None, target_std=None, name="mlp"):
    """Builds a multilayer perceptron for feature vectors, a flat functional model.

    `depth` hidden blocks of the same width, each `Dense` -> `BatchNormalization` (when
    `batch_norm`; the `Dense` then has no bias, which the batch norm's beta replaces) ->
    activation -> `Dropout` (when `dropout > 0`), named `block{i}_dense`, `block{i}_bn`,
    `block{i}_act` and `block{i}_dropout` (`i` from 1). Then the head, `predictions`:

    - classification: `Dense(num_classes, activation="softmax")`, probabilities out as
      the package's MobileNets (train with `sparse_categorical_crossentropy`);
    - regression: `Dense(num_outputs)`, linear. With `target_mean` and `target_std` it is
      followed by `Rescaling(scale=target_std, offset=target_mean)`
      (`target_rescaling`): the network learns standardized targets and the model
      outputs them in their own units. Train it on the raw targets with a loss on that
      scale (its gradients reach the standardized head through the rescaling).

    Made of built-in layers only, so that it saves, loads, prunes (`prune_channels`
    removes hidden units), quantizes and exports like the other builders.

    Args:
        input_shape: the shape of one sample, `(features,)`.
        num_classes: for classification, the number of classes, an integer >= 2; None
            for regression. Defaults to None.
        alpha: the width multiplier: every hidden block has `max(1, round(width * alpha))`
            units, a number > 0. Defaults to 1.0.
        depth: the number of hidden blocks, an integer >= 1. Defaults to 2.
        width: the units of each hidden block before `alpha`, an integer >= 1. Defaults
            to 64.
        dropout: the dropout rate after each hidden block, in [0, 1); 0 adds no `Dropout`
            layer. Defaults to 0.0.
        batch_norm: whether each hidden `Dense` is followed by a `BatchNormalization`.
            Defaults to True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1).
            Defaults to 0.99, Keras' default.
        activation: the hidden activation, one of
            `keras_dnnopt.layers.activations.SUPPORTED_ACTIVATIONS`. Defaults to `"relu"`.
        task: `"classification"` or `"regression"`. Defaults to `"classification"`.
        num_outputs: for regression, the number of targets, an integer >= 1. Defaults
            to 1.
        target_mean, target_std: for regression, the mean and standard deviation (> 0)
            of the training targets, scalars (one pair for all targets), e.g.
            `Dataset.target_mean` / `Dataset.target_std` of `load_dataset`; None (both)
            for no output rescaling. Defaults to None.
        name: the model name. Defaults to `"mlp"`.

    Returns:
        A functional `keras.Model` of built-in layers, output shape `(batch, num_classes)`
        or `(batch, num_outputs)`.

    Raises:
        ValueError: if an argument is out of range (named, with the value received), a
            classification model lacks `num_classes >= 2`, a regression model is given
            `num_classes`, or only one of `target_mean` and `target_std` is given.

    Example:

    >>> model = mlp((10,), task="regression", width=32, target_mean=150.0, target_std=77.0)
    >>> model.output_shape
    (None, 1)
    >>> mlp((10,), num_classes=3, depth=1, width=8, batch_norm=False).count_params()
    115
    """
    input_shape = _validate(
        input_shape=input_shape, num_classes=num_classes, alpha=alpha, depth=depth,
        width=width, dropout=dropout, batch_norm=batch_norm,
        batch_norm_momentum=batch_norm_momentum, activation=activation, task=task,
        num_outputs=num_outputs, target_mean=target_mean, target_std=target_std, name=name)
    units = max(1, int(round(width * alpha)))
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for i in range(1, int(depth) + 1):
        x = keras.layers.Dense(units, use_bias=not batch_norm, name=f"block{i}_dense")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=batch_norm_momentum,
                                                name=f"block{i}_bn")(x)
        x = apply_activation_layers(get_activation_layers(activation, f"block{i}_act"), x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"block{i}_dropout")(x)
    if task == "classification":
        outputs = keras.layers.Dense(int(num_classes), activation="softmax",
                                     name="predictions")(x)
    else:
        outputs = keras.layers.Dense(int(num_outputs), name="predictions")(x)
        if target_mean is not None:
            outputs = keras.layers.Rescaling(scale=float(target_std),
                                             offset=float(target_mean),
                                             name="target_rescaling")(outputs)
    return keras.Model(inputs, outputs, name=name)
