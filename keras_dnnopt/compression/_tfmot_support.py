"""What quantization and clustering share: the Keras check, the TF-MOT import, and the
rewriting of a model into built-in layers TF-MOT knows.

TF-MOT (`tensorflow-model-optimization`) only works with tf_keras (Keras 2) models. On
tf_keras, it quantizes and clusters models made of *built-in* layers it has a registry
entry for; the composite layers of `keras_dnnopt.layers` (blocks holding `Conv2D`,
`BatchNormalization`, `ReLU`... sublayers) are custom layers to it. Rather than writing a
`QuantizeConfig` for every block (which could not fold batch norm into the convolutions,
as TF-MOT's graph transforms do for built-in layers), `flatten_model` rebuilds the model
with every block *unrolled* (`BaseBlock.unroll`: the block's own built-in sublayers,
applied directly, sharing their weights) and every nested functional model inlined. TF-MOT
then sees only built-in layers, and its `Conv2D + BatchNormalization + ReLU` transforms
apply to the blocks' sublayers exactly as to a flat `keras_dnnopt.models` builder's.
"""

import importlib

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf

_KERAS3_WAY_OUT = (
    "To use it, set TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported and build the "
    "model with `tf.keras` (or `keras_dnnopt.backend.keras`). What works on Keras 3: "
    "post-training quantization with `keras_dnnopt.export.export_tflite(model, path, "
    "quantization=\"int8\", representative_data=...)` (or \"dynamic\" / \"float16\", which "
    "need no data), Keras' own `model.quantize(\"int8\")`, and, natively, pruning "
    "(`keras_dnnopt.compression.prune`) and weight clustering "
    "(`keras_dnnopt.compression.cluster`)."
)


def require_tf_keras(function_name):
    """Raises the Keras 3 error of a function that needs TF-MOT.

    Args:
        function_name: the public name of the function, e.g. `"quantize"`.

    Raises:
        NotImplementedError: on Keras 3, saying that TF-MOT needs tf_keras, how to switch
            and what works on Keras 3.
    """
    if USING_TF_KERAS:
        return
    raise NotImplementedError(
        f"`keras_dnnopt.compression.{function_name}` runs through TF-MOT "
        "(tensorflow-model-optimization), which only accepts tf_keras (Keras 2) models, and "
        f"keras_dnnopt is running on {KERAS_NAME}. {_KERAS3_WAY_OUT}"
    )


def import_tfmot():
    """Imports `tensorflow_model_optimization` (a dependency of keras_dnnopt)."""
    try:
        return importlib.import_module("tensorflow_model_optimization")
    except ImportError as error:  # pragma: no cover - it is in install_requires
        raise ImportError(
            "Quantization-aware training and clustering need TF-MOT: "
            "`pip install tensorflow-model-optimization` (or reinstall keras_dnnopt, which "
            "depends on it)."
        ) from error


def _is_composite(layer):
    # The blocks of keras_dnnopt.layers (any layer with the `unroll(inputs)` protocol).
    return callable(getattr(layer, "unroll", None)) and not isinstance(layer, keras.Model)


def _graph_of(model):
    """The functional graph of a model: the model itself, or the one a built Keras 3
    `Sequential` keeps inside; None for a subclassed or unbuilt model."""
    if USING_TF_KERAS:
        return model if getattr(model, "_is_graph_network", False) else None
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _is_graph_model(layer):
    return isinstance(layer, keras.Model) and _graph_of(layer) is not None


def node_parts(node):
    """`(layer, args, kwargs, outputs)` of a node of a functional graph, on either Keras."""
    if USING_TF_KERAS:
        return node.layer, node.call_args, node.call_kwargs, node.outputs
    return (node.operation, node.arguments.args, node.arguments.kwargs,
            node.output_tensors)


def is_symbolic(value):
    """Whether `value` is a symbolic tensor of a functional graph (either Keras)."""
    return keras.backend.is_keras_tensor(value) if hasattr(value, "shape") else False


def graph_nodes(model):
    """The nodes of functional `model` in topological order (its input nodes left out)."""
    graph = _graph_of(model)
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # noqa: SLF001 (Keras graph)
        for node in graph._nodes_by_depth[depth]:  # noqa: SLF001
            if not node.is_input:
                yield node


def _needs_flattening(model):
    return any(_is_composite(layer) or isinstance(layer, keras.Model) for layer in model.layers)


