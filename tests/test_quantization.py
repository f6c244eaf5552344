"""Quantization-aware training (`quantize`) and the collaborative schemes (PQAT, CQAT,
PCQAT).

On tf_keras the features are checked against independent references: the int8 TFLite file
TFLite's own converter makes from the QAT model (its outputs, its int8 kernels' zeros and
unique values), the weights of the original model, and TF-MOT's own `quantize_model` (which
refuses the block layers). The native Keras 3 QAT is tested in test_qat_keras3.py.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.compression.clustering import cluster, strip_clustering
from keras_dnnopt.compression.collaborative import QUANTIZE_SCHEMES
from keras_dnnopt.compression.quantization import quantize
from keras_dnnopt.layers import ConvBlock, InvertedResidualBlock, SeparableConvBlock
from keras_dnnopt.models import mobilenet_v1, mobilenet_v2

tf_keras_only = pytest.mark.skipif(not USING_TF_KERAS,
                                   reason="TF-MOT works on tf_keras only (see the Keras 3 tests)")

LOSS = "sparse_categorical_crossentropy"


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:384], data.target[:384]


def small_cnn(name="small_cnn"):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs, name=name)


def fast_batch_norm(model):
    """Lowers the momentum of every batch norm (blocks' included) to 0.8, so that the moving
    statistics used at inference settle within the few training steps of a test."""
    for layer in model.layers:
        for sub in getattr(layer, "sublayers", [layer]):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.momentum = 0.8
    return model


def block_model():
    """A Sequential model whose layers are the package's blocks (custom layers)."""
    return fast_batch_norm(keras.Sequential([
        keras.Input((8, 8, 1)),
        ConvBlock(8, 3, name="stem"),
        SeparableConvBlock(8, name="sep"),
        InvertedResidualBlock(8, expansion=2, name="inv"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(10, activation="softmax", name="head"),
    ], name="blocks"))


def to_tflite(model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def interpreter(tflite_bytes):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite_bytes)
    runner.allocate_tensors()
    return runner


def run_tflite(tflite_bytes, x):
    runner = interpreter(tflite_bytes)
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    results = []
    for sample in x:
        runner.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        runner.invoke()
        results.append(runner.get_tensor(out["index"])[0])
    return np.stack(results)


def int8_kernels(tflite_bytes):
    """The int8 weight tensors of a converted QAT model, by layer name.

    TFLite names a weight tensor after the ops that produced it, which for a QAT model
    include the layer's weight quantizer (`quant_{layer}/LastValueQuant`).
    """
    runner = interpreter(tflite_bytes)
    kernels = {}
    for detail in runner.get_tensor_details():
        name = detail["name"]
        if detail["dtype"] != np.int8 or "LastValueQuant" not in name:
            continue
        layer = name.split("LastValueQuant")[0].rstrip("/").split("/")[-1]
        kernels[layer.removeprefix("quant_")] = runner.get_tensor(detail["index"])
    return kernels


def max_unique_per_channel(kernel):
    # TFLite kernels are output-channel first, quantized per channel (Dense: per tensor).
    return max(np.unique(channel).size for channel in kernel)


def fit(model, x, y, epochs=1, learning_rate=1e-3, batch_size=32):
    model.compile(keras.optimizers.Adam(learning_rate), LOSS)
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)


# ---------------------------------------------------------------- both Kerases: bad input


@pytest.mark.parametrize("scheme", ["int8", "PQAT", "qat", None])
def test_unknown_scheme_is_rejected(scheme):
    with pytest.raises(ValueError, match=r"Argument `scheme` must be one of 'default', "
                                         r"'pqat', 'cqat', 'pcqat'\. Received: scheme="):
        quantize(small_cnn(), scheme=scheme)


@pytest.mark.parametrize("scheme", QUANTIZE_SCHEMES)
def test_known_schemes_pass_validation(scheme):
    # The other side of the boundary: no scheme error. "default" quantizes (TF-MOT on
    # tf_keras, natively on Keras 3: tests/test_qat_keras3.py); the preserving schemes then
    # ask for a pruned/clustered model.
    if scheme == "default":
        assert quantize(small_cnn(), scheme=scheme) is not None
        return
    with pytest.raises(ValueError) as error:
        quantize(small_cnn(), scheme=scheme)
    assert "Argument `scheme` must be one of" not in str(error.value)


def test_a_model_of_the_other_keras_is_rejected(other_keras):
    inputs = other_keras.Input((4,))
    model = other_keras.Model(inputs, other_keras.layers.Dense(2)(inputs))
    with pytest.raises(TypeError, match="Argument `model` is a model of .*TF_USE_LEGACY_KERAS"):
        quantize(model)


def test_a_non_model_is_rejected():
    with pytest.raises(TypeError, match="Argument `model` must be a .* model"):
        quantize("model.keras")


# ---------------------------------------------------------------- tf_keras: QAT


def fake_quant_wrapped(qat_model):
    """Names of the layers of a QAT model whose weights have a fake-quant quantizer."""
    names = set()
    for layer in qat_model.layers:
        config = getattr(layer, "quantize_config", None)
        if config is not None and config.get_weights_and_quantizers(layer.layer):
            names.add(layer.layer.name)
    return names


def has_kernel(layer):
    # Conv2D, DepthwiseConv2D (not a Conv2D subclass in Keras 3) and Dense.
    return hasattr(layer, "kernel") or hasattr(layer, "depthwise_kernel")


def kernel_layer_names(model):
    """The layers with a kernel, the sublayers of the blocks included."""
    layers = [sub for layer in model.layers for sub in getattr(layer, "sublayers", [layer])]
    return {layer.name for layer in layers if has_kernel(layer)}


def check_qat_structure(model, qat):
    """Fake quantization on the input and on the weights of every convolution and dense."""
    assert any(type(layer).__name__ == "QuantizeLayer" for layer in qat.layers)
    assert fake_quant_wrapped(qat) == kernel_layer_names(model)
    ops = {op.type for op in tf.function(qat).get_concrete_function(
        tf.TensorSpec((1, *model.input_shape[1:]))).graph.get_operations()}
    assert {"FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel"} <= ops


def check_trains_and_int8_file_agrees(model, qat, x, y, min_accuracy):
    before = [w.numpy().copy() for w in qat.trainable_weights]
    # Small batches: enough steps for the batch-norm moving statistics to settle.
    history = fit(qat, x, y, epochs=2, learning_rate=3e-3, batch_size=16)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, qat.trainable_weights,
                                                              strict=True))

    tflite = to_tflite(qat)
    assert set(int8_kernels(tflite)) == kernel_layer_names(model)  # every kernel is int8
    expected = qat.predict(x[:48], verbose=0)
    # The outputs compared are those of a model that learned something (not ~uniform).
    assert np.mean(expected.argmax(1) == y[:48]) >= min_accuracy
    got = run_tflite(tflite, x[:48])
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95
    assert np.abs(got - expected).max() < 0.1
    assert np.abs(got - expected).mean() < 0.01


