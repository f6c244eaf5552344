"""`cluster` and `strip_clustering`: weight clustering (weight sharing), on both Kerases.

Clustering replaces the values of each clustered kernel by `number_of_clusters` shared
values (centroids), trained with the model; a kernel then compresses to a small table and
an index per weight, and its file gzips far smaller.

- tf_keras: TF-MOT's `cluster_weights` wraps each layer in a `ClusterWeights` wrapper,
  which `strip_clustering` (TF-MOT's) removes once trained, leaving plain layers whose
  kernels hold only the centroid values.
- Keras 3, which TF-MOT refuses: the same API, built natively (see `_clustering_native`):
  the kernels are clustered in place on a copy of the model, and a variable constraint keeps
  them clustered through training; `strip_clustering` returns a copy without it.
"""

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras
from keras_dnnopt.compression import _clustering_native as native
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    import_tfmot,
    select_layers,
    select_names,
)
from keras_dnnopt.compression.collaborative import strip_compression_wrappers
from keras_dnnopt.layers.base_block import check_bool
from keras_dnnopt.utils.validation import check_choice, check_number

CENTROID_INITIALIZATIONS = ("kmeans++", "linear", "density", "random")

_TFMOT_INIT_NAMES = {
    "kmeans++": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density": "DENSITY_BASED",
    "random": "RANDOM",
}


def _unknown_layer_error(layer):
    return ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) has weights that TF-MOT cannot "
        "cluster: it is not a layer type TF-MOT knows. Either leave it out with "
        "`cluster(model, ..., layers=[...])` listing the layers to cluster, or (tf_keras) make "
        "it a `tfmot.clustering.keras.ClusterableLayer` (implement `get_clusterable_weights`)."
    )


def _nothing_to_cluster_error(layer, layers):
    return ValueError(
        f"Argument `layers` names layer {layer.name!r} ({type(layer).__name__}), which has "
        "no weight TF-MOT clusters (it clusters Conv and Dense kernels, not DepthwiseConv2D, "
        f"batch norm or weightless layers). Received: layers={list(layers)!r}"
    )