def _run_graph(model, inputs, groups):
    """Applies the layers of functional `model` to the symbolic `inputs` (a flat list),
    unrolling blocks and inlining nested models; returns the outputs (a flat list)."""
    graph = _graph_of(model)
    tensors = {id(t): new for t, new in zip(graph.inputs, inputs, strict=True)}

    def mapped(structure):
        return tf.nest.map_structure(lambda t: tensors.get(id(t), t), structure)

    for node in graph_nodes(model):
        layer, args, kwargs, node_outputs = node_parts(node)
        args, kwargs = mapped(args), mapped(kwargs)
        if _is_composite(layer):
            outputs = layer.unroll(args[0])
            groups[layer.name] = [sub.name for sub in layer.sublayers]
        elif isinstance(layer, keras.Model):
            if not _is_graph_model(layer):
                raise ValueError(
                    f"Layer {layer.name!r} is a subclassed model, whose layer graph cannot be "
                    "read to rewrite it. Build it as a functional or Sequential model."
                )
            before = set(groups)
            outputs = _run_graph(layer, tf.nest.flatten(args[0]), groups)
            outputs = outputs[0] if len(outputs) == 1 else outputs
            inner = [sub.name for sub in layer.layers
                     if not isinstance(sub, keras.layers.InputLayer)]
            groups[layer.name] = inner + [n for g in set(groups) - before for n in groups[g]]
        else:
            outputs = layer(*args, **kwargs)
        for old, new in zip(tf.nest.flatten(node_outputs), tf.nest.flatten(outputs),
                            strict=True):
            tensors[id(old)] = new
    return [tensors[id(t)] for t in graph.outputs]


def flatten_model(model, always=False):
    """Rebuilds `model` from built-in layers: blocks unrolled, nested models inlined.

    The new functional model shares its layers (and so its weights) with `model`; a model
    with nothing to flatten is returned as is, unless `always`.

    Args:
        model: a functional or Sequential model (either Keras).
        always: rebuild even a model with nothing to flatten (so that the result is
            always a functional model). Defaults to False.

    Returns:
        A tuple `(flat_model, groups)`, `groups` mapping the name of each unrolled block or
        inlined model to the names of its layers in `flat_model`.

    Raises:
        ValueError: for a subclassed model (whose graph cannot be read) or a Sequential
            model that was never built.
    """
    if not always and not _needs_flattening(model):
        return model, {}
    if not _is_graph_model(model):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model or an unbuilt Sequential model: "
            "its layer graph cannot be read to rewrite it. Build it as a functional model, or "
            "give the Sequential model an `keras.Input(shape)` first."
        )
    groups = {}
    graph = _graph_of(model)
    names = graph.input_names if USING_TF_KERAS else [t.name for t in graph.inputs]
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name)
              for t, name in zip(graph.inputs, names, strict=True)]
    outputs = _run_graph(model, inputs, groups)
    outputs = outputs[0] if len(outputs) == 1 else outputs
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name), groups


def select_layers(model, layers, groups, arg_name="layers"):
    """Resolves a `layers=` argument into the set of layer names of `model` it selects.

    Args:
        model: the (flattened) model.
        layers: None (every layer), or a list/tuple of layer names; the name of an unrolled
            block or inlined model (a key of `groups`) selects all its layers.
        groups: from `flatten_model`.
        arg_name: the argument name, for the message.

    Returns:
        A set of layer names of `model`, or None for every layer.

    Raises:
        ValueError: for a value that is not a non-empty list of names, or a name that is
            neither a layer of the model nor a block of it.
    """
    return select_names(model.name, {layer.name for layer in model.layers}, layers, groups,
                        arg_name)


def select_names(model_name, names, layers, groups, arg_name="layers"):
    """`select_layers` for a model given by its name and the set of its layers' names."""
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(
            f"Argument `{arg_name}` must be None (every layer) or a non-empty list of layer "
            f"names. Received: {arg_name}={layers!r}"
        )
    selected = set()
    for name in layers:
        if isinstance(name, keras.layers.Layer):
            name = name.name
        if name in groups:
            selected.update(groups[name])
        elif name in names:
            selected.add(name)
        else:
            known = sorted(set(names) | set(groups))
            shown = ", ".join(repr(n) for n in known[:20]) + (", ..." if len(known) > 20 else "")
            raise ValueError(
                f"Argument `{arg_name}` names a layer that is not in model {model_name!r}: "
                f"{name!r}. Layers (and blocks) of the model: {shown}. "
                f"Received: {arg_name}={list(layers)!r}"
            )
    return selected
