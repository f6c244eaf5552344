"""The one place that decides which Keras keras_dnnopt uses.

TensorFlow exposes two Kerases through `tf.keras`: Keras 3 by default, and tf_keras
(Keras 2) when the environment variable `TF_USE_LEGACY_KERAS=1` was set before
TensorFlow was first imported. keras_dnnopt follows `tf.keras`, so that a model
built with `tf.keras` is always a model of the Keras used here. Every other module
of the package takes Keras from this module:

    from keras_dnnopt.backend import keras, tf

For Keras 3 the real `keras` package is used rather than its `tf.keras` shim
(`keras._tf_keras.keras`), because the shim lacks parts of the API (`keras.saving`,
`keras.ops`) that the package relies on. Both name the same classes.
"""

import os

import tensorflow as tf

_TF_KERAS_NAME = tf.keras.__name__

if _TF_KERAS_NAME.startswith("tf_keras"):
    import tf_keras as keras

    USING_TF_KERAS = True
    KERAS_VERSION = getattr(keras, "__version__", None) or tf.__version__
else:
    import keras

    USING_TF_KERAS = False
    KERAS_VERSION = keras.__version__
    if keras.config.backend() != "tensorflow":
        raise ImportError(
            "keras_dnnopt needs Keras 3 to run on its TensorFlow backend (TF-MOT, TFLite "
            "export and tf.distribute all do). Received: KERAS_BACKEND="
            f"{keras.config.backend()!r}. Set KERAS_BACKEND=tensorflow before importing Keras."
        )

KERAS_NAME = f"tf_keras {KERAS_VERSION}" if USING_TF_KERAS else f"Keras {KERAS_VERSION}"

def keras_flavour():
    """Returns `"tf_keras"` or `"keras3"`, the Keras in use."""
    return "tf_keras" if USING_TF_KERAS else "keras3"


def _other_keras_of(obj):
    """Names the Keras an object belongs to when it is not the one in use, else None."""
    for klass in type(obj).__mro__:
        module = klass.__module__ or ""
        where = f"class {module}.{klass.__qualname__}"
        if USING_TF_KERAS and (module == "keras" or module.startswith("keras.")):
            return f"Keras 3 ({where})"
        if not USING_TF_KERAS and (module == "tf_keras" or module.startswith("tf_keras.")):
            return f"tf_keras (Keras 2; {where})"
    return None


def _switch_advice():
    """What to do about an object of the other Keras, for the Keras in use."""
    env = os.environ.get("TF_USE_LEGACY_KERAS")
    if USING_TF_KERAS:
        return (
            f"TensorFlow chose tf_keras because TF_USE_LEGACY_KERAS={env!r} was set when it "
            "was first imported. To use this Keras 3 model, run a new process without "
            "TF_USE_LEGACY_KERAS; to stay on tf_keras, build the model with tf_keras "
            "(`tf.keras` or `keras_dnnopt.backend.keras`, not `import keras`)."
        )
    return (
        f"TensorFlow chose Keras 3 because TF_USE_LEGACY_KERAS was not set to 1 when it was "
        f"first imported (TF_USE_LEGACY_KERAS={env!r}). To use this tf_keras model, run a "
        "new process with TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported; to stay "
        "on Keras 3, build the model with Keras 3 (`tf.keras` or "
        "`keras_dnnopt.backend.keras`, not `import tf_keras`)."
    )


def _check_instance(obj, expected, kind, arg_name):
    if isinstance(obj, expected):
        return obj
    other = _other_keras_of(obj)
    if other is not None:
        raise TypeError(
            f"Argument `{arg_name}` is a {kind} of {other}, but keras_dnnopt is running on "
            f"{KERAS_NAME}: the two Kerases (Keras 3 and tf_keras) cannot share models or "
            f"layers. {_switch_advice()}"
        )
    raise TypeError(
        f"Argument `{arg_name}` must be a {KERAS_NAME} {kind} "
        f"({expected.__module__}.{expected.__name__}). "
        f"Received: {arg_name}={obj!r} of type {type(obj).__name__}"
    )


def check_model(model, arg_name="model"):
    """Checks that `model` is a `keras.Model` of the Keras in use.

    The one check of the package for a model of the *other* Keras (a tf_keras model while
    Keras 3 is in use, or the reverse): every public entry point that takes a model calls
    it first, so the user gets one message naming both Kerases and `TF_USE_LEGACY_KERAS`
    instead of whatever breaks first inside (`tests/test_other_keras.py` holds the list).

    Args:
        model: the object to check.
        arg_name: the argument name to use in the error message.

    Returns:
        The model, unchanged.

    Raises:
        TypeError: if `model` is not a Keras model, or is a model of the other Keras
            (for example a Keras 3 model while tf_keras is active), with the way to switch.
    """
    return _check_instance(model, keras.Model, "model", arg_name)


def check_layer(layer, arg_name="layer"):
    """Checks that `layer` is a `keras.layers.Layer` of the Keras in use."""
    return _check_instance(layer, keras.layers.Layer, "layer", arg_name)


def register_serializable(cls):
    """Registers a class with Keras serialization under the package name `keras_dnnopt`."""
    return keras.saving.register_keras_serializable(package="keras_dnnopt")(cls)


def optimizer_variables(optimizer):
    """The list of an optimizer's variables, on both Kerases (a property in Keras 3,
    a method in tf_keras)."""
    variables = optimizer.variables
    if callable(variables):
        variables = variables()
    return list(variables)


def native_model_suffix():
    """The file suffix of the native whole-model format of the Keras in use (`.keras`)."""
    return ".keras"


__all__ = [
    "keras",
    "tf",
    "USING_TF_KERAS",
    "KERAS_NAME",
    "KERAS_VERSION",
    "keras_flavour",
    "check_model",
    "check_layer",
    "register_serializable",
    "optimizer_variables",
]
