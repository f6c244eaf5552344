"""`fold_output_rescaling`: a trailing `Rescaling` merged into the `Dense` before it."""

import numpy as np

from keras_dnnopt.backend import check_model, keras


def fold_output_rescaling(model):
    """Merges a model's final `Rescaling` into the `Dense` layer that feeds it.

    A regression MLP (`keras_dnnopt.models.mlp` with `target_mean`/`target_std`) learns
    standardized targets and ends with `Rescaling(scale=std, offset=mean)`. Exported to
    full-integer TFLite, that layer becomes an int8 `MUL` and `ADD` after the last fully
    connected op; when the standardized output spans a small range (early in training, or
    a nearly constant prediction) the `MUL`'s requantization scale falls below what
    XNNPACK accepts and the file fails to load ("failed to prepare"). Folded, the `Dense`
    outputs the targets' units directly (`kernel * scale`, `bias * scale + offset`): the
    same function, one op fewer, and an output range that is the targets'.

    Args:
        model: a functional or Sequential model of the Keras in use.

    Returns:
        A new model without the final `Rescaling` (weights copied; `model` is unchanged),
        or `model` itself when it does not end in `Dense` -> `Rescaling` (scalar scale and
        offset, a `Dense` with a bias whose only consumer is the `Rescaling`).

    Raises:
        TypeError: if `model` is not a Keras model of the Keras in use.

    Example:

    >>> folded = fold_output_rescaling(regression_mlp)  # doctest: +SKIP
    >>> np.allclose(folded.predict(x), regression_mlp.predict(x), rtol=1e-5)  # doctest: +SKIP
    True
    """
    check_model(model)
    if len(model.layers) < 2:
        return model
    last = model.layers[-1]
    dense = model.layers[-2]
    if not (isinstance(last, keras.layers.Rescaling) and isinstance(dense, keras.layers.Dense)
            and dense.use_bias and dense.get_config().get("activation") == "linear"
            and np.ndim(last.scale) == 0 and np.ndim(last.offset) == 0
            and len(model.outputs) == 1):
        return model
    if len(getattr(dense, "_outbound_nodes", ())) > 1:
        return model  # the Dense feeds something else too
    # Rebuilt from its config, not `clone_model` (which in Keras 3 also carries the
    # compile configuration, a stage's unregistered loss function included).
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    kernel, bias = clone.layers[-2].get_weights()
    scale, offset = float(last.scale), float(last.offset)
    clone.layers[-2].set_weights([kernel * scale, bias * scale + offset])
    return keras.Model(clone.inputs, clone.layers[-2].output, name=model.name)
