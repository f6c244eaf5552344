"""`quantize`: quantization-aware training (QAT) through TF-MOT, on tf_keras.

QAT inserts fake-quantization (quantize-dequantize) operations on the weights and
activations, so that training sees, and learns to tolerate, the int8 rounding that the
converted TFLite model will apply. The model it returns trains like any Keras model; convert
it with `tf.lite.TFLiteConverter.from_keras_model(qat_model)` and
`optimizations=[tf.lite.Optimize.DEFAULT]` (or `keras_dnnopt.export.export_tflite(...,
quantization="int8")`) for an int8 file that computes what the QAT model computes.
"""

import re

from keras_dnnopt.backend import check_model, keras
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    import_tfmot,
    require_tf_keras,
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


def quantize(model, layers=None, scheme="default"):
    """Makes a quantization-aware-training (QAT) copy of a tf_keras model, through TF-MOT.

    The model is first rewritten into the built-in layers TF-MOT knows: the blocks of
    `keras_dnnopt.layers` (custom layers to TF-MOT) are unrolled into their `Conv2D`,
    `DepthwiseConv2D`, `BatchNormalization`, `ReLU`... sublayers, and nested functional
    models are inlined, with the same weights. Pruning and clustering wrappers are stripped.
    Then the chosen layers are annotated (`tfmot.quantization.keras.quantize_annotate_layer`)
    and `tfmot.quantization.keras.quantize_apply` applies the quantization scheme (batch
    norm folding, fake-quant weights and activations). Layers already annotated by the user
    (with their own `QuantizeConfig`) are kept as annotated. The given model is not changed.

    Args:
        model: a tf_keras functional or Sequential model (built).
        layers: None to quantize every layer, or a list of the names of the layers to
            quantize (the others stay float); the name of a block of `keras_dnnopt.layers`
            selects all its sublayers. Defaults to None.
        scheme: `"default"` (plain 8-bit QAT), `"pqat"` (keeps the zeros of a pruned model),
            `"cqat"` (keeps the clusters of a clustered model) or `"pcqat"` (keeps both);
            see `keras_dnnopt.compression.collaborative`. Defaults to `"default"`.

    Returns:
        A new tf_keras model with fake-quantization, to compile and train.

    Raises:
        ValueError: for an unknown `scheme`, a `layers` name that is not in the model, a
            layer TF-MOT cannot quantize (named, with the way out), or a `"pqat"`/`"cqat"`/
            `"pcqat"` scheme on a model with no zeros / no shared weight values.
        TypeError: if `model` is not a Keras model, or is a model of the other Keras.
        NotImplementedError: on Keras 3, where TF-MOT does not work: the message says how
            to switch to tf_keras and what works on Keras 3 (post-training quantization
            with `keras_dnnopt.export.export_tflite`, Keras' own `model.quantize("int8")`).

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
    require_tf_keras("quantize")
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
    with qkeras.quantize_scope(custom_objects):
        annotated = keras.models.clone_model(flat, clone_function=annotate)
        try:
            return qkeras.quantize_apply(annotated, scheme=tfmot_scheme)
        except RuntimeError as error:
            # Whether a layer is supported is only known after TF-MOT's layout transforms
            # (a BatchNormalization after a convolution is folded into it, one alone is not
            # supported), so the check is TF-MOT's own; its message is made actionable here.
            match = _UNSUPPORTED.search(str(error))
            names = {layer.name: layer for layer in flat.layers}
            if match is None or match.group(1) not in names:
                raise
            raise _unsupported_layer_error(names[match.group(1)], tfmot_scheme) from error