@tf_keras_only
def test_qat_of_a_model_of_blocks_trains_and_its_int8_file_agrees(digits):
    x, y = digits
    model = block_model()
    fit(model, x, y, epochs=3, learning_rate=1e-2, batch_size=16)
    qat = quantize(model)
    check_qat_structure(model, qat)
    check_trains_and_int8_file_agrees(model, qat, x, y, min_accuracy=0.4)


@tf_keras_only
def test_qat_of_mobilenet_v1_quantizes_every_kernel():
    model = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=0.25)
    check_qat_structure(model, quantize(model))


@tf_keras_only
@pytest.mark.slow
@pytest.mark.parametrize("builder, kwargs", [
    (mobilenet_v1, dict(alpha=0.25)),
    (mobilenet_v2, dict(alpha=0.35)),
])
def test_qat_mobilenet_trains_and_its_int8_file_agrees(digits, builder, kwargs):
    x, y = digits
    model = fast_batch_norm(builder(input_shape=(8, 8, 1), num_classes=10, dropout=0.0,
                                    **kwargs))
    fit(model, x, y, epochs=5, learning_rate=1e-2, batch_size=16)
    qat = quantize(model)
    check_qat_structure(model, qat)
    check_trains_and_int8_file_agrees(model, qat, x, y, min_accuracy=0.3)


