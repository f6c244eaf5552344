"""Tests of keras_dnnopt.compression pruning, on the Keras in use (the suite runs once per
Keras: TF-MOT on tf_keras, the native wrappers on Keras 3; the same tests for both).

References: TF-MOT's own `PolynomialDecay`/`ConstantSparsity` for the schedules, NumPy
closed forms for the masks (top-k magnitudes, block means, 2 of each 4 input channels)
and for the sparsity reached at a given step, the unrolled built-in layers for the
blocks, the weights read back from the TFLite file with LiteRT, and the Keras model's
own outputs for the exported file. Data: scikit-learn's digits (8x8x1), small subsets.
"""

import importlib
import os

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.compression import (
    PruningCallback,
    SparsityReport,
    prune,
    sparsity_report,
    strip_pruning,
)
from keras_dnnopt.compression._pruning_masks import (
    block_mask,
    m_by_n_mask,
    magnitude_mask,
    schedule_sparsity,
)
from keras_dnnopt.distillation import Distiller
from keras_dnnopt.layers import InvertedResidualBlock, SeparableConvBlock
from keras_dnnopt.models import mobilenet_v1

LOSS = dict(from_logits=True)
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    return x[:128], y[:128].astype("int64")


def small_model(name="small"):
    """Conv2D, a SeparableConvBlock, an InvertedResidualBlock with squeeze-excite, Dense."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = SeparableConvBlock(16, name="sep")(x)
    x = InvertedResidualBlock(16, expansion=2, se_ratio=0.25, name="ir")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="dense")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_model(model, learning_rate=0.01, run_eagerly=False):
    # `run_eagerly=True` for a few steps saves tracing the train step; the training tests
    # that check the target, the checkpoint, 2:4, blocks and the Distiller run in graph mode.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(**LOSS),
                  run_eagerly=run_eagerly)
    return model


def fit(model, x, y, epochs=3, callbacks=None, batch_size=32):
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                     callbacks=[PruningCallback()] if callbacks is None else callbacks)


def load_pruned(path):
    if USING_TF_KERAS:
        import tensorflow_model_optimization as tfmot

        with tfmot.sparsity.keras.prune_scope():
            return keras.models.load_model(path)
    return keras.models.load_model(path)


def kernel_sparsities(model):
    return {(row.layer, row.weight): row.sparsity for row in sparsity_report(model).layers}


def assert_at_target(model, target, names=None, tol=0.01):
    sparsities = kernel_sparsities(model)
    if names is not None:
        sparsities = {k: v for k, v in sparsities.items() if k[0] in names}
    assert sparsities
    for key, value in sparsities.items():
        assert abs(value - target) <= tol, f"{key}: sparsity {value:.4f}, target {target}"


def rows_of_input_channels(kernel):
    """NumPy: a kernel as rows whose last axis is the input channels."""
    if kernel.ndim == 2:
        return kernel.T
    return np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])


def assert_two_of_four(kernel):
    rows = rows_of_input_channels(np.asarray(kernel))
    full = rows.shape[1] // 4 * 4
    assert full, "no complete group of 4 input channels"
    groups = rows[:, :full].reshape(-1, 4)
    assert ((groups == 0).sum(axis=1) >= 2).all()


def keras_kernels(model):
    return {(row.layer, row.weight): row for row in sparsity_report(model).layers}


@pytest.fixture
def tfmot_schedules():
    """TF-MOT's schedule module (importing TF-MOT sets TF_USE_LEGACY_KERAS=1: restored)."""
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        from tensorflow_model_optimization.python.core.sparsity.keras import (
            pruning_schedule,
        )
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return pruning_schedule


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule,begin,end,frequency", [
    ("polynomial", 0, 40, 5), ("polynomial", 7, 31, 3), ("constant", 4, 20, 4),
    ("constant", 2, -1, 3)])
