"""Quantization-aware training on Keras 3: the graph rewrite (TF-MOT only accepts tf_keras
models; this is our own, on TensorFlow's fake-quant ops).

`quantize_keras3` rebuilds a functional copy of the model in which fake quantization sits
where TFLite's int8 kernels quantize (the layers are in `_qat_layers`):

1. The model is flattened (`flatten_model`): the blocks of `keras_dnnopt.layers` unrolled
   into their built-in sublayers, nested functional models inlined.
2. Each `Conv2D`, `DepthwiseConv2D` and `Dense` is fused with the `BatchNormalization`
   that alone reads its output (folded into its kernel) and then with the `ReLU` /
   `ReLU(max_value=6)` / `Activation("relu" | "relu6")` that alone reads that, or with its
   own relu/relu6 activation, into one `Quantized*` layer, as TFLite fuses them into one
   int8 kernel. A `SeparableConv2D` becomes its two kernels: a quantized depthwise
   convolution and a quantized 1x1 convolution (TFLite has no separable kernel). Another
   activation of a layer (softmax, sigmoid...) becomes an `Activation` layer after it.
3. A `MovingAverageQuantizer` follows each model input and each layer that computes a new
   value in TFLite's int8 graph: `Add`, `Multiply`, `Concatenate` (and the other merge
   layers), average pooling, activations, a batch norm with no convolution before it.
   Layers that only move values (`Reshape`, `Flatten`, `Dropout`, padding, max pooling)
   keep their input's range, as TFLite's int8 kernels for them require.
4. Other layers are refused with an error naming the layer and listing what is
   supported; with `skip_unsupported=True` they stay float (with a warning), their
   output quantized so that the rest of the model stays int8.

The weights of the user's model are copied: it is not changed.
"""

import warnings

from keras_dnnopt.backend import keras
from keras_dnnopt.compression._clustering_native import attach_clusters
from keras_dnnopt.compression._qat_layers import (
    FUSED_ACTIVATIONS,
    MovingAverageQuantizer,
    QuantizedConv2D,
    QuantizedDense,
    QuantizedDepthwiseConv2D,
    QuantizedLayer,
)
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    graph_nodes,
    node_parts,
    select_layers,
)
from keras_dnnopt.compression.collaborative import check_scheme_input, is_clustered

_QUANTIZED = {"Conv2D": QuantizedConv2D, "DepthwiseConv2D": QuantizedDepthwiseConv2D,
              "Dense": QuantizedDense}
_SEPARABLE = "SeparableConv2D"
# Layers that only move values: their output keeps the input's range (and TFLite's int8
# kernels for them keep the input's scale: a range of their own would add a requantize).
_PASSTHROUGH = {
    "Reshape", "Flatten", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ZeroPadding1D",
    "ZeroPadding2D", "Cropping1D", "Cropping2D", "MaxPooling1D", "MaxPooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Permute", "Identity", "UpSampling2D",
    "RepeatVector",
}
# Layers that compute a new value: their output gets a quantizer.
_REQUANTIZED = {
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "BatchNormalization", "ReLU", "LeakyReLU", "ELU", "Softmax",
    "Activation", "Rescaling",
}
SUPPORTED_LAYERS = tuple(sorted(set(_QUANTIZED) | {_SEPARABLE} | _PASSTHROUGH | _REQUANTIZED))