def weight_by_name(layer, suffix):
    matches = [w for w in layer.weights if w.name.endswith(f"/{suffix}:0")]
    assert len(matches) == 1, (layer.name, suffix, [w.name for w in layer.weights])
    return matches[0].numpy()


@tf_keras_only
def test_blocks_are_unrolled_with_their_weights():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    model = block_model()
    original = [w.copy() for w in model.get_weights()]

    # The reference: TF-MOT alone cannot quantize the blocks (custom layers).
    with pytest.raises(RuntimeError, match="Layer stem:.* is not supported"):
        tfmot.quantization.keras.quantize_model(model)

    qat = quantize(model)
    sublayers = {sub.name: sub for block in model.layers[:3] for sub in block.sublayers}
    wrappers = {layer.layer.name: layer for layer in qat.layers if hasattr(layer, "layer")}
    assert fake_quant_wrapped(qat) == {
        name for name, sub in sublayers.items() if has_kernel(sub)} | {"head"}
    compared = 0
    for name, sub in sublayers.items():
        for attribute in ("kernel", "depthwise_kernel", "gamma", "moving_mean"):
            if hasattr(sub, attribute):
                np.testing.assert_array_equal(weight_by_name(wrappers[name], attribute),
                                              getattr(sub, attribute).numpy())
                compared += 1
    assert compared >= 12
    # The given model is left alone: same layers, same weights.
    assert [type(layer).__name__ for layer in model.layers[:3]] == [
        "ConvBlock", "SeparableConvBlock", "InvertedResidualBlock"]
    for before, after in zip(original, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@tf_keras_only
def test_layers_selects_what_is_quantized():
    model = block_model()
    qat = quantize(model, layers=["sep", "head"])  # a block name selects its sublayers
    assert fake_quant_wrapped(qat) == {"sep_depthwise", "sep_pointwise", "head"}
    names = {layer.name for layer in qat.layers}
    assert "stem_conv" in names and "quant_stem_conv" not in names  # left float


@tf_keras_only
@pytest.mark.parametrize("layers, match", [
    (["nope"], r"Argument `layers` names a layer that is not in model 'blocks': 'nope'"),
    ([], r"Argument `layers` must be None \(every layer\) or a non-empty list"),
    ("head", r"Argument `layers` must be None \(every layer\) or a non-empty list"),
])
def test_bad_layers_are_rejected(layers, match):
    with pytest.raises(ValueError, match=match):
        quantize(block_model(), layers=layers)


class Scale(keras.layers.Layer):
    """A custom layer with a weight, unknown to TF-MOT."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def model_with_custom_layer(scale_layer=None):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = (scale_layer or Scale(name="my_scale"))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="dense")(x), name="custom")


@tf_keras_only
def test_a_layer_tfmot_cannot_quantize_is_named_with_the_way_out(digits):
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    with pytest.raises(ValueError, match=r"Layer 'my_scale' \(Scale\) cannot be quantized .*"
                                         r"quantize_annotate_layer\(layer, quantize_config=.*"
                                         r"layers=\[\.\.\.\]"):
        quantize(model_with_custom_layer())

    # Way out 1: leave it out; it stays float, the rest is quantized.
    qat = quantize(model_with_custom_layer(), layers=["conv", "flatten", "dense"])
    assert fake_quant_wrapped(qat) == {"conv", "dense"}
    assert any(isinstance(layer, Scale) for layer in qat.layers)

    # Way out 2: annotate it with a QuantizeConfig (here: quantize its output only).
    class OutputOnly(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    annotated = tfmot.quantization.keras.quantize_annotate_layer(
        Scale(name="my_scale"), quantize_config=OutputOnly())
    qat = quantize(model_with_custom_layer(annotated))  # no quantize_scope needed
    assert {layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config")} == {
        "conv", "my_scale", "flatten", "dense"}
    assert isinstance(qat.get_layer("quant_my_scale").quantize_config, OutputOnly)
    x, y = digits
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(qat.fit(x[:64], y[:64], verbose=0).history["loss"]).all()


# ---------------------------------------------------------------- tf_keras: PQAT, CQAT, PCQAT

NUM_CLUSTERS = 4


@pytest.fixture(scope="module")
def sparse_clustered(digits):
    """A trained small CNN, pruned to 50% (TF-MOT), then clustered to 4 values per kernel
    keeping its zeros, and stripped: the input of the four schemes."""
    if not USING_TF_KERAS:
        pytest.skip("TF-MOT works on tf_keras only")
    import tensorflow_model_optimization as tfmot

    keras.utils.set_random_seed(7)
    x, y = digits
    model = small_cnn()
    fit(model, x, y, epochs=3, learning_rate=3e-3)
    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1))
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    clustered = cluster(sparsity.strip_pruning(pruned), NUM_CLUSTERS, preserve_sparsity=True)
    fit(clustered, x, y, epochs=1)
    return strip_clustering(clustered)


@tf_keras_only
def test_the_input_of_the_collaborative_tests_is_sparse_and_clustered(sparse_clustered):
    for name in ("conv", "dense"):
        kernel = sparse_clustered.get_layer(name).kernel.numpy()
        assert 0.49 <= np.mean(kernel == 0) <= 0.51
        assert np.unique(kernel[kernel != 0]).size <= NUM_CLUSTERS


# (scheme, keeps the zeros, keeps the clusters); "default" is the control: plain QAT loses
# both. Shared with the Keras 3 test (test_qat_keras3.py).
COLLABORATIVE_CASES = [
    ("default", False, False),
    ("pqat", True, False),
    ("cqat", False, True),
    ("pcqat", True, True),
]


@tf_keras_only
@pytest.mark.parametrize("scheme, keeps_zeros, keeps_clusters", COLLABORATIVE_CASES)
def test_collaborative_schemes_keep_sparsity_and_clusters_through_qat(
        digits, sparse_clustered, scheme, keeps_zeros, keeps_clusters):
    x, y = digits
    qat = quantize(sparse_clustered, scheme=scheme)
    fit(qat, x, y, epochs=2, learning_rate=2e-3)
    kernels = int8_kernels(to_tflite(qat))  # what the int8 file stores
    assert set(kernels) == {"conv", "dense"}
    check_kept(kernels, keeps_zeros, keeps_clusters)


def check_kept(kernels, keeps_zeros, keeps_clusters):
    """Asserts what the int8 kernels of a file (`{name: array}`, output channel first) kept
    of a 50%-sparse model clustered to `NUM_CLUSTERS` values (also used by the Keras 3
    test)."""
    for name, kernel in kernels.items():
        sparsity = np.mean(kernel == 0)
        if keeps_zeros:
            assert sparsity >= 0.49, (name, sparsity)
        else:
            assert sparsity < 0.4, (name, sparsity)
        unique = max_unique_per_channel(kernel)
        if keeps_clusters:  # the clusters (and the zero, kept or not, with PCQAT)
            assert unique <= NUM_CLUSTERS + 1, (name, unique)
        else:
            assert unique > 2 * NUM_CLUSTERS, (name, unique)


@tf_keras_only
def test_preserving_schemes_ask_for_a_pruned_or_clustered_model():
    dense = small_cnn()
    with pytest.raises(ValueError, match=r"`scheme='pqat'` keeps the zeros .* no kernel .* "
                                         r"has a zero weight\. Prune it first"):
        quantize(dense, scheme="pqat")
    with pytest.raises(ValueError, match=r"`scheme='cqat'` keeps the clusters .* Cluster it"):
        quantize(dense, scheme="cqat")
    with pytest.raises(ValueError, match=r"`scheme='pcqat'` keeps the zeros"):
        quantize(dense, scheme="pcqat")
    # The other side (a pruned and clustered model is accepted by each) is
    # test_collaborative_schemes_keep_sparsity_and_clusters_through_qat.