def test_schedule_matches_tfmot(tfmot_schedules, schedule, begin, end, frequency):
    if schedule == "polynomial":
        reference = tfmot_schedules.PolynomialDecay(0.0, 0.8, begin, end, power=3,
                                                    frequency=frequency)
    else:
        reference = tfmot_schedules.ConstantSparsity(0.8, begin, end, frequency=frequency)
    for step in range(0, 60):
        should, sparsity = schedule_sparsity(step, schedule=schedule, target_sparsity=0.8,
                                             begin_step=begin, end_step=end,
                                             frequency=frequency)
        ref_should, ref_sparsity = reference(tf.constant(step, tf.int64))
        assert bool(should) == bool(ref_should), step
        np.testing.assert_allclose(float(sparsity), float(ref_sparsity), atol=1e-6)


def test_polynomial_schedule_closed_form():
    for step in (0, 10, 20, 30, 40, 50):
        _, sparsity = schedule_sparsity(step, schedule="polynomial", target_sparsity=0.6,
                                        begin_step=10, end_step=40, frequency=10)
        p = min(max((step - 10) / 30, 0.0), 1.0)
        np.testing.assert_allclose(float(sparsity), 0.6 * (1 - (1 - p) ** 3), atol=1e-6)


# --------------------------------------------------------------------------- masks


def test_magnitude_mask_keeps_the_largest(rng):
    weights = rng.normal(size=(3, 3, 4, 8)).astype("float32")
    for sparsity in (0.3, 0.7, 0.99):
        threshold, mask = magnitude_mask(tf.constant(weights), sparsity)
        keep = max(round(weights.size * (1 - sparsity)), 1)
        expected = np.zeros(weights.size, "float32")
        expected[np.argsort(-np.abs(weights).ravel())[:keep]] = 1
        np.testing.assert_array_equal(mask.numpy().ravel(), expected)
        np.testing.assert_allclose(float(threshold), np.sort(np.abs(weights).ravel())[-keep])


def test_block_mask_scores_blocks_by_mean(rng):
    weights = rng.normal(size=(8, 7)).astype("float32")  # 7: a partial last block column
    _, mask = block_mask(tf.constant(weights), 0.5, (2, 3))
    mask = mask.numpy()
    scores = {}
    for i in range(0, 8, 2):
        for j in range(0, 7, 3):
            scores[(i, j)] = np.abs(weights[i:i + 2, j:j + 3]).mean()
    keep = round(len(scores) * 0.5)
    kept = sorted(scores, key=scores.get, reverse=True)[:keep]
    for (i, j) in scores:
        block = mask[i:i + 2, j:j + 3]
        assert (block == (1 if (i, j) in kept else 0)).all()


@pytest.mark.parametrize("shape", [(8, 5), (3, 3, 6, 4)])
def test_m_by_n_mask_keeps_two_of_each_four_input_channels(rng, shape):
    weights = rng.normal(size=shape).astype("float32")
    mask = m_by_n_mask(tf.constant(weights)).numpy()
    assert mask.shape == weights.shape
    rows, mask_rows = rows_of_input_channels(weights), rows_of_input_channels(mask)
    for row, mask_row in zip(np.abs(rows), mask_rows, strict=True):
        for start in range(0, row.size, 4):
            group, group_mask = row[start:start + 4], mask_row[start:start + 4]
            kept = np.argsort(-group)[:2]
            expected = np.zeros_like(group_mask)
            expected[kept] = 1
            np.testing.assert_array_equal(group_mask, expected)


# --------------------------------------------------------------------------- training


