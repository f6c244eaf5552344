"""Per-layer multiply-accumulate (MAC) rules, one small function per layer kind.

A MAC is one multiply-add; the counts are per sample (batch 1) and leave out bias
additions, the usual convention of the MobileNet papers (569M MACs for MobileNet,
300M for MobileNetV2 at 224x224). Each rule takes the layer, the shapes of its
inputs and the shapes of its outputs (tuples that include the batch dimension) and
returns an integer.

Dispatch is on the *exact* layer class, walking the class's MRO from the most
derived class: in tf_keras `DepthwiseConv2D`, `SeparableConv2D` and
`Conv2DTranspose` subclass `Conv2D`, so an `isinstance` test on `Conv2D` would give
them the wrong rule. A user's subclass of a built-in layer gets the rule of the
built-in class it derives from.
"""

import math

from keras_dnnopt.backend import keras


class UnknownShapeError(ValueError):
    """A dimension the rule needs is not known (None) in the model's graph."""


def _prod(dims):
    dims = tuple(dims)
    if any(d is None for d in dims):
        raise UnknownShapeError(f"undefined dimension in {dims}")
    return math.prod(dims)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _spatial(layer, shape):
    """The spatial dims of a (batch, ..., channels) or (batch, channels, ...) shape."""
    return shape[1:-1] if _channels_last(layer) else shape[2:]


def _channels(layer, shape):
    return shape[-1] if _channels_last(layer) else shape[1]


def _elements(shape):
    return _prod(shape[1:])


def conv_macs(layer, input_shapes, output_shapes):
    """Conv1D/2D/3D: out spatial x Cout x prod(kernel) x Cin / groups."""
    cin = _channels(layer, input_shapes[0])
    groups = getattr(layer, "groups", 1) or 1
    out = output_shapes[0]
    return (_prod(_spatial(layer, out)) * layer.filters * _prod(layer.kernel_size) * cin
            // groups)


def conv_transpose_macs(layer, input_shapes, output_shapes):
    """Conv1D/2D/3DTranspose: every input element meets the whole kernel:
    in spatial x Cin x prod(kernel) x Cout."""
    inp = input_shapes[0]
    cin = _channels(layer, inp)
    groups = getattr(layer, "groups", 1) or 1
    return _prod(_spatial(layer, inp)) * cin * _prod(layer.kernel_size) * layer.filters // groups


def depthwise_macs(layer, input_shapes, output_shapes):
    """DepthwiseConv1D/2D: out spatial x Cin x depth_multiplier x prod(kernel)."""
    cin = _channels(layer, input_shapes[0])
    out = output_shapes[0]
    return _prod(_spatial(layer, out)) * cin * layer.depth_multiplier * _prod(layer.kernel_size)


def separable_macs(layer, input_shapes, output_shapes):
    """SeparableConv1D/2D: the depthwise part plus the pointwise 1x1 part."""
    cin = _channels(layer, input_shapes[0])
    spatial = _prod(_spatial(layer, output_shapes[0]))
    mid = cin * layer.depth_multiplier
    return spatial * mid * _prod(layer.kernel_size) + spatial * mid * layer.filters


def dense_macs(layer, input_shapes, output_shapes):
    """Dense: inputs x units x the leading (non-batch) dims."""
    return _elements(input_shapes[0]) * layer.units


def per_output_element_macs(layer, input_shapes, output_shapes):
    """One multiply-add per output element: BatchNormalization in inference form
    (y = x * scale + shift), LayerNormalization, Rescaling, Normalization."""
    return _elements(output_shapes[0])


def pooling_macs(layer, input_shapes, output_shapes):
    """Max/AveragePooling: out elements x pool area (one compare or add each)."""
    return _elements(output_shapes[0]) * _prod(layer.pool_size)


def global_pooling_macs(layer, input_shapes, output_shapes):
    """GlobalMax/GlobalAveragePooling: one operation per input element."""
    return _elements(input_shapes[0])


def merge_macs(layer, input_shapes, output_shapes):
    """Add/Subtract/Multiply/Average: (number of inputs - 1) x output elements,
    that is one operation per output element for the usual two inputs."""
    return max(len(input_shapes) - 1, 1) * _elements(output_shapes[0])


def zero_macs(layer, input_shapes, output_shapes):
    """No multiply-adds (lookups, activations, reshapes)."""
    return 0


def time_distributed_macs(layer, input_shapes, output_shapes):
    """TimeDistributed: the inner layer's MACs once per time step."""
    inner_in = [(s[0], *s[2:]) for s in input_shapes]
    inner_out = [(s[0], *s[2:]) for s in output_shapes]
    macs = layer_macs(layer.layer, inner_in, inner_out)
    if macs is None:
        return None
    return macs * _prod(input_shapes[0][1:2])


def wrapper_macs(layer, input_shapes, output_shapes):
    """Other wrappers (e.g. TF-MOT's pruning and quantization wrappers): the wrapped
    layer's MACs on the same shapes."""
    return layer_macs(layer.layer, input_shapes, output_shapes)


_RULE_NAMES = {
    conv_macs: ("Conv1D", "Conv2D", "Conv3D"),
    conv_transpose_macs: ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"),
    depthwise_macs: ("DepthwiseConv1D", "DepthwiseConv2D"),
    separable_macs: ("SeparableConv1D", "SeparableConv2D"),
    dense_macs: ("Dense",),
    per_output_element_macs: (
        "BatchNormalization", "LayerNormalization", "GroupNormalization", "Rescaling",
        "Normalization",
    ),
    pooling_macs: (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    ),
    global_pooling_macs: (
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    ),
    merge_macs: ("Add", "Subtract", "Multiply", "Average"),
    zero_macs: ("Embedding", "PReLU", "InputLayer"),
    time_distributed_macs: ("TimeDistributed",),
}

_RULES = None


def _rules():
    global _RULES
    if _RULES is None:
        rules = {}
        for rule, names in _RULE_NAMES.items():
            for name in names:
                klass = getattr(keras.layers, name, None)
                if klass is not None:
                    rules[klass] = rule
        _RULES = rules
    return _RULES


def is_builtin_layer(layer):
    """Whether the layer's class is one of the Keras in use (not a user's class)."""
    module = type(layer).__module__ or ""
    return module.split(".")[0] in ("keras", "tf_keras")


def find_rule(layer):
    """The MAC rule of the layer's class (exact class first, then its bases), or None."""
    rules = _rules()
    for klass in type(layer).__mro__:
        rule = rules.get(klass)
        if rule is not None:
            return rule
    if isinstance(layer, keras.layers.Wrapper):
        return wrapper_macs
    return None


def layer_macs(layer, input_shapes, output_shapes):
    """MACs of one call of `layer` (per sample), or None when they are unknown.

    Unknown means: a user's custom layer without a rule (the profiler cannot see
    inside it), or a built-in layer with weights but no rule here (e.g. recurrent or
    attention layers). Built-in layers without weights and without a rule
    (activations, reshapes, dropout, padding, concatenation, ...) count 0.

    Args:
        layer: the layer.
        input_shapes: list of input shapes, each including the batch dimension.
        output_shapes: list of output shapes, each including the batch dimension.

    Returns:
        An int, or None when the layer's MACs are unknown.

    Raises:
        UnknownShapeError: when a dimension the rule needs is undefined.
    """
    rule = find_rule(layer)
    if rule is not None:
        return rule(layer, list(input_shapes), list(output_shapes))
    if is_builtin_layer(layer) and not layer.weights:
        return 0
    return None
