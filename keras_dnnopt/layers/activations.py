"""Activations as built-in Keras layers, identical on Keras 3 and tf_keras.

Two Kerases disagree on some activations: tf_keras has no `hard_swish`, and its
`hard_sigmoid` is `clip(0.2 x + 0.5, 0, 1)` where Keras 3's is `relu6(x + 3) / 6`. So the
"hard" activations of MobileNetV3 are composed here from built-in layers, the way
`keras.applications.MobileNetV3` writes them:

- `hard_sigmoid(x) = relu6(x + 3) / 6 = min(max(x / 6 + 0.5, 0), 1)`:
  `Rescaling(1/6, offset=0.5)` then `ReLU(max_value=1)`;
- `hard_swish(x) = x * hard_sigmoid(x)`: the above, then `Multiply()([x, .])`.

Built-in layers keep a model made of them loadable without keras_dnnopt, and convertible
by TFLite (to MUL/ADD/RELU ops) and TF-MOT.

- `get_activation_layers(activation, name)`: the list of built-in layers computing an
  activation (empty for linear); `apply_activation_layers(layers, x)` applies them. The
  blocks of `keras_dnnopt.layers` use these two, so an unrolled block shows only
  built-in layers.
- `get_activation_layer(activation, name)`: one layer, for use in a Sequential model.
"""

from keras_dnnopt.backend import keras, tf

# Activation names accepted everywhere in keras_dnnopt, on both Kerases.
SUPPORTED_ACTIVATIONS = (
    "relu",
    "relu6",
    "leaky_relu",
    "hard_swish",
    "hard_sigmoid",
    "swish",
    "silu",
    "sigmoid",
    "tanh",
    "linear",
    "elu",
    "gelu",
)

# Activations that are one `keras.layers.Activation(<name>)` with the same meaning on
# both Kerases (`silu` is spelled `swish` on tf_keras, which both know).
_ACTIVATION_BY_NAME = {
    "swish": "swish",
    "silu": "swish",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "elu": "elu",
    "gelu": "gelu",
}


def check_activation(name, value, *, allow_none=True):
    """Checks an activation argument: one of `SUPPORTED_ACTIVATIONS` (or None: linear).

    Args:
        name: the argument name, for the message.
        value: the value received.
        allow_none: whether None (meaning linear) is accepted.

    Returns:
        The value, unchanged.

    Raises:
        ValueError: if the value is not a supported activation name.
    """
    if value is None and allow_none:
        return value
    if not isinstance(value, str) or value not in SUPPORTED_ACTIVATIONS:
        supported = ", ".join(repr(a) for a in SUPPORTED_ACTIVATIONS)
        raise ValueError(
            f"Argument `{name}` must be one of {supported}"
            f"{' or None' if allow_none else ''}. Received: {name}={value!r}"
        )
    return value


def _layer_name(name, suffix):
    return None if name is None else f"{name}{suffix}"


def get_activation_layers(activation, name=None):
    """Returns the built-in Keras layers that compute an activation.

    Apply them with `apply_activation_layers`: in order, except that a final `Multiply`
    multiplies the input of the chain by the output of the layers before it
    (`hard_swish(x) = x * hard_sigmoid(x)`).

    Args:
        activation: one of `SUPPORTED_ACTIVATIONS`, or None for linear.
        name: the name of the layer (a single-layer activation), or the prefix of the
            names of the layers of a composite one (`{name}_rescale`, `{name}_clip`,
            and `{name}_multiply` for `hard_swish`). Defaults to None (Keras picks names).

    Returns:
        A list of new `keras.layers.Layer`, empty for `"linear"` and None.

    Raises:
        ValueError: if `activation` is not supported.

    Example:

    >>> layers = get_activation_layers("hard_swish", name="act")
    >>> [layer.name for layer in layers]
    ['act_rescale', 'act_clip', 'act_multiply']
    """
    check_activation("activation", activation)
    if activation in (None, "linear"):
        return []
    if activation == "relu":
        return [keras.layers.ReLU(name=name)]
    if activation == "relu6":
        return [keras.layers.ReLU(6.0, name=name)]
    if activation == "leaky_relu":
        # The layer default (slope 0.3) is the same on both Kerases.
        return [keras.layers.LeakyReLU(name=name)]
    if activation in ("hard_sigmoid", "hard_swish"):
        layers = [
            keras.layers.Rescaling(1.0 / 6.0, offset=0.5, name=_layer_name(name, "_rescale")),
            keras.layers.ReLU(1.0, name=_layer_name(name, "_clip")),
        ]
        if activation == "hard_swish":
            layers.append(keras.layers.Multiply(name=_layer_name(name, "_multiply")))
        return layers
    return [keras.layers.Activation(_ACTIVATION_BY_NAME[activation], name=name)]


def _call_layer(layer, x):
    return layer(x)


def apply_activation_layers(layers, x, apply=_call_layer):
    """Applies the layers of `get_activation_layers` to `x`.

    Args:
        layers: the list returned by `get_activation_layers`.
        x: a tensor (eager or symbolic), or a shape when `apply` propagates shapes.
        apply: `apply(layer, x)` applies one layer; defaults to `layer(x)`.

    Returns:
        The activation of `x` (`x` itself when `layers` is empty).
    """
    if layers and isinstance(layers[-1], keras.layers.Multiply):
        gate = x
        for layer in layers[:-1]:
            gate = apply(layer, gate)
        return apply(layers[-1], [x, gate])
    for layer in layers:
        x = apply(layer, x)
    return x


@keras.saving.register_keras_serializable(package="keras_dnnopt")
def hard_sigmoid(x):
    """`relu6(x + 3) / 6`, the MobileNetV3 hard sigmoid (same on both Kerases)."""
    return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


@keras.saving.register_keras_serializable(package="keras_dnnopt")
def hard_swish(x):
    """`x * relu6(x + 3) / 6`, the MobileNetV3 hard swish (same on both Kerases)."""
    return x * hard_sigmoid(x)


def get_activation_layer(activation, name=None):
    """Returns one built-in Keras layer computing an activation.

    `relu`, `relu6` and `leaky_relu` give `ReLU`/`LeakyReLU` layers; the others an
    `Activation` layer. `hard_sigmoid` and `hard_swish` (which tf_keras lacks or defines
    differently) give an `Activation` of the keras_dnnopt functions `hard_sigmoid` and
    `hard_swish` (`relu6(x + 3) / 6` and `x * relu6(x + 3) / 6`); the blocks of
    `keras_dnnopt.layers` compose them from built-in layers instead
    (`get_activation_layers`), with the same result.

    Args:
        activation: one of `"relu"`, `"relu6"`, `"leaky_relu"`, `"hard_swish"`,
            `"hard_sigmoid"`, `"swish"`, `"silu"`, `"sigmoid"`, `"tanh"`, `"linear"`,
            `"elu"`, `"gelu"`, or None (linear).
        name: the layer name. Defaults to None (Keras picks one).

    Returns:
        A new `keras.layers.Layer`.

    Raises:
        ValueError: if `activation` is not one of the names above, listing them.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           get_activation_layer("hard_swish")])
    """
    check_activation("activation", activation)
    if activation in (None, "linear"):
        return keras.layers.Activation("linear", name=name)
    if activation == "hard_sigmoid":
        return keras.layers.Activation(hard_sigmoid, name=name)
    if activation == "hard_swish":
        return keras.layers.Activation(hard_swish, name=name)
    (layer,) = get_activation_layers(activation, name=name)
    return layer