def to_tflite(model, tmp_path):
    if USING_TF_KERAS:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:  # Keras 3: through a SavedModel (`from_concrete_functions` is unreliable there)
        model.export(str(tmp_path / "saved"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    return converter.convert()


def assert_tflite_keeps_the_zeros(model, tflite_bytes, x, target):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    tensors = {}
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        if value.dtype == np.float32 and value.size > 1:
            tensors.setdefault(tuple(value.shape), []).append(value)
    for (layer, weight), row in keras_kernels(model).items():
        # TFLite stores Conv2D kernels (out, h, w, in) and dense kernels (out, in).
        shape = row.shape
        tflite_shape = (shape[3], shape[0], shape[1], shape[2]) if len(shape) == 4 else (
            shape[1], shape[0])
        sparsities = [float((t == 0).mean()) for t in tensors.get(tflite_shape, [])]
        assert any(abs(s - target) <= 0.01 for s in sparsities), (layer, weight, sparsities)
    # And the file computes what the model computes.
    detail_in = interpreter.get_input_details()[0]
    detail_out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(detail_in["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail_in["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(detail_out["index"]),
                               model.predict(x, verbose=0), atol=1e-4)


def test_pruned_model_reaches_target_keeps_it_and_trains(digits, tmp_path):
    x, y = digits
    model = small_model()
    original = [w.copy() for w in model.get_weights()]
    pruned = compile_model(prune(model, 0.75, begin_step=0, end_step=8, frequency=2))
    history = fit(pruned, x, y, epochs=3)  # 12 steps
    assert np.isfinite(history.history["loss"]).all()
    # The input model is left untouched.
    for before, after in zip(original, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)

    stripped = strip_pruning(pruned)
    assert not any("prune_low_magnitude" in layer.name for layer in stripped.layers)
    assert [type(layer).__name__ for layer in stripped.layers] == [
        type(layer).__name__ for layer in model.layers]
    assert_at_target(stripped, 0.75)
    assert {weight for _, weight in kernel_sparsities(stripped)} >= {
        "kernel", "sep_pointwise/kernel", "ir_expand/kernel", "ir_project/kernel",
        "ir_se_reduce/kernel", "ir_se_expand/kernel"}
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)

    # TFLite: the zeros are in the file's weight tensors, and it agrees with the model.
    assert_tflite_keeps_the_zeros(stripped, to_tflite(stripped, tmp_path), x[:16], 0.75)

    path = str(tmp_path / "stripped.keras")
    stripped.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.get_layer("sep")).__name__ == "SeparableConvBlock"
    assert_at_target(restored, 0.75)
    history = compile_model(restored).fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_sparsity_follows_the_schedule_step_by_step(digits):
    """After each batch the kernels hold exactly the sparsity of the last update step."""
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.8, begin_step=2, end_step=8,
                                 schedule="polynomial", frequency=3), run_eagerly=True)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(kernel_sparsities(pruned)[("dense", "kernel")])

    fit(pruned, x, y, epochs=1, batch_size=16, callbacks=[PruningCallback(), Record()])
    size = 160  # the dense kernel (16, 10)
    expected = []
    for step in range(1, 9):  # updates at steps 2, 5, 8
        last_update = max([s for s in (2, 5, 8) if s <= step], default=None)
        if last_update is None:
            expected.append(0.0)
            continue
        p = (last_update - 2) / 6
        scheduled = 0.8 * (1 - (1 - p) ** 3)
        expected.append(1 - max(round(size * (1 - scheduled)), 1) / size)
    np.testing.assert_allclose(seen, expected, atol=1e-9)


def test_constant_schedule_starts_at_begin_step(digits):
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.5, begin_step=3, schedule="constant",
                                 frequency=100), run_eagerly=True)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(sparsity_report(pruned).overall)

    fit(pruned, x[:64], y[:64], epochs=1, batch_size=16,
        callbacks=[PruningCallback(), Record()])
    assert seen[:2] == [0.0, 0.0]  # steps 1 and 2
    np.testing.assert_allclose(seen[2:], [0.5, 0.5], atol=0.01)  # from step 3 on