def _cluster_keras3(model, number_of_clusters, centroid_init, preserve_sparsity, layers):
    """`cluster` on Keras 3: the kernels of a copy of the model clustered in place, kept
    clustered by a variable constraint (see `_clustering_native`)."""
    # Pruning wrappers (the native ones of `prune` on Keras 3) are stripped first, as TF-MOT's
    # are on tf_keras; imported here, pruning being optional to clustering.
    from keras_dnnopt.compression._prunable import is_pruning_wrapper
    from keras_dnnopt.compression.pruning import strip_pruning

    if any(is_pruning_wrapper(layer) for layer in model.layers):
        model = strip_pruning(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    leaves = list(native.iter_leaf_layers(copy))
    groups = {}
    for leaf, group in leaves:
        if group != leaf.name:
            groups.setdefault(group, []).append(leaf.name)
    names = {leaf.name for leaf, _ in leaves}
    selected = select_names(copy.name, names, layers, groups)
    rng = np.random.default_rng(np.random.randint(2**31 - 1))  # follows set_random_seed
    for leaf, _ in leaves:
        if isinstance(leaf, keras.layers.InputLayer):
            continue
        if selected is not None and leaf.name not in selected:
            continue
        variable = native.clusterable_weight(leaf)
        if variable is None:
            if not leaf.trainable_weights or type(leaf).__name__ in (
                    "DepthwiseConv2D", "BatchNormalization", "LayerNormalization"):
                if selected is not None:
                    raise _nothing_to_cluster_error(leaf, layers)
                continue
            raise _unknown_layer_error(leaf)
        # As TF-MOT: a kernel with no more weights than clusters is left alone.
        if int(np.prod(variable.shape)) > number_of_clusters:
            native.cluster_variable(variable, number_of_clusters, centroid_init,
                                    preserve_sparsity, rng)
    return copy


def _clusterable_weight_names(layer):
    """The names of the weights TF-MOT clusters in `layer` (empty: nothing to cluster),
    or None when TF-MOT does not know the layer."""
    from tensorflow_model_optimization.python.core.clustering.keras import (
        clusterable_layer,
        clustering_registry,
    )

    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return [name for name, _ in layer.get_clusterable_weights()]
    registry = clustering_registry.ClusteringRegistry
    if not layer.trainable_weights:
        return []
    if not registry.supports(layer):
        return None
    if layer.__class__ not in registry._LAYERS_WEIGHTS_MAP:  # noqa: SLF001 (RNN, MHA)
        return ["weights"]
    return list(registry._weight_names(layer))  # noqa: SLF001 (no public accessor)


def cluster(model, number_of_clusters, centroid_init="kmeans++", preserve_sparsity=False,
            layers=None):
    """Makes a weight-clustering copy of a model: through TF-MOT on tf_keras, natively on
    Keras 3.

    Each clustered kernel is replaced by `number_of_clusters` shared values (centroids,
    initialized by `centroid_init` from the kernel's values) and the index of the centroid of
    each weight; training the returned model trains the centroids. After training,
    `strip_clustering` gives a plain model whose clustered kernels hold at most
    `number_of_clusters` unique values. On tf_keras, the blocks of `keras_dnnopt.layers`
    are unrolled into their built-in sublayers first (TF-MOT clusters built-in layers only)
    and pruning wrappers are stripped. On Keras 3, the kernels of a copy of the model are
    clustered in place and kept clustered through training by a variable constraint (the
    assignments fixed, each centroid moved by the mean of its weights' updates; see
    `keras_dnnopt.compression._clustering_native`): there are no wrappers, and the model
    saved before `strip_clustering` is a plain model that no longer keeps its clusters when
    trained further. The given model is not changed.

    Which layers are clustered (TF-MOT's registry, followed on Keras 3 too): the kernels
    of `Conv1D/2D/3D` (and their transposes), `Dense`, the pointwise kernels of
    `SeparableConv1D/2D` and `Embedding` (and, on tf_keras, RNN and `MultiHeadAttention`
    layers and any `tfmot.clustering.keras.ClusterableLayer`). `DepthwiseConv2D` and batch
    norm are left unclustered (TF-MOT: "big unrecoverable accuracy loss"), as is a kernel
    with no more weights than clusters.

    Args:
        model: a functional or Sequential model of the Keras in use (built, usually
            trained).
        number_of_clusters: the number of shared values per kernel, an int >= 2 (>= 3
            with `preserve_sparsity`, where the zero is one of them).
        centroid_init: how the centroids are initialized from the kernel's values:
            `"kmeans++"`, `"linear"` (evenly spaced between the minimum and maximum),
            `"density"` (evenly spaced in the cumulative distribution) or `"random"`
            (uniform between the minimum and maximum). Defaults to `"kmeans++"`.
        preserve_sparsity: whether the zeros of the kernels (a pruned model's) stay zero
            through clustering and training. Defaults to False.
        layers: None to cluster every layer TF-MOT can cluster, or a list of the names of
            the layers to cluster; a block's name selects its sublayers. Defaults to None.

    Returns:
        A new model to compile, train, and pass to `strip_clustering` (on tf_keras it has
        `ClusterWeights` wrappers and can go to `quantize(..., scheme="cqat")`).

    Raises:
        ValueError: for `number_of_clusters` not an int >= 2, an unknown `centroid_init`, a
            non-bool `preserve_sparsity`, `number_of_clusters < 3` with `preserve_sparsity`,
            a `layers` name that is not in the model or names a
            layer with no weight TF-MOT can cluster, or (with `layers=None`) a layer with
            weights that TF-MOT does not know (named, with the way out).
        TypeError: if `model` is not a Keras model, or is a model of the other Keras.

    Example:

    >>> clustered = cluster(model, number_of_clusters=16)
    >>> clustered.compile("adam", "sparse_categorical_crossentropy")
    >>> clustered.fit(x, y, epochs=1)
    >>> final = strip_clustering(clustered)

    Reference:
        - [Han et al., 2016. Deep Compression: Compressing Deep Neural Networks with
          Pruning, Trained Quantization and Huffman Coding](https://arxiv.org/abs/1510.00149)
        - [TF-MOT weight clustering](
          https://www.tensorflow.org/model_optimization/guide/clustering)
    """
    number_of_clusters = check_number("number_of_clusters", number_of_clusters, low=2,
                                      integer=True)
    check_choice("centroid_init", centroid_init, CENTROID_INITIALIZATIONS)
    check_bool("preserve_sparsity", preserve_sparsity)
    if preserve_sparsity and number_of_clusters < 3:
        raise ValueError(
            "Argument `number_of_clusters` must be >= 3 with preserve_sparsity=True (one of "
            "the clusters is the zeros, kept at zero). "
            f"Received: number_of_clusters={number_of_clusters}"
        )
    check_model(model)
    if not USING_TF_KERAS:
        return _cluster_keras3(model, number_of_clusters, centroid_init, preserve_sparsity,
                               layers)
    tfmot = import_tfmot()
    ckeras = tfmot.clustering.keras

    flat, groups = flatten_model(strip_compression_wrappers(model))
    selected = select_layers(flat, layers, groups)

    to_cluster = set()
    for layer in flat.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if selected is not None and layer.name not in selected:
            continue
        weight_names = _clusterable_weight_names(layer)
        if weight_names is None:
            raise _unknown_layer_error(layer)
        if not weight_names:
            if selected is not None:
                raise _nothing_to_cluster_error(layer, layers)
            continue
        to_cluster.add(layer.name)

    # A copy with the same weights, so that wrapping (which modifies the wrapped layer
    # objects) leaves the given model alone.
    copy = keras.models.clone_model(flat)
    copy.set_weights(flat.get_weights())
    init = getattr(ckeras.CentroidInitialization, _TFMOT_INIT_NAMES[centroid_init])

    def wrap(layer):
        if layer.name not in to_cluster:
            return layer
        return ckeras.cluster_weights(layer, number_of_clusters=number_of_clusters,
                                      cluster_centroids_init=init,
                                      preserve_sparsity=preserve_sparsity)

    with ckeras.cluster_scope():
        return keras.models.clone_model(copy, clone_function=wrap)


def strip_clustering(model):
    """Removes what `cluster` added to a model (TF-MOT's wrappers on tf_keras, the
    constraints on Keras 3), after training.

    Args:
        model: a model returned by `cluster` (and trained).

    Returns:
        A new model of plain layers whose clustered kernels hold only the centroid values
        (at most `number_of_clusters` unique values each).

    Raises:
        TypeError: if `model` is not a Keras model, or is a model of the other Keras.

    Example:

    >>> final = strip_clustering(clustered)
    >>> final.save("clustered.keras")
    """
    check_model(model)
    if not USING_TF_KERAS:
        # A copy has new variables, built from the layers' configs: without the constraints.
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    tfmot = import_tfmot()
    return tfmot.clustering.keras.strip_clustering(model)
