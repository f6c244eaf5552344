"""`quantize`: quantization-aware training (QAT), through TF-MOT on tf_keras and natively
on Keras 3 (`_qat_native`: TensorFlow's fake-quant ops, batch norm folded, TFLite's int8
scheme).

QAT inserts fake-quantization (quantize-dequantize) operations on the weights and
activations, so that training sees, and learns to tolerate, the int8 rounding that the
converted TFLite model will apply. The model it returns trains like any Keras model; convert
it with `tf.lite.TFLiteConverter.from_keras_model(qat_model)` and
`optimizations=[tf.lite.Optimize.DEFAULT]` (or `keras_dnnopt.export.export_tflite(...,
quantization="int8")`) for an int8 file that computes what the QAT model computes.
"""

import re
import warnings

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    import_tfmot,
    select_layers,
)
from keras_dnnopt.compression.collaborative import (
    QUANTIZE_SCHEMES,
    check_scheme_input,
    quantize_scheme,
    strip_compression_wrappers,
)
from keras_dnnopt.utils.validation import check_choice

# TF-MOT's message for a layer its registry has no QuantizeConfig for.
_UNSUPPORTED = re.compile(r"Layer (\S+):<class '[^']*'> is not supported")


def _unsupported_layer_error(layer, scheme):
    return ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) cannot be quantized by TF-MOT's "
        f"{type(scheme).__name__}: it has no QuantizeConfig for this layer type. Either wrap "
        "it with `tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=...)` "
        "and a `tfmot.quantization.keras.QuantizeConfig` saying how to quantize its weights "
        "and activations (build the model with the wrapped layer, then call `quantize`), or "
        "leave it out with `quantize(model, layers=[...])` listing the layers to quantize "
        "(it then stays float)."
    )