def test_checkpoint_mid_pruning_resumes(digits, tmp_path):
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.75, end_step=8, frequency=2),
                           run_eagerly=True)
    fit(pruned, x, y, epochs=1)  # 4 of 8 steps
    assert 0.0 < sparsity_report(pruned).overall < 0.74
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    restored = load_pruned(path)
    assert any("prune_low_magnitude" in layer.name for layer in restored.layers)
    np.testing.assert_allclose(restored.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)
    fit(restored, x, y, epochs=1)  # steps 5 to 8 (the step counters were saved)
    assert_at_target(strip_pruning(restored), 0.75)


def test_two_four_structure_and_layer_selection(digits, tmp_path):
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.5, structure="2:4", end_step=4,
                                 frequency=2, layers=["sep", "ir", "dense"]))
    assert sorted(layer.name for layer in pruned.layers if "prune_low_magnitude" in
                  layer.name) == ["prune_low_magnitude_dense", "prune_low_magnitude_ir",
                                  "prune_low_magnitude_sep"]
    history = fit(pruned, x, y, epochs=2)
    assert np.isfinite(history.history["loss"]).all()
    assert {row.layer for row in sparsity_report(pruned).layers if row.pruned} == {
        "sep", "ir", "dense"}
    stripped = strip_pruning(pruned)
    path = str(tmp_path / "two_four.keras")
    stripped.save(path)
    for model in (stripped, keras.models.load_model(path)):
        kernels = {layer.name: layer for layer in model.layers}
        assert_two_of_four(kernels["dense"].kernel.numpy())
        for sub in kernels["sep"].get_prunable_weights() + kernels["ir"].get_prunable_weights():
            assert_two_of_four(sub.numpy())
        sparsities = kernel_sparsities(model)
        assert sparsities[("conv", "kernel")] == 0.0  # not selected
        assert sparsities[("dense", "kernel")] == pytest.approx(0.5)


def test_block_sparsity_of_dense_kernels(digits):
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.5, schedule="constant", frequency=1,
                                 block_size=(2, 2), layers=["dense"]), run_eagerly=True)
    fit(pruned, x, y, epochs=1)
    kernel = strip_pruning(pruned).get_layer("dense").kernel.numpy()  # (16, 10)
    blocks = (kernel.reshape(8, 2, 5, 2) == 0).transpose(0, 2, 1, 3).reshape(40, 4)
    assert (blocks.all(axis=1) | ~blocks.any(axis=1)).all()  # each block all zero or none
    assert blocks.all(axis=1).mean() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="block_size.*rank-2"):
        prune(small_model(), 0.5, schedule="constant", block_size=(2, 2), layers=["conv"])


def test_blocks_prune_like_their_builtin_layers():
    """A block's kernels get the masks its unrolled built-in Conv2D layers get."""
    block_model = small_model()
    inputs = keras.Input((8, 8, 1))
    x = block_model.get_layer("conv")(inputs)
    x = block_model.get_layer("sep").unroll(x)
    x = block_model.get_layer("ir").unroll(x)
    x = block_model.get_layer("pool")(x)
    flat_model = keras.Model(inputs, block_model.get_layer("dense")(x))  # shares weights
    assert block_model.get_layer("ir").get_prunable_weights()  # the blocks have kernels
    data = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    labels = np.zeros(8, "int64")
    results = []
    for model in (block_model, flat_model):
        pruned = prune(model, 0.6, schedule="constant", frequency=1)
        pruned.compile(optimizer=keras.optimizers.SGD(0.0),  # weights stay as they are
                       loss=keras.losses.SparseCategoricalCrossentropy(**LOSS),
                       run_eagerly=True)
        fit(pruned, data, labels, epochs=1, batch_size=8)
        stripped = strip_pruning(pruned)
        results.append({w.split("/")[0] if "/" in w else layer: v
                        for (layer, w), v in kernel_sparsities(stripped).items()})
        results.append(stripped)
    block_sparsities, block_stripped, flat_sparsities, flat_stripped = results
    assert block_sparsities == flat_sparsities  # the same kernels, no depthwise kernel
    assert "sep_depthwise" not in flat_sparsities
    for block, attribute in [("sep", "pointwise"), ("ir", "expand"), ("ir", "project"),
                             ("ir", "se_reduce"), ("ir", "se_expand")]:
        block_kernel = getattr(block_stripped.get_layer(block), attribute).kernel.numpy()
        flat_kernel = flat_stripped.get_layer(f"{block}_{attribute}").kernel.numpy()
        np.testing.assert_array_equal(block_kernel, flat_kernel)
        assert (flat_kernel == 0).mean() == pytest.approx(0.6, abs=0.01)


