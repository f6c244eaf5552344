"""Mixed precision in one call: float16 on GPUs, bfloat16 on TPUs and CPUs, float32 outputs.

Keras does the work (the global dtype policy, and `compile` wrapping the optimizer in a
`LossScaleOptimizer` under `"mixed_float16"`, on Keras 3 and tf_keras alike); this module
picks the policy for the hardware, sets it on the Keras in use, forces a model's outputs to
float32 (so that softmax and the loss are computed in full precision), and wraps an
optimizer for custom training loops.

- float16 has a narrow exponent range: small gradients underflow, hence loss scaling
  (dynamic, by `LossScaleOptimizer`). Fast on NVIDIA GPUs with tensor cores.
- bfloat16 has float32's exponent range: no loss scaling needed. Native on TPUs and on
  recent CPUs (AVX512-BF16/AMX); elsewhere it saves memory but may not be faster.
"""

import contextlib

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras, tf
from keras_dnnopt.distribute import strategy as _strategy
from keras_dnnopt.utils.validation import check_choice

_POLICIES = {"gpu": "mixed_float16", "tpu": "mixed_bfloat16", "cpu": "mixed_bfloat16"}


def _detect_device():
    """`"tpu"` under a TPU strategy or with TPU devices, `"gpu"` with GPUs, else `"cpu"`."""
    current = tf.distribute.get_strategy()
    if isinstance(current, tf.distribute.TPUStrategy) or tf.config.list_logical_devices("TPU"):
        return "tpu"
    if _strategy._gpus():  # noqa: SLF001 (one detection function, monkeypatched in tests)
        return "gpu"
    return "cpu"


def mixed_precision_policy(device="auto"):
    """The mixed-precision policy name for a device type.

    Args:
        device: `"auto"` (detected: TPU, GPU, else CPU), `"gpu"`, `"tpu"` or `"cpu"`.
            Defaults to `"auto"`.

    Returns:
        `"mixed_float16"` for GPUs, `"mixed_bfloat16"` for TPUs and CPUs.

    Raises:
        ValueError: if `device` is unknown.
    """
    check_choice("device", device, ("auto", "gpu", "tpu", "cpu"))
    return _POLICIES[_detect_device() if device == "auto" else device]


def global_policy_name():
    """The name of the global dtype policy of the Keras in use (e.g. `"float32"`)."""
    return keras.mixed_precision.global_policy().name


def set_global_policy(name):
    """Sets the global dtype policy of the Keras in use (`"float32"`, `"mixed_float16"`,
    `"mixed_bfloat16"`, ...)."""
    check_choice("name", name, ("float32", "float16", "bfloat16", "mixed_float16",
                                "mixed_bfloat16", "float64"))
    keras.mixed_precision.set_global_policy(name)


def enable_mixed_precision(device="auto"):
    """Turns mixed precision on for the hardware: float16 on GPUs, bfloat16 on TPUs/CPUs.

    Sets the global dtype policy of the Keras in use (`keras.mixed_precision.
    set_global_policy`, i.e. `set_dtype_policy` on Keras 3): layers built afterwards
    compute in float16/bfloat16 and keep float32 variables. Under `"mixed_float16"`,
    `model.compile` wraps the optimizer in a `LossScaleOptimizer` (both Kerases do it:
    dynamic loss scaling, nothing to add); a custom loop wraps it with
    `loss_scale_optimizer`. Call it before building the model, and make the outputs
    float32 with `float32_output(model)` (or `dtype="float32"` on the last layer).

    Args:
        device: `"auto"` (detected), `"gpu"`, `"tpu"` or `"cpu"`. Defaults to `"auto"`.

    Returns:
        The policy name set (`"mixed_float16"` or `"mixed_bfloat16"`).

    Raises:
        ValueError: if `device` is unknown.

    Example:

    ```python
    enable_mixed_precision()                      # before building the model
    model = float32_output(keras_dnnopt.models.mobilenet_v2((32, 32, 3), num_classes=10))
    model.compile("adam", "sparse_categorical_crossentropy")   # loss-scaled on GPU
    ```
    """
    name = mixed_precision_policy(device)
    keras.mixed_precision.set_global_policy(name)
    return name


def disable_mixed_precision():
    """Sets the global dtype policy back to `"float32"`."""
    keras.mixed_precision.set_global_policy("float32")


@contextlib.contextmanager
def precision_policy(name):
    """A context in which the global dtype policy is `name` (e.g. the result of
    `mixed_precision_policy()`); the previous policy is restored on exit.

    Example:

    ```python
    with precision_policy("mixed_bfloat16"):
        model = keras_dnnopt.models.plain_cnn((8, 8, 1), num_classes=10)
    ```
    """
    previous = global_policy_name()
    set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_output(model):
    """Returns `model` with float32 outputs: each output that is not float32 gets a linear
    `Activation` layer with `dtype="float32"` (a cast), so that the softmax/loss run in full
    precision under a mixed policy, as the Keras mixed-precision guide advises.

    Args:
        model: a functional or Sequential `keras.Model` of the Keras in use (built, with
            known inputs).

    Returns:
        `model` itself when every output is already float32, else a new functional model
        sharing its layers and weights, named like it.

    Raises:
        TypeError: if `model` is not a model of the Keras in use.
        ValueError: if `model` has no symbolic inputs/outputs (an unbuilt subclassed
            model): give its last layer `dtype="float32"` instead.

    Example:

    ```python
    with precision_policy("mixed_bfloat16"):
        model = float32_output(keras_dnnopt.models.mobilenet_v1((32, 32, 3), 10, alpha=0.25))
    model.outputs[0].dtype  # float32
    ```
    """
    check_model(model, "model")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs, outputs = None, None
    if not inputs or not outputs:
        raise ValueError(
            "Argument `model` must be a functional or Sequential model with known inputs "
            "(built on `keras.Input`); for a subclassed model give the last layer "
            f"dtype='float32'. Received: model {model.name!r} without symbolic outputs")
    if all(tf.as_dtype(o.dtype) == tf.float32 for o in outputs):
        return model
    cast = [o if tf.as_dtype(o.dtype) == tf.float32 else
            keras.layers.Activation("linear", dtype="float32",
                                    name=f"{model.name}_float32_output_{i}")(o)
            for i, o in enumerate(outputs)]
    single = len(model.outputs) == 1 and not isinstance(getattr(model, "output", None), list)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, cast[0] if single else cast,
                       name=model.name)


def loss_scale_optimizer(optimizer):
    """Wraps an optimizer in the `LossScaleOptimizer` of the Keras in use when the global
    policy is `"mixed_float16"` (for custom training loops; `compile` does it itself).

    Args:
        optimizer: a `keras.optimizers.Optimizer` instance.

    Returns:
        The wrapped optimizer under `"mixed_float16"` (dynamic loss scaling), else the
        optimizer unchanged (float32 and bfloat16 need no scaling).
    """
    if global_policy_name() != "mixed_float16":
        return optimizer
    wrapper = (keras.mixed_precision.LossScaleOptimizer if USING_TF_KERAS
               else keras.optimizers.LossScaleOptimizer)
    return optimizer if isinstance(optimizer, wrapper) else wrapper(optimizer)