def is_quantized(model):
    """Whether `model` holds layers of this module's quantization-aware training."""
    return any(isinstance(layer, (QuantizedLayer, MovingAverageQuantizer))
               for layer in _all_layers(model))


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _activation_name(layer):
    """The activation of a layer as a name ("linear" for None), or None if unnamed."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    try:
        name = keras.activations.serialize(activation)
    except (TypeError, ValueError):
        return None
    return name if isinstance(name, str) else None


def _fusable_activation(layer):
    """The fused-activation name of a standalone activation layer, or None."""
    kind = type(layer).__name__
    if kind == "ReLU":
        if layer.negative_slope == 0 and layer.threshold == 0:
            if layer.max_value is None:
                return "relu"
            if float(layer.max_value) == 6.0:
                return "relu6"
        return None
    if kind == "Activation":
        name = _activation_name(layer)
        return name if name in ("relu", "relu6") else None
    return None


def _foldable_batch_norm(layer, node):
    """Whether `layer`, called at `node`, is a batch norm over the channels (last axis)."""
    if type(layer).__name__ != "BatchNormalization" or getattr(layer, "renorm", False):
        return False
    tensor = keras.tree.flatten(node_parts(node)[1])[0]
    axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
    if isinstance(axis, list):
        if len(axis) != 1:
            return False
        axis = axis[0]
    rank = len(tensor.shape)
    return axis % rank == rank - 1


def _unsupported_reason(layer):
    """Why a Conv/Dense layer cannot be quantized here, or None."""
    kind = type(layer).__name__
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "it is channels_first (quantization-aware training supports channels_last)"
    if kind == "Conv2D" and getattr(layer, "groups", 1) != 1:
        return "it is a grouped convolution (groups > 1)"
    if getattr(layer, "lora_enabled", False):
        return "it has LoRA enabled"
    return None


def _unsupported_error(layer, reason=None):
    why = f": {reason}" if reason else " (no quantized version of this layer type)"
    return ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) cannot be quantized for int8 "
        f"quantization-aware training on Keras 3{why}. Supported layers: "
        f"{', '.join(SUPPORTED_LAYERS)}, and the blocks of keras_dnnopt.layers (unrolled "
        "into those). Pass `skip_unsupported=True` to keep such layers float (their output "
        "is quantized), or `layers=[...]` listing the layers to quantize."
    )


def _clone(layer):
    return type(layer).from_config(layer.get_config())


class _Rewriter:
    """Builds the quantized copy of a flat functional model."""

    def __init__(self, flat, selected, preserve_sparsity, skip_unsupported,
                 preserve_clusters=False):
        self.flat = flat
        self.selected = selected
        self.preserve_sparsity = preserve_sparsity
        self.preserve_clusters = preserve_clusters
        self.skip_unsupported = skip_unsupported
        self.nodes = list(graph_nodes(flat))
        self.consumers = {}
        for node in self.nodes:
            _, args, kwargs, _ = node_parts(node)
            for tensor in keras.tree.flatten((args, kwargs)):
                if isinstance(tensor, keras.KerasTensor):
                    self.consumers.setdefault(id(tensor), []).append(node)
        self.output_ids = {id(t) for t in flat.outputs}
        self.names = {layer.name for layer in flat.layers}
        self.copies = []  # (new layer, old layer): weights copied once the model is built.
        self.skipped = []

    def _wanted(self, layer):
        return self.selected is None or layer.name in self.selected

    def _only_consumer(self, node):
        _, _, _, outputs = node_parts(node)
        outputs = keras.tree.flatten(outputs)
        if len(outputs) != 1 or id(outputs[0]) in self.output_ids:
            return None
        readers = self.consumers.get(id(outputs[0]), [])
        if len(readers) != 1:
            return None
        return readers[0]

    def _unique(self, name):
        base, k = name, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _quantizer(self, name):
        return MovingAverageQuantizer(name=self._unique(f"{name}_quantizer"))

    def plan_fusion(self, node):
        """The nodes fused with a Conv/Dense node: `(batch_norm_node, activation_node,
        fused activation name, activation kept after)`."""
        layer = node_parts(node)[0]
        activation = _activation_name(layer)
        if activation not in FUSED_ACTIVATIONS:
            return None, None, "linear", activation
        bn_node = act_node = None
        current = node
        if activation == "linear":
            reader = self._only_consumer(current)
            if reader is not None:
                reader_layer = node_parts(reader)[0]
                if _foldable_batch_norm(reader_layer, reader) and self._wanted(reader_layer):
                    bn_node = current = reader
            reader = self._only_consumer(current)
            if reader is not None:
                reader_layer = node_parts(reader)[0]
                fused = _fusable_activation(reader_layer)
                if fused is not None and self._wanted(reader_layer):
                    act_node, activation = reader, fused
        return bn_node, act_node, activation, None

    def run(self):
        tensors = {}
        inputs = []
        for tensor in self.flat.inputs:
            new = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
            inputs.append(new)
            is_float = "float" in str(tensor.dtype)
            tensors[id(tensor)] = self._quantizer(tensor.name)(new) if is_float else new
        absorbed = set()
        for node in self.nodes:
            if id(node) in absorbed:
                continue
            layer, args, kwargs, _ = node_parts(node)

            def mapped(structure):
                return keras.tree.map_structure(
                    lambda t: tensors.get(id(t), t) if isinstance(t, keras.KerasTensor)
                    else t, structure)

            args, kwargs = mapped(args), mapped(kwargs)
            kind = type(layer).__name__
            last = node
            if kind in _QUANTIZED or kind == _SEPARABLE:
                reason = _unsupported_reason(layer)
                if reason is not None or not self._wanted(layer):
                    out = self._float(layer, args, kwargs, reason, wanted=self._wanted(layer))
                else:
                    bn_node, act_node, activation, after = self.plan_fusion(node)
                    for extra in (bn_node, act_node):
                        if extra is not None:
                            absorbed.add(id(extra))
                            last = extra
                    bn = node_parts(bn_node)[0] if bn_node is not None else None
                    out = self._quantized(layer, args[0], bn, activation)
                    if after is not None:
                        out = keras.layers.Activation(
                            after, name=self._unique(f"{layer.name}_{after}"))(out)
                        out = self._quantizer(f"{layer.name}_{after}")(out)
            elif kind in _PASSTHROUGH or kind == "InputLayer":
                out = _clone(layer)(*args, **kwargs)
            elif kind in _REQUANTIZED and self._wanted(layer):
                new = _clone(layer)
                out = new(*args, **kwargs)
                self.copies.append((new, layer))
                out = self._quantizer(layer.name)(out)
            elif kind in _REQUANTIZED:
                out = self._float(layer, args, kwargs, None, wanted=False)
            else:
                out = self._float(layer, args, kwargs, None, wanted=self._wanted(layer))
            for old, new in zip(keras.tree.flatten(node_parts(last)[3]),
                                keras.tree.flatten(out), strict=True):
                tensors[id(old)] = new
        outputs = [tensors[id(t)] for t in self.flat.outputs]
        model = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                            outputs[0] if len(outputs) == 1 else outputs,
                            name=self.flat.name)
        for new, old in self.copies:
            new.set_weights(old.get_weights())
        for layer in model.layers:
            if isinstance(layer, QuantizedLayer) and layer.mask is not None:
                layer.set_mask_from_kernel()
            if isinstance(layer, QuantizedLayer) and self.preserve_clusters:
                # CQAT: each shared value of a clustered kernel stays one trainable centroid
                # (the native clustering's constraint); the fold and the per-channel int8
                # grid then keep at most as many values per channel as there are clusters.
                kernel = getattr(layer.layer, layer._kernel_name)
                if is_clustered(keras.ops.convert_to_numpy(kernel)):
                    attach_clusters(kernel, zero_cluster=self.preserve_sparsity)
        if self.skipped:
            warnings.warn(
                "Kept float (not quantized) by `skip_unsupported=True`: "
                + ", ".join(self.skipped) + ". Their outputs are quantized; in an int8 "
                "TFLite file they run as float kernels between dequantize and quantize ops.",
                stacklevel=3)
        return model

    def _float(self, layer, args, kwargs, reason, wanted):
        """A layer kept float: refused if wanted and not skipped."""
        if wanted and not self.skip_unsupported:
            raise _unsupported_error(layer, reason)
        new = _clone(layer)
        out = new(*args, **kwargs)
        self.copies.append((new, layer))
        if wanted:
            self.skipped.append(f"{layer.name!r} ({type(layer).__name__})")
            flat = keras.tree.flatten(out)
            if len(flat) == 1 and "float" in str(flat[0].dtype):
                out = self._quantizer(layer.name)(out)
        return out

    def _quantized(self, layer, x, bn, activation):
        kind = type(layer).__name__
        bn_clone = _clone(bn) if bn is not None else None
        if kind == _SEPARABLE:
            config = layer.get_config()
            depthwise = keras.layers.DepthwiseConv2D(
                config["kernel_size"], strides=config["strides"], padding=config["padding"],
                depth_multiplier=config["depth_multiplier"],
                dilation_rate=config["dilation_rate"], use_bias=False,
                name=f"{layer.name}_depthwise")
            pointwise = keras.layers.Conv2D(
                config["filters"], 1, use_bias=config["use_bias"],
                name=f"{layer.name}_pointwise")
            first = QuantizedDepthwiseConv2D(
                depthwise, preserve_sparsity=self.preserve_sparsity,
                name=self._unique(f"{layer.name}_depthwise"))
            second = QuantizedConv2D(pointwise, batch_norm=bn_clone, activation=activation,
                                     preserve_sparsity=self.preserve_sparsity,
                                     name=layer.name)
            out = second(first(x))
            weights = layer.get_weights()
            depthwise.set_weights(weights[:1])
            pointwise.set_weights(weights[1:])
        else:
            inner = type(layer).from_config({**layer.get_config(), "activation": "linear"})
            quantized = _QUANTIZED[kind](inner, batch_norm=bn_clone, activation=activation,
                                         preserve_sparsity=self.preserve_sparsity,
                                         name=layer.name)
            out = quantized(x)
            inner.set_weights(layer.get_weights())
        if bn is not None:
            bn_clone.set_weights(bn.get_weights())
        return out


def quantize_keras3(model, layers=None, scheme="default", skip_unsupported=False):
    """The Keras 3 QAT copy of `model` (see the module docstring).

    Args:
        model: a Keras 3 functional or Sequential model, with no pruning wrapper left.
        layers: as in `quantize`. Defaults to None.
        scheme: `"default"`, `"pqat"` (keeps the zeros of the kernels), `"cqat"` (keeps the
            shared values of clustered kernels: each stays one trainable centroid) or
            `"pcqat"` (both). Defaults to `"default"`.
        skip_unsupported: keep unsupported layers float instead of raising. Defaults to
            False.

    Returns:
        A new Keras 3 model with fake quantization.
    """
    flat, groups = flatten_model(model, always=True)
    selected = select_layers(flat, layers, groups)
    check_scheme_input(flat, scheme, selected)
    return _Rewriter(flat, selected, scheme in ("pqat", "pcqat"), skip_unsupported,
                     preserve_clusters=scheme in ("cqat", "pcqat")).run()