def test_mobilenet_v1_prunes_to_target(digits):
    x, y = digits
    model = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=0.25,
                         classifier_activation=None)
    pruned = compile_model(prune(model, 0.5, end_step=2, frequency=1), run_eagerly=True)
    history = fit(pruned, x[:64], y[:64], epochs=1)
    assert np.isfinite(history.history["loss"]).all()
    stripped = strip_pruning(pruned)
    report = sparsity_report(stripped)
    assert len(report.layers) == 15  # stem, 13 pointwise, classifier (no depthwise)
    assert_at_target(stripped, 0.5)
    assert report.overall == pytest.approx(0.5, abs=0.01)


def test_distiller_with_pruned_student(digits):
    x, y = digits
    teacher = small_model("teacher")
    student = prune(small_model("student"), 0.75, end_step=4, frequency=2)
    distiller = Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(**LOSS))
    # The callback finds the pruned student inside the Distiller...
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0,
                            callbacks=[PruningCallback()])
    assert np.isfinite(history.history["loss"]).all()
    assert_at_target(student, 0.75)
    # ... or is given it; the student keeps its sparsity while distillation goes on.
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0,
                            callbacks=[PruningCallback(model=student)])
    assert np.isfinite(history.history["loss"]).all()
    assert_at_target(strip_pruning(distiller.student), 0.75)
    assert sparsity_report(teacher).overall == 0.0  # the teacher is not pruned


@pytest.mark.skipif(not USING_TF_KERAS,
                    reason="the reference, TF-MOT, only runs on tf_keras (the native wrappers "
                           "run on both Kerases)")
def test_native_wrappers_train_step_for_step_like_tfmot(digits, monkeypatch):
    """The Keras 3 wrappers, run on tf_keras beside TF-MOT's from the same weights and
    batches, hold the same masks after every batch and end with the same kernels."""
    from keras_dnnopt.compression import _prunable, _pruning_native
    from keras_dnnopt.compression import pruning as pruning_module

    x, y = digits
    keras.utils.set_random_seed(0)
    original = small_model()

    class Record(keras.callbacks.Callback):
        def __init__(self, pruned):
            super().__init__()
            self.pruned, self.masks, self.losses = pruned, [], []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            self.masks.append([np.asarray(mask) for layer in self.pruned.layers
                               for _, mask, _ in getattr(layer, "pruning_vars", ())])

    def train():
        pruned = prune(original, 0.8, end_step=8, frequency=2)
        record = Record(pruned)
        compile_model(pruned).fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0,
                                  callbacks=[PruningCallback(), record])
        wrappers = {type(layer) for layer in pruned.layers if hasattr(layer, "pruning_vars")}
        return record, [np.asarray(w) for w in strip_pruning(pruned).weights], wrappers

    tfmot_record, tfmot_weights, tfmot_wrappers = train()
    with monkeypatch.context() as patch:
        patch.setattr(pruning_module, "pruning_implementation", lambda: _pruning_native)
        patch.setattr(_prunable, "pruning_implementation", lambda: _pruning_native)
        patch.setattr(pruning_module, "USING_TF_KERAS", False)
        native_record, native_weights, native_wrappers = train()
    assert native_wrappers == {_pruning_native.PruneLowMagnitude}
    assert len(tfmot_wrappers) == 1 and tfmot_wrappers != native_wrappers
    assert len(native_record.masks) == len(tfmot_record.masks) == 12
    assert len(native_record.masks[0]) == len(tfmot_record.masks[0]) >= 5
    for step, (native, tfmot) in enumerate(zip(native_record.masks, tfmot_record.masks,
                                               strict=True), start=1):
        for native_mask, tfmot_mask in zip(native, tfmot, strict=True):
            np.testing.assert_array_equal(native_mask, tfmot_mask, err_msg=f"batch {step}")
    assert 1.0 - np.mean(native_record.masks[-1][-1]) == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(native_record.losses, tfmot_record.losses, rtol=1e-5)
    for native_weight, tfmot_weight in zip(native_weights, tfmot_weights, strict=True):
        np.testing.assert_allclose(native_weight, tfmot_weight, rtol=1e-4, atol=1e-6)

