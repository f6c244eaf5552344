"""Which weights of which layers pruning sparsifies (TF-MOT's `PruneRegistry` choice).

The bottom of the pruning modules: `_prunable` (and through it `pruning`, `sparsity`) and
both implementations, `_pruning_native` and `_pruning_tfmot`, import it, and it imports
none of them, so that `_prunable` can choose an implementation without an import cycle.
"""

from keras_dnnopt.backend import keras
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
