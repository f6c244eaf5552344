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
from keras_dnnopt.compression._prune_base import (  # noqa: F401 (re-exported)
    _builtin_attributes,
    _variable_name,
    prunable_weights,
    supports_pruning,
)


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
