"""Quantization-aware training on Keras 3 (`quantize`, native: `_qat_native`, `_qat_layers`).

Checked against independent references: the int8 TFLite file TFLiteConverter makes from the
QAT model (its op and tensor types, its outputs), Keras' own Conv2D + BatchNormalization +
ReLU6 (the folding), the weights of the original model, and a `.keras` round trip.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.compression import cluster, prune, quantize, strip_clustering, strip_pruning
from keras_dnnopt.export import export_tflite
from tests.test_quantization import (
    COLLABORATIVE_CASES,
    NUM_CLUSTERS,
    check_kept,
    fast_batch_norm,
)

pytestmark = pytest.mark.skipif(USING_TF_KERAS, reason="native QAT is Keras 3's (TF-MOT on "
                                                       "tf_keras: test_quantization.py)")

if not USING_TF_KERAS:
    from keras_dnnopt.compression._qat_layers import (
        MovingAverageQuantizer,
        QuantizedConv2D,
        QuantizedLayer,
    )
    from keras_dnnopt.layers import InvertedResidualBlock, SeparableConvBlock, SqueezeExcite

LOSS = "sparse_categorical_crossentropy"
KERNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:384], data.target[:384]


def residual_model():
    """Functional: the package's blocks (separable, inverted residual with SE), an Add of
    two branches, a Concatenate, a separable conv, and a Dense head."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = SeparableConvBlock(8, name="sep")(x)
    branch = InvertedResidualBlock(8, expansion=2, name="inv")(x)
    x = keras.layers.Add(name="add")([x, branch])
    x = SqueezeExcite(name="se")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="sepconv")(x)
    x = keras.layers.Concatenate(name="concat")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    return fast_batch_norm(keras.Model(inputs, outputs, name="residual"))


def fit(model, x, y, epochs=2, learning_rate=3e-3):
    model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=["accuracy"])
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)


def interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No delegate: the ops of the file as written (XNNPACK would replace them).
    runner = Interpreter(model_path=path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    runner.allocate_tensors()
    return runner


def kernel_op_types(path):
    """`[(op name, input dtype, weight dtype)]` of the Conv/Depthwise/FullyConnected ops."""
    runner = interpreter(path)
    dtypes = {t["index"]: t["dtype"] for t in runner.get_tensor_details()}
    found = []
    for op in runner._get_ops_details():  # noqa: SLF001 (LiteRT's op list)
        if op["op_name"] in KERNEL_OPS:
            found.append((op["op_name"], dtypes[op["inputs"][0]], dtypes[op["inputs"][1]]))
    return found


def run_tflite(path, x):
    runner = interpreter(path)
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    results = []
    for sample in x:
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            sample = np.clip(np.round(sample / scale + zero), -128, 127)
        runner.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        runner.invoke()
        value = runner.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            value = (value.astype("float32") - zero) * scale
        results.append(value)
    return np.stack(results)


def test_qat_model_trains_and_its_int8_file_has_only_int8_kernels_and_agrees(digits, tmp_path):
    x, y = digits
    model = residual_model()
    fit(model, x, y, epochs=3, learning_rate=1e-2)
    original = [w.copy() for w in model.get_weights()]
    qat = quantize(model)
    # The user's model is untouched; every kernel layer became a quantized layer, and no
    # batch norm is left that follows a convolution (folded).
    assert all(np.array_equal(a, b) for a, b in zip(original, model.get_weights(), strict=True))
    kinds = [type(layer).__name__ for layer in qat.layers]
    assert kinds.count("BatchNormalization") == 0
    assert "QuantizedConv2D" in kinds and "QuantizedDepthwiseConv2D" in kinds
    assert "QuantizedDense" in kinds and isinstance(qat.layers[1], MovingAverageQuantizer)
    history = fit(qat, x, y, epochs=2, learning_rate=1e-3)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["accuracy"][-1] > 0.5

    path = str(tmp_path / "qat_int8.tflite")
    export_tflite(qat, path, quantization="int8")  # no representative data
    ops = kernel_op_types(path)
    # stem, sep (2), inv (expand, depthwise, project), se (2 dense-like convs), sepconv (2),
    # head: every one int8, inputs and weights.
    assert len(ops) >= 10
    assert all(inp == np.int8 and weight == np.int8 for _, inp, weight in ops), ops
    expected = qat.predict(x[:64], verbose=0)
    got = run_tflite(path, x[:64])
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95
    assert np.abs(got - expected).mean() < 0.02

    full = str(tmp_path / "qat_int8_full.tflite")
    export_tflite(qat, full, quantization="int8_full")
    runner = interpreter(full)
    assert runner.get_input_details()[0]["dtype"] == np.int8
    assert runner.get_output_details()[0]["dtype"] == np.int8
    assert np.mean(run_tflite(full, x[:64]).argmax(1) == expected.argmax(1)) >= 0.95


def test_folding_matches_keras_conv_batch_norm_relu6_in_training_and_inference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(5, 3, padding="same")
    bn = keras.layers.BatchNormalization(momentum=0.5)
    reference = keras.Sequential([keras.Input((6, 6, 3)), conv, bn, keras.layers.ReLU(6.0)])
    bn.set_weights([rng.uniform(0.5, 2, 5), rng.normal(size=5), rng.normal(size=5),
                    rng.uniform(0.5, 2, 5)])
    inner = keras.layers.Conv2D(5, 3, padding="same")
    bn_copy = keras.layers.BatchNormalization(momentum=0.5)
    layer = QuantizedConv2D(inner, batch_norm=bn_copy, activation="relu6")
    layer.build((None, 6, 6, 3))
    inner.set_weights(conv.get_weights())
    bn_copy.set_weights(bn.get_weights())
    for training in (True, False):  # batch statistics, then the (updated) moving ones
        want = np.asarray(reference(x, training=training))
        got = np.asarray(layer(x, training=training))
        # 8-bit weights and output: within a few output steps of the float result.
        step = (want.max() - min(want.min(), 0)) / 255
        assert np.abs(got - want).max() < 4 * step + 0.02 * np.abs(want).max(), training
    np.testing.assert_allclose(bn_copy.moving_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-4,
                               atol=1e-4)


def test_keras_applications_mobilenet_v2_quantizes_every_kernel(tmp_path):
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    qat = quantize(model)
    kernels = [layer for layer in model.layers
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    assert sum(isinstance(layer, QuantizedLayer) for layer in qat.layers) == len(kernels)
    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    qat(x, training=True)  # learns ranges once
    path = str(tmp_path / "mnv2.tflite")
    export_tflite(qat, path, quantization="int8")
    ops = kernel_op_types(path)
    assert len(ops) == len(kernels)
    assert all(inp == np.int8 and weight == np.int8 for _, inp, weight in ops)


def test_qat_model_saves_and_loads_in_safe_mode_and_keeps_training(digits, tmp_path):
    x, y = digits
    qat = quantize(residual_model())
    fit(qat, x, y, epochs=1)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored.predict(x[:32], verbose=0),
                               qat.predict(x[:32], verbose=0), atol=1e-6)
    ranges = [(q.range_min.numpy(), q.range_max.numpy()) for q in restored.layers
              if isinstance(q, MovingAverageQuantizer)]
    assert ranges and all(low < high for low, high in ranges)
    assert np.isfinite(restored.fit(x, y, batch_size=32, epochs=1, verbose=0)
                       .history["loss"]).all()


def test_pqat_keeps_the_zeros_of_a_pruned_model_into_the_int8_file(digits, tmp_path):
    x, y = digits
    model = residual_model()
    fit(model, x, y, epochs=1)
    pruned = prune(model, target_sparsity=0.5, schedule="constant", frequency=1)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    from keras_dnnopt.compression import PruningCallback

    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[PruningCallback()])
    sparse = strip_pruning(pruned)
    kernel = sparse.get_layer("head").kernel.numpy()
    assert np.isclose((kernel == 0).mean(), 0.5, atol=0.02)
    for scheme, keeps in (("pqat", True), ("default", False)):
        qat = quantize(pruned, scheme=scheme)  # the pruning wrappers are stripped for you
        fit(qat, x, y, epochs=1, learning_rate=1e-3)
        head = qat.get_layer("head")
        zeros = (head.layer.kernel.numpy() * (head.mask.numpy() if head.mask is not None
                                              else 1) == 0).mean()
        assert (abs(zeros - 0.5) < 0.01) == keeps, (scheme, zeros)
    path = str(tmp_path / "pqat.tflite")
    export_tflite(quantize(pruned, scheme="pqat"), path, quantization="int8")
    runner = interpreter(path)
    int8_weights = [runner.get_tensor(t["index"]) for t in runner.get_tensor_details()
                    if t["dtype"] == np.int8 and t["name"].count("head") and
                    len(t["shape"]) == 2]
    assert int8_weights and abs((int8_weights[0] == 0).mean() - 0.5) < 0.01


