"""Input normalisation fitted on the training split only."""

import numpy as np

from keras_dnnopt.backend import keras
from keras_dnnopt.utils.validation import check_choice

_MODES = {"per_channel": -1, "global": None}


def adapt_normalizer(x_train, mode="per_channel"):
    """A Keras `Normalization` layer adapted on the training samples `x_train`.

    Adapt it on the training split only: statistics computed on validation or test
    data leak them into training. The layer standardises to zero mean and unit
    variance, `(x - mean) / sqrt(var)`, with the variance floored at a small epsilon so
    that constant pixels stay finite. Put it in the input pipeline (`make_pipeline(...,
    normalizer=layer)`) or as the first layer of a model; it is serialized with the
    model either way.

    Args:
        x_train: the training samples, an array of shape `(n, ..., channels)`.
        mode: `"per_channel"` (one mean and variance per channel, the last axis) or
            `"global"` (one mean and variance over everything). Defaults to
            `"per_channel"`.

    Returns:
        An adapted `keras.layers.Normalization`.

    Raises:
        ValueError: if `mode` is unknown or `x_train` is empty.

    Example:

    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(100, 8, 8, 1)).astype("float32")
    >>> layer = adapt_normalizer(x)
    >>> out = np.asarray(layer(x))
    >>> bool(abs(out.mean()) < 1e-3), round(float(out.std()), 2)
    (True, 1.0)
    """
    mode = check_choice("mode", mode, tuple(_MODES))
    x_train = np.asarray(x_train, dtype="float32")
    if x_train.ndim < 2 or len(x_train) == 0:
        raise ValueError(
            "Argument `x_train` must be a non-empty array of shape (n, ..., channels). "
            f"Received: x_train with shape {x_train.shape}"
        )
    layer = keras.layers.Normalization(axis=_MODES[mode], name="normalization")
    layer.adapt(x_train)
    return layer
