"""Weight clustering: `cluster` and `strip_clustering`, on both Kerases (TF-MOT on
tf_keras, native on Keras 3).

The features are checked against the weights themselves (unique values and zero positions
of each kernel, before and after training), with the unclustered model as the control.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.compression.clustering import (
    CENTROID_INITIALIZATIONS,
    cluster,
    strip_clustering,
)
from keras_dnnopt.layers import ConvBlock, SeparableConvBlock
from tests.helpers import save_and_load


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:256], data.target[:256]


def small_cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="dense")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def fit(model, x, y, epochs=1):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)


def layer_type(model, name):
    """The class name of the layer `name` of `model`, or of the wrapper around it."""
    for layer in model.layers:
        if name in (layer.name, getattr(getattr(layer, "layer", None), "name", None)):
            return type(layer).__name__
    raise KeyError(name)


def find_layer(model, name):
    """A layer of `model` by name, the sublayers of its blocks included."""
    for layer in model.layers:
        for sub in [layer, *getattr(layer, "sublayers", [])]:
            if sub.name == name:
                return sub
    raise KeyError(name)


def kernel_of(model, name):
    return np.asarray(find_layer(model, name).kernel)


def unique_count(model, name):
    return np.unique(kernel_of(model, name)).size


# ---------------------------------------------------------------- both Kerases: bad input


@pytest.mark.parametrize("number_of_clusters, match", [
    (1, r"Argument `number_of_clusters` must be >= 2\. Received: number_of_clusters=1"),
    (0, r"Argument `number_of_clusters` must be >= 2\. Received: number_of_clusters=0"),
    (2.5, r"Argument `number_of_clusters` must be an integer\. Received: number_of_clusters=2.5"),
    (True, r"Argument `number_of_clusters` must be an integer\. Received: number_of_clusters=True"),
])
def test_bad_number_of_clusters_is_rejected(number_of_clusters, match):
    with pytest.raises(ValueError, match=match):
        cluster(small_cnn(), number_of_clusters)


@pytest.mark.parametrize("centroid_init", ["kmeans", "LINEAR", "density_based", None])
def test_unknown_centroid_init_is_rejected(centroid_init):
    with pytest.raises(ValueError, match=r"Argument `centroid_init` must be one of 'kmeans\+\+', "
                                         r"'linear', 'density', 'random'\. Received"):
        cluster(small_cnn(), 4, centroid_init=centroid_init)


def test_non_bool_preserve_sparsity_is_rejected():
    with pytest.raises(ValueError, match=r"Argument `preserve_sparsity` must be a bool\. "
                                         r"Received: preserve_sparsity='yes'"):
        cluster(small_cnn(), 4, preserve_sparsity="yes")


def test_preserve_sparsity_needs_three_clusters():
    with pytest.raises(ValueError, match=r"Argument `number_of_clusters` must be >= 3 with "
                                         r"preserve_sparsity=True .* number_of_clusters=2"):
        cluster(small_cnn(), 2, preserve_sparsity=True)


@pytest.mark.parametrize("number_of_clusters, preserve_sparsity", [(2, False), (3, True)])
def test_the_smallest_valid_arguments_pass_validation(number_of_clusters, preserve_sparsity):
    # The other side of each boundary: 2 clusters (3 keeping zeros), a known init, a bool.
    clustered = cluster(small_cnn(), number_of_clusters, centroid_init="linear",
                        preserve_sparsity=preserve_sparsity)
    assert unique_count(strip_clustering(clustered), "dense") <= number_of_clusters


def test_a_model_of_the_other_keras_is_rejected(other_keras):
    inputs = other_keras.Input((4,))
    model = other_keras.Model(inputs, other_keras.layers.Dense(2)(inputs))
    with pytest.raises(TypeError, match="Argument `model` is a model of .*TF_USE_LEGACY_KERAS"):
        cluster(model, 4)
    with pytest.raises(TypeError, match="Argument `model` is a model of"):
        strip_clustering(model)


# ---------------------------------------------------------------- both Kerases: clustering


@pytest.mark.parametrize("centroid_init", CENTROID_INITIALIZATIONS)
def test_after_fit_and_strip_each_kernel_has_at_most_k_values(digits, centroid_init):
    x, y = digits
    model = small_cnn()
    fit(model, x, y)
    original = {name: kernel_of(model, name).copy() for name in ("conv", "dense")}

    clustered = cluster(model, 8, centroid_init=centroid_init)
    if USING_TF_KERAS:
        assert layer_type(clustered, "dense") == "ClusterWeights"
    history = fit(clustered, x, y)
    assert np.isfinite(history.history["loss"]).all()
    stripped = strip_clustering(clustered)

    assert [type(layer).__name__ for layer in stripped.layers] == [
        "InputLayer", "Conv2D", "Flatten", "Dense"]
    for name, kernel in original.items():
        assert 2 <= unique_count(stripped, name) <= 8
        assert np.unique(kernel).size > 100  # the control: unclustered, every value differs
        # The given model is left alone.
        np.testing.assert_array_equal(kernel_of(model, name), kernel)
    # The clustered kernel stays close to the original (centroids of its values).
    conv = kernel_of(stripped, "conv")
    assert np.abs(conv - original["conv"]).mean() < 0.5 * np.abs(original["conv"]).mean()


def test_clusters_survive_save_and_load_and_the_stripped_model_is_plain(digits):
    x, y = digits
    clustered = cluster(small_cnn(), 4)
    fit(clustered, x, y)
    stripped = strip_clustering(clustered)
    assert [type(layer).__name__ for layer in stripped.layers] == [
        "InputLayer", "Conv2D", "Flatten", "Dense"]
    restored = save_and_load(stripped)
    assert unique_count(restored, "dense") <= 4
    # Nothing keeps the clusters any more: the plain model trains every weight freely.
    fit(restored, x, y)
    assert unique_count(restored, "dense") > 100


@pytest.mark.parametrize("preserve_sparsity", [True, False])
def test_preserve_sparsity_keeps_the_zeros(digits, preserve_sparsity):
    x, y = digits
    model = small_cnn()
    fit(model, x, y)
    kernel = kernel_of(model, "dense")
    zeros = np.abs(kernel) < np.median(np.abs(kernel))  # magnitude pruning to 50%
    model.get_layer("dense").kernel.assign(np.where(zeros, 0.0, kernel))

    clustered = cluster(model, 4, preserve_sparsity=preserve_sparsity, layers=["dense"])
    fit(clustered, x, y)
    after = kernel_of(strip_clustering(clustered), "dense")

    assert np.unique(after).size <= 4  # with preserve_sparsity, the zero is one of the 4
    if preserve_sparsity:
        assert (after[zeros] == 0).all()
    else:  # the control: the zeros join a cluster whose centroid moves off zero
        assert not (after[zeros] == 0).all()


def test_layers_selects_what_is_clustered(digits):
    x, y = digits
    clustered = cluster(small_cnn(), 4, layers=["dense"])
    if USING_TF_KERAS:
        assert layer_type(clustered, "dense") == "ClusterWeights"
        assert layer_type(clustered, "conv") == "Conv2D"
    fit(clustered, x, y)
    stripped = strip_clustering(clustered)
    assert unique_count(stripped, "dense") <= 4
    assert unique_count(stripped, "conv") == 144  # 3 x 3 x 1 x 16, left alone


@pytest.mark.parametrize("layers, match", [
    (["nope"], r"Argument `layers` names a layer that is not in model 'small_cnn': 'nope'"),
    (["flatten"], r"Argument `layers` names layer 'flatten' \(Flatten\), which has no weight "
                  r"TF-MOT clusters"),
    ([], r"Argument `layers` must be None \(every layer\) or a non-empty list"),
])
def test_bad_layers_are_rejected(layers, match):
    with pytest.raises(ValueError, match=match):
        cluster(small_cnn(), 4, layers=layers)


def test_blocks_cluster_like_their_built_in_layers(digits):
    x, y = digits
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        ConvBlock(8, 3, name="stem"),
        SeparableConvBlock(16, name="sep"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(10, name="head"),
    ])
    clustered = cluster(model, 4)
    if USING_TF_KERAS:
        wrapped = {layer.layer.name for layer in clustered.layers if hasattr(layer, "layer")}
        # TF-MOT clusters Conv2D and Dense kernels, not depthwise kernels.
        assert wrapped == {"stem_conv", "sep_pointwise", "head"}
    fit(clustered, x, y)
    stripped = strip_clustering(clustered)
    for name in ("stem_conv", "sep_pointwise", "head"):
        assert unique_count(stripped, name) <= 4
    depthwise = find_layer(stripped, "sep_depthwise")
    kernel = depthwise.depthwise_kernel if USING_TF_KERAS else depthwise.kernel
    assert np.unique(np.asarray(kernel)).size == 72  # left alone


class Scale(keras.layers.Layer):
    """A custom layer with a weight, unknown to TF-MOT."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def test_a_layer_tfmot_cannot_cluster_is_named_with_the_way_out():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(Scale(name="my_scale")(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="dense")(x))
    with pytest.raises(ValueError, match=r"Layer 'my_scale' \(Scale\) has weights that TF-MOT "
                                         r"cannot cluster.*layers=\[\.\.\.\].*ClusterableLayer"):
        cluster(model, 4)
    # The way out: leave it out.
    clustered = cluster(model, 4, layers=["dense"])
    assert unique_count(strip_clustering(clustered), "dense") <= 4


def test_a_pruned_model_clusters_keeping_its_zeros(digits):
    # The first half of PCQAT, with the package's own `prune` (TF-MOT's on tf_keras, native
    # on Keras 3): its wrappers are stripped by `cluster`, then the zeros are kept.
    from keras_dnnopt.compression import PruningCallback, prune, strip_pruning

    x, y = digits
    pruned = prune(small_cnn(), 0.5, schedule="constant", frequency=1, layers=["dense"])
    pruned.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[PruningCallback()])
    zeros = kernel_of(strip_pruning(pruned), "dense") == 0
    assert 0.49 <= zeros.mean() <= 0.51

    clustered = cluster(pruned, 4, preserve_sparsity=True, layers=["dense"])
    fit(clustered, x, y)
    after = kernel_of(strip_clustering(clustered), "dense")
    np.testing.assert_array_equal(after == 0, zeros)
    assert np.unique(after).size <= 4