# --------------------------------------------------------------------------- report


def test_sparsity_report_against_numpy():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    hidden_kernel = np.arange(1, 21, dtype="float32").reshape(4, 5)
    hidden_kernel[0, :] = 0  # 5 of 20
    out_kernel = np.ones((5, 3), "float32")
    out_kernel[:, 0] = 0  # 5 of 15
    model.get_layer("hidden").set_weights([hidden_kernel, np.ones(5, "float32")])
    model.get_layer("out").set_weights([out_kernel, np.zeros(3, "float32")])
    report = sparsity_report(model)
    assert isinstance(report, SparsityReport)
    assert [(r.layer, r.weight, r.shape) for r in report.layers] == [
        ("hidden", "kernel", (4, 5)), ("out", "kernel", (5, 3))]
    assert report["hidden"][0].sparsity == pytest.approx(0.25)
    assert report["out"][0].sparsity == pytest.approx(1 / 3)
    assert report.overall == pytest.approx(10 / 35)  # weighted by size; biases left out
    as_dict = report.to_dict()
    assert as_dict["overall"] == pytest.approx(10 / 35)
    assert as_dict["layers"][0]["shape"] == [4, 5]
    assert "| hidden | kernel | (4, 5) | 20 | 25.00% |" in str(report)
    with pytest.raises(KeyError, match="No prunable kernel"):
        report["nope"]


# --------------------------------------------------------------------------- callback


def test_callback_errors(digits):
    x, y = digits
    with pytest.raises(ValueError, match="found no pruned layer"):
        fit(compile_model(small_model()), x[:32], y[:32], epochs=1)
    with pytest.raises(ValueError, match="log_dir"):
        PruningCallback(log_dir="")
    with pytest.raises(TypeError, match="model"):
        PruningCallback(model="not a model")


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed")
def test_summaries_without_tensorboard_say_what_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"pip install keras_dnnopt\[tensorboard\]"):
        PruningCallback(log_dir=str(tmp_path))


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs tensorboard")
def test_summaries_are_written(digits, tmp_path):  # pragma: no cover - needs tensorboard
    x, y = digits
    pruned = compile_model(prune(small_model(), 0.5, end_step=4, frequency=2))
    fit(pruned, x, y, epochs=1, callbacks=[PruningCallback(log_dir=str(tmp_path))])
    tags = set()
    for root, _, files in os.walk(tmp_path / "metrics"):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags.update(value.tag for value in event.summary.value)
    assert any("sparsity" in tag for tag in tags)
    assert any("threshold" in tag for tag in tags)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_sparsity=0.0), r"`target_sparsity` must be in \(0, 1\)"),
    (dict(target_sparsity=1.0), r"`target_sparsity` must be in \(0, 1\)"),
    (dict(target_sparsity=-0.2), r"`target_sparsity` must be in \(0, 1\)"),
    (dict(begin_step=-1), r"`begin_step` must be >= 0. Received: begin_step=-1"),
    (dict(begin_step=4, end_step=4), r"`end_step` must be > begin_step \(4\)"),
    (dict(begin_step=4, end_step=2), r"`end_step` must be > begin_step \(4\)"),
    (dict(end_step=None), r"`end_step` is required with schedule='polynomial'"),
    (dict(end_step=9, frequency=2), r"multiple of `frequency`.*end_step=8"),
    (dict(frequency=0, schedule="constant"), r"`frequency` must be >= 1"),
    (dict(schedule="cosine"), r"`schedule` must be one of 'polynomial', 'constant'"),
    (dict(structure="4:8"), r"`structure` must be one of 'unstructured', '2:4'"),
    (dict(structure="2:4", target_sparsity=0.6), r"must be 0.5 with structure='2:4'"),
    (dict(block_size=(0, 2)), r"`block_size` must be a tuple of 2 integers > 0"),
    (dict(layers=["missing"]), r"names a layer that is not in model.*'missing'"),
    (dict(layers=["pool"]), r"layer 'pool' \(GlobalAveragePooling2D\).*no prunable"),
    (dict(layers="dense"), r"`layers` must be None .* or a non-empty list"),
])
def test_bad_arguments(kwargs, match):
    arguments = dict(target_sparsity=0.5, end_step=8, frequency=2)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        prune(small_model(), **arguments)