def test_bad_input_is_refused_and_the_model_untouched():
    model = residual_model()
    weights = [w.copy() for w in model.get_weights()]
    qat = quantize(model)
    with pytest.raises(ValueError, match="already quantization-aware.*Quantize the float model"):
        quantize(qat)
    with pytest.raises(ValueError, match=r"`scheme='cqat'` keeps the clusters .* Cluster it"):
        quantize(model, scheme="cqat")
    with pytest.raises(TypeError, match="Argument `skip_unsupported` must be True or False"):
        quantize(model, skip_unsupported="yes")

    inputs = keras.Input((8, 4))
    x = keras.layers.Conv1D(4, 3, name="conv1d")(inputs)
    x = keras.layers.Flatten()(x)
    odd = keras.Model(inputs, keras.layers.Dense(2, name="dense")(x))
    with pytest.raises(ValueError, match=r"Layer 'conv1d' \(Conv1D\) cannot be quantized.*"
                                         r"Supported layers: .*Conv2D.*skip_unsupported=True"):
        quantize(odd)
    with pytest.warns(UserWarning, match="Kept float.*'conv1d' \\(Conv1D\\)"):
        kept = quantize(odd, skip_unsupported=True)
    assert type(kept.get_layer("conv1d")).__name__ == "Conv1D"
    assert isinstance(kept.get_layer("dense"), QuantizedLayer)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def small_bn_net(width, name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, use_bias=False, name=f"{name}_conv")(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name=f"{name}_head")(x), name=name)


def test_a_qat_student_distils_and_exports_to_int8(digits, tmp_path):
    from keras_dnnopt.distillation import Distiller

    x, y = digits
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = small_bn_net(16, "teacher")
    teacher.compile("adam", loss)
    teacher.fit(x, y, batch_size=32, epochs=1, verbose=0)
    student = quantize(small_bn_net(8, "student"))
    before = [w.numpy().copy() for w in student.trainable_weights]
    distiller = Distiller(teacher, student, alpha=0.3, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(1e-3), loss=loss)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, student.trainable_weights,
                                                              strict=True))
    ranges = [q.range_max.numpy() for q in student.layers
              if isinstance(q, MovingAverageQuantizer)]
    assert all(0 < high < 6 for high in ranges)  # learned in the distiller's train_step
    path = str(tmp_path / "student.tflite")
    export_tflite(distiller.student, path, quantization="int8")
    assert all(inp == np.int8 and w == np.int8 for _, inp, w in kernel_op_types(path))


_MIRRORED = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from sklearn.datasets import load_digits
from keras_dnnopt.backend import keras
from keras_dnnopt.compression import quantize
from keras_dnnopt.export import export_tflite
from tests.test_quantization import (
    COLLABORATIVE_CASES,
    NUM_CLUSTERS,
    check_kept,
    fast_batch_norm,
)
from tests.test_qat_keras3 import small_bn_net
data = load_digits()
x = (data.images[:256, ..., None] / 16).astype("float32"); y = data.target[:256]
# The common order: the float model is built and trained first, outside the scope.
float_model = small_bn_net(8, "m")
float_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
float_model.fit(x, y, batch_size=32, epochs=1, verbose=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    qat = quantize(float_model)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = qat.fit(x, y, batch_size=32, epochs=2, verbose=0)
ranges = [[float(q.range_min.numpy()), float(q.range_max.numpy())] for q in qat.layers
          if type(q).__name__ == "MovingAverageQuantizer"]
bn = qat.get_layer("m_conv").batch_norm.moving_variance.numpy()
size = export_tflite(qat, os.environ["OUT"], quantization="int8").size_bytes
print("JSON" + json.dumps({"replicas": strategy.num_replicas_in_sync, "size": size,
                           "loss": history.history["loss"], "ranges": ranges,
                           "bn_moved": bool(np.abs(bn - 1).max() > 1e-3)}))
"""


def test_qat_of_a_model_trained_outside_the_scope_trains_under_mirrored_strategy(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OUT": str(tmp_path / "mirrored.tflite")}
    result = subprocess.run([sys.executable, "-c", _MIRRORED], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("JSON")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[-1][4:])
    assert out["replicas"] == 2 and np.isfinite(out["loss"]).all()
    assert out["bn_moved"]  # the folded batch norm's statistics were updated
    assert all(low <= 0 < high < 6 for low, high in out["ranges"])  # learned, not the init
    assert all(inp == np.int8 and w == np.int8
               for _, inp, w in kernel_op_types(str(tmp_path / "mirrored.tflite")))



def int8_kernels(path):
    """The int8 kernels of a file's CONV_2D and FULLY_CONNECTED ops, by op name."""
    runner = interpreter(path)
    kernels = {}
    for op in runner._get_ops_details():  # noqa: SLF001 (LiteRT's op list)
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            kernels[op["op_name"]] = runner.get_tensor(op["inputs"][1])
    return kernels


@pytest.fixture(scope="module")
def digits4(digits):
    """The digits on 4 channels: 36 weights per output channel of a 3x3 convolution, so
    that plain QAT visibly spreads a channel's values (9 could not exceed 2 x 4)."""
    x, y = digits
    return np.repeat(x, 4, axis=-1), y


@pytest.fixture(scope="module")
def sparse_clustered(digits4):
    """A small CNN trained, natively pruned to 50%, clustered to 4 values per kernel
    keeping its zeros, trained, and stripped: the input of the four schemes."""
    from keras_dnnopt.compression import PruningCallback

    keras.utils.set_random_seed(7)
    x, y = digits4
    inputs = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="dense")(h))
    fit(model, x, y, epochs=3)
    pruned = prune(model, target_sparsity=0.5, schedule="constant", frequency=1)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[PruningCallback()])
    clustered = cluster(strip_pruning(pruned), NUM_CLUSTERS, preserve_sparsity=True)
    fit(clustered, x, y, epochs=1, learning_rate=1e-3)
    return strip_clustering(clustered)


@pytest.mark.parametrize("scheme, keeps_zeros, keeps_clusters", COLLABORATIVE_CASES)
def test_collaborative_schemes_keep_zeros_and_clusters_into_the_int8_file(
        digits4, sparse_clustered, tmp_path, scheme, keeps_zeros, keeps_clusters):
    for name in ("conv", "dense"):  # the input is what the test needs
        kernel = sparse_clustered.get_layer(name).kernel.numpy()
        assert 0.49 <= np.mean(kernel == 0) <= 0.51
        assert np.unique(kernel[kernel != 0]).size <= NUM_CLUSTERS
    x, y = digits4
    qat = quantize(sparse_clustered, scheme=scheme)
    fit(qat, x, y, epochs=2, learning_rate=2e-3)
    path = str(tmp_path / f"{scheme}.tflite")
    export_tflite(qat, path, quantization="int8")
    kernels = int8_kernels(path)  # what the int8 file stores
    assert set(kernels) == {"CONV_2D", "FULLY_CONNECTED"}
    # Output channel first; Conv per channel, Dense per tensor (one grid for all rows).
    check_kept(kernels, keeps_zeros, keeps_clusters)
    if keeps_clusters:  # and the constraint survives a save and load (safe mode)
        from keras_dnnopt.export import load_model, save_model

        restored = load_model(save_model(qat, str(tmp_path / f"{scheme}.keras")))
        fit(restored, x, y, epochs=1, learning_rate=2e-3)
        dense = restored.get_layer("dense").layer.kernel.numpy()
        assert np.unique(dense).size <= NUM_CLUSTERS + 1