def quantize(model, layers=None, scheme="default", skip_unsupported=False):
    """Makes a quantization-aware-training (QAT) copy of a model.

    On Keras 3 the copy is built natively (TF-MOT only accepts tf_keras models): the model
    is flattened as below, each `Conv2D` / `DepthwiseConv2D` / `Dense` becomes one
    quantized layer with the `BatchNormalization` after it folded into its kernel and its
    ReLU/ReLU6 fused (`QuantizedConv2D`, ...: symmetric int8 weights, per output channel
    for convolutions, per tensor for `Dense`), a `SeparableConv2D` its two quantized
    kernels, and a `MovingAverageQuantizer` (asymmetric int8, moving-average range)
    quantizes the inputs and the outputs of each fused group, merge, pooling and
    activation layer: the places where TFLite's int8 kernels quantize. Built on
    `tf.quantization.fake_quant_with_min_max_vars(_per_channel)` with straight-through
    gradients; `export_tflite(qat_model, path, quantization="int8")` (or `"int8_full"`)
    turns it into an int8 file with the ranges learned in training, with no
    representative data. It saves and loads as `.keras` (safe mode) and trains under
    `tf.distribute` strategies. Schemes `"default"` and `"pqat"` (the zeros of a pruned
    model kept through training and in the int8 file) are supported on Keras 3.

    On tf_keras, through TF-MOT:

    The model is first rewritten into the built-in layers TF-MOT knows: the blocks of
    `keras_dnnopt.layers` (custom layers to TF-MOT) are unrolled into their `Conv2D`,
    `DepthwiseConv2D`, `BatchNormalization`, `ReLU`... sublayers, and nested functional
    models are inlined, with the same weights. Pruning and clustering wrappers are stripped.
    Then the chosen layers are annotated (`tfmot.quantization.keras.quantize_annotate_layer`)
    and `tfmot.quantization.keras.quantize_apply` applies the quantization scheme (batch
    norm folding, fake-quant weights and activations). Layers already annotated by the user
    (with their own `QuantizeConfig`) are kept as annotated. The given model is not changed.

    Args:
        model: a functional or Sequential model of the Keras in use (built).
        layers: None to quantize every layer, or a list of the names of the layers to
            quantize (the others stay float); the name of a block of `keras_dnnopt.layers`
            selects all its sublayers. Defaults to None.
        scheme: `"default"` (plain 8-bit QAT), `"pqat"` (keeps the zeros of a pruned model),
            `"cqat"` (keeps the clusters of a clustered model) or `"pcqat"` (keeps both);
            see `keras_dnnopt.compression.collaborative`. Defaults to `"default"`.
        skip_unsupported: keep the layers that cannot be quantized float (with a
            warning naming them) instead of raising. Defaults to False.

    Returns:
        A new model with fake-quantization, to compile and train.

    Raises:
        ValueError: for an unknown `scheme`, a `layers` name that is not in the model, a
            layer that cannot be quantized (named, with the supported layers and the way
            out), a model that is already quantization-aware, or a `"pqat"`/`"cqat"`/
            `"pcqat"` scheme on a model with no zeros / no shared weight values.
        TypeError: if `model` is not a Keras model, or is a model of the other Keras.

    Example:

    >>> model = keras_dnnopt.models.mobilenet_v1((8, 8, 1), num_classes=10, alpha=0.25)
    >>> qat_model = quantize(model)
    >>> qat_model.compile("adam", "sparse_categorical_crossentropy")
    >>> qat_model.fit(x, y, epochs=1)
    >>> converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    >>> converter.optimizations = [tf.lite.Optimize.DEFAULT]
    >>> int8_bytes = converter.convert()

    Reference:
        - [Jacob et al., 2018. Quantization and Training of Neural Networks for Efficient
          Integer-Arithmetic-Only Inference](https://arxiv.org/abs/1712.05877)
        - [TF-MOT quantization-aware training](
          https://www.tensorflow.org/model_optimization/guide/quantization/training)
    """
    check_choice("scheme", scheme, QUANTIZE_SCHEMES)
    check_model(model)
    if not isinstance(skip_unsupported, bool):
        raise TypeError(
            "Argument `skip_unsupported` must be True or False. Received: "
            f"skip_unsupported={skip_unsupported!r}")
    _check_not_quantized(model)
    if not USING_TF_KERAS:
        return _quantize_keras3(model, layers, scheme, skip_unsupported)
    tfmot = import_tfmot()
    qkeras = tfmot.quantization.keras
    # Not in TF-MOT's public API: the annotation wrapper class, to keep the user's own.
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import (
        QuantizeAnnotate,
    )

    flat, groups = flatten_model(strip_compression_wrappers(model))
    selected = select_layers(flat, layers, groups)
    check_scheme_input(flat, scheme, selected)
    tfmot_scheme = quantize_scheme(scheme)

    to_annotate = {
        layer.name for layer in flat.layers
        if not isinstance(layer, (keras.layers.InputLayer, QuantizeAnnotate))
        and (selected is None or layer.name in selected)
    }

    def annotate(layer):
        # The layer itself is returned (not a copy), so that the annotated model shares the
        # trained weights; `quantize_apply` then copies the model with its weights.
        if layer.name in to_annotate:
            return qkeras.quantize_annotate_layer(layer)
        return layer

    # TF-MOT clones the model from its config: the classes of the model's own layers (and
    # of the layers the user annotated) must be known by name.
    custom_objects = {}
    for layer in flat.layers:
        for obj in (layer, getattr(layer, "layer", None), getattr(layer, "quantize_config", None)):
            if obj is not None:
                custom_objects.setdefault(type(obj).__name__, type(obj))
    skipped = []
    with qkeras.quantize_scope(custom_objects):
        while True:
            annotated = keras.models.clone_model(flat, clone_function=annotate)
            try:
                result = qkeras.quantize_apply(annotated, scheme=tfmot_scheme)
                break
            except RuntimeError as error:
                # Whether a layer is supported is only known after TF-MOT's layout
                # transforms (a BatchNormalization after a convolution is folded into it,
                # one alone is not supported), so the check is TF-MOT's own; its message
                # is made actionable here, or the layer left float and TF-MOT run again.
                match = _UNSUPPORTED.search(str(error))
                names = {layer.name: layer for layer in flat.layers}
                if match is None or match.group(1) not in names:
                    raise
                if not skip_unsupported or match.group(1) not in to_annotate:
                    raise _unsupported_layer_error(names[match.group(1)],
                                                   tfmot_scheme) from error
                to_annotate.discard(match.group(1))
                skipped.append(match.group(1))
    if skipped:
        warnings.warn(
            "Kept float (not quantized) by `skip_unsupported=True`: "
            + ", ".join(repr(n) for n in skipped) + ".", stacklevel=2)
    return result


def _check_not_quantized(model):
    """Refuses a model that is already quantization-aware (quantizing twice would stack
    fake-quant ops and double-fold batch norms)."""
    if USING_TF_KERAS:
        import sys

        if "tensorflow_model_optimization" not in sys.modules:
            return
        from tensorflow_model_optimization.python.core.quantization.keras import (
            quantize_layer,
            quantize_wrapper,
        )

        kinds = (quantize_wrapper.QuantizeWrapper, quantize_layer.QuantizeLayer)
        done = any(isinstance(layer, kinds) for layer in _layers(model))
    else:
        from keras_dnnopt.compression._qat_native import is_quantized

        done = is_quantized(model)
    if done:
        raise ValueError(
            f"Argument `model` is already quantization-aware: model {model.name!r} holds "
            "the fake-quantization layers of `quantize`. Quantize the float model once "
            "(keep a reference to it), train the returned model, and export it with "
            "`keras_dnnopt.export.export_tflite(qat_model, path, quantization=\"int8\")`. "
            f"Received: model={model.name!r}"
        )


def _layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _quantize_keras3(model, layers, scheme, skip_unsupported):
    from keras_dnnopt.compression._prunable import is_pruning_wrapper
    from keras_dnnopt.compression._qat_native import quantize_keras3
    from keras_dnnopt.compression.pruning import strip_pruning

    if any(is_pruning_wrapper(layer) for layer in _layers(model)):
        model = strip_pruning(model)
    return quantize_keras3(model, layers=layers, scheme=scheme,
                           skip_unsupported=skip_unsupported)