@pytest.mark.parametrize("kwargs", [
    dict(target_sparsity=0.01, begin_step=0, frequency=1, end_step=1),
    dict(target_sparsity=0.99, begin_step=4, end_step=6, layers=["ir"]),
    dict(end_step=None, schedule="constant", layers=["dense"], block_size=(1, 1)),
    dict(structure="2:4", target_sparsity=0.5)])
def test_good_arguments_at_the_boundaries(kwargs):
    arguments = dict(target_sparsity=0.5, end_step=8, frequency=2)
    arguments.update(kwargs)
    pruned = prune(small_model(), **arguments)
    assert any("prune_low_magnitude" in layer.name for layer in pruned.layers)


def test_depthwise_layer_is_not_prunable():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="pw")(x))
    with pytest.raises(ValueError, match=r"'dw' \(DepthwiseConv2D\).*no prunable kernel"):
        prune(model, 0.5, end_step=2, frequency=1, layers=["dw"])
    pruned = prune(model, 0.5, end_step=2, frequency=1)
    assert [layer.name for layer in pruned.layers][1:] == ["dw", "prune_low_magnitude_pw"]


def test_models_prune_refuses(other_keras):
    other_inputs = other_keras.Input((4,))
    other = other_keras.Model(other_inputs, other_keras.layers.Dense(2)(other_inputs))
    with pytest.raises(TypeError, match="model of"):
        prune(other, 0.5, end_step=2, frequency=1)
    with pytest.raises(TypeError, match="model of"):
        strip_pruning(other)
    with pytest.raises(TypeError, match="model of"):
        sparsity_report(other)

    pruned = prune(small_model(), 0.5, end_step=2, frequency=1)
    with pytest.raises(ValueError, match="already pruned"):
        prune(pruned, 0.5, end_step=2, frequency=1)

    with pytest.raises(ValueError, match="needs a built model"):
        prune(keras.Sequential([keras.layers.Dense(3)]), 0.5, end_step=2, frequency=1)

    no_kernel = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no prunable layer"):
        prune(no_kernel, 0.5, end_step=2, frequency=1)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential model"):
        prune(subclassed, 0.5, end_step=2, frequency=1)
    distiller = Distiller(small_model("t"), small_model("s"))
    with pytest.raises(ValueError, match=r"distiller.student"):
        strip_pruning(distiller)


def test_sequential_and_nested_models(digits):
    x, y = digits
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="c1"),
                              keras.layers.GlobalAveragePooling2D()], name="inner")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(inner(inputs)))
    pruned = compile_model(prune(model, 0.5, end_step=4, frequency=2))
    fit(pruned, x, y, epochs=2)
    stripped = strip_pruning(pruned)
    assert_at_target(stripped, 0.5)
    assert {row.layer for row in sparsity_report(stripped).layers} == {"c1", "head"}
