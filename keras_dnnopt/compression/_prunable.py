"""Which weights of which layers pruning sparsifies, and walking the layers of a model.

Shared by the tf_keras (TF-MOT) and Keras 3 (native) pruning and by `sparsity_report`,
so that both Kerases prune, and report, the same kernels. The built-in layers and their
prunable weights are those of TF-MOT's `PruneRegistry` (convolution and dense kernels,
the pointwise kernels of separable convolutions, embeddings; *not* depthwise kernels,
biases or normalization weights); any other layer is prunable when it implements TF-MOT's
`PrunableLayer` protocol, `get_prunable_weights()`, as the blocks of `keras_dnnopt.layers`
do.
"""

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.layers.base_block import BaseBlock

# The built-in layers TF-MOT's PruneRegistry prunes, and the attribute of each weight.
_BUILTIN_WEIGHTS = {
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "Conv2DTranspose": ("kernel",),
    "Conv3DTranspose": ("kernel",),
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "Dense": ("kernel",),
    "Embedding": ("embeddings",),
}


def _builtin_attributes(layer):
    for class_name, attributes in _BUILTIN_WEIGHTS.items():
        # The exact class, as TF-MOT's registry: in tf_keras DepthwiseConv2D subclasses
        # Conv2D, and its depthwise kernel is not pruned.
        if type(layer) is getattr(keras.layers, class_name, None):
            return attributes
    return None


def _variable_name(variable):
    name = getattr(variable, "path", None) or variable.name
    return name[:-2] if name.endswith(":0") else name


def prunable_weights(layer):
    """The weights of `layer` that pruning sparsifies, with a name for each.

    Args:
        layer: a built layer.

    Returns:
        A list of `(name, variable)`: for a built-in layer the attribute (`"kernel"`,
        `"pointwise_kernel"`), for a block `"{sublayer}/kernel"`, for another layer with
        `get_prunable_weights` the variable's name. Empty for a layer pruning leaves alone.
    """
    attributes = _builtin_attributes(layer)
    if attributes is not None:
        return [(attribute, getattr(layer, attribute)) for attribute in attributes]
    if isinstance(layer, BaseBlock):
        return [(f"{sub.name}/kernel", sub.kernel) for sub in layer.sublayers
                if type(sub) is keras.layers.Conv2D]
    if callable(getattr(layer, "get_prunable_weights", None)):
        return [(_variable_name(v), v) for v in layer.get_prunable_weights()]
    return []


def supports_pruning(layer):
    """Whether `layer` is of a kind pruning knows (a built-in of the registry, or a layer
    with `get_prunable_weights`), whether built or not."""
    return (_builtin_attributes(layer) is not None
            or callable(getattr(layer, "get_prunable_weights", None)))


def is_graph_model(model):
    """Whether `model` is a Sequential or functional model (whose layers can be cloned)."""
    if isinstance(model, keras.Sequential):
        return True
    return bool(getattr(model, "_is_graph_network", False)) or (
        type(model).__name__ == "Functional")


def pruning_implementation():
    """The module implementing pruning for the Keras in use: `_pruning_tfmot` (TF-MOT,
    tf_keras) or `_pruning_native` (Keras 3). Both provide `wrapper_class()`,
    `wrap_layer(layer, params)`, `apply_masks(wrapper)` and `scheduled_sparsity(wrapper)`,
    and their wrappers expose `.layer` and `.pruning_vars` (`(weight, mask, threshold)`
    per prunable weight, in the order of `prunable_weights(wrapper.layer)`)."""
    if USING_TF_KERAS:
        from keras_dnnopt.compression import _pruning_tfmot as implementation
    else:
        from keras_dnnopt.compression import _pruning_native as implementation
    return implementation


def is_pruning_wrapper(layer):
    """Whether `layer` is a pruning wrapper of the Keras in use."""
    return isinstance(layer, pruning_implementation().wrapper_class())


def iter_layers(model):
    """Yields the layers of `model`, descending into nested models (not into blocks)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer
