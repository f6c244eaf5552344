"""Tests of `keras_dnnopt.models.separable_variant`: which layers are replaced, their
configs, parameter and MAC savings against closed forms and the profiler, the
approximate weights against an exactly separable kernel, and errors."""

import numpy as np
import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.models import separable_variant
from keras_dnnopt.models.separable_variant import SeparableVariantReport, factorize_kernel
from keras_dnnopt.profiling import profile
from tests.helpers import save_and_load, tiny_classification_data


def _sequential_cnn():
    return keras.Sequential([
        keras.Input(shape=(12, 12, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1",
                            kernel_initializer="he_normal", kernel_regularizer="l2",
                            kernel_constraint=keras.constraints.MaxNorm(2.0)),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Conv2D(16, 5, strides=2, use_bias=False, name="c2"),
        keras.layers.Conv2D(6, 1, name="pw"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="head"),
    ])


def _functional_cnn():
    inputs = keras.Input(shape=(10, 10, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = keras.layers.Add(name="skip")([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def _full_conv(h, w, cin, n, k, bias=True):
    return k * k * cin * n + (n if bias else 0), h * w * n * k * k * cin


def _separable(h, w, cin, n, k, bias=True):
    return k * k * cin + cin * n + (n if bias else 0), h * w * (cin * k * k + cin * n)


def test_sequential_cnn_is_rewritten_with_closed_form_savings():
    model = _sequential_cnn()
    new, report = separable_variant(model)
    assert isinstance(new, keras.Sequential)
    assert isinstance(report, SeparableVariantReport)
    assert [r.name for r in report.replaced] == ["c1", "c2"]
    assert [(s.name, s.reason) for s in report.skipped] == [("pw", "1x1 kernel")]
    types = {layer.name: type(layer) for layer in new.layers}
    assert types["c1"] is keras.layers.SeparableConv2D
    assert types["c2"] is keras.layers.SeparableConv2D
    assert types["pw"] is keras.layers.Conv2D
    assert new.output_shape == model.output_shape
    for old_layer, new_layer in zip(model.layers, new.layers, strict=True):
        assert old_layer.output.shape == new_layer.output.shape
    # Closed forms: c1 3x3 3->8 on 12x12 (bias), c2 5x5 8->16 stride 2 -> 4x4 (no bias).
    p1, m1 = _full_conv(12, 12, 3, 8, 3)
    q1, n1 = _separable(12, 12, 3, 8, 3)
    p2, m2 = _full_conv(4, 4, 8, 16, 5, bias=False)
    q2, n2 = _separable(4, 4, 8, 16, 5, bias=False)
    assert report.params_saved == (p1 - q1) + (p2 - q2)
    assert report.macs_saved == (m1 - n1) + (m2 - n2)
    assert [(r.params_before, r.params_after) for r in report.replaced] == [(p1, q1), (p2, q2)]
    before, after = profile(model), profile(new)
    assert (report.params_before, report.params_after) == (before.params, after.params)
    assert (report.macs_before, report.macs_after) == (before.macs, after.macs)
    assert report.params_after == new.count_params()


def test_replacement_keeps_the_conv_config():
    model = _sequential_cnn()
    new, _ = separable_variant(model)
    for name in ("c1", "c2"):
        old, sep = model.get_layer(name).get_config(), new.get_layer(name).get_config()
        for key in ("filters", "kernel_size", "strides", "padding", "data_format",
                    "dilation_rate", "activation", "use_bias", "bias_initializer",
                    "bias_regularizer", "activity_regularizer", "trainable"):
            assert sep[key] == old[key], key
        for part in ("depthwise", "pointwise"):
            assert sep[f"{part}_initializer"] == old["kernel_initializer"]
            assert sep[f"{part}_regularizer"] == old["kernel_regularizer"]
            assert sep[f"{part}_constraint"] == old["kernel_constraint"]
        assert sep["depth_multiplier"] == 1
    # The l2 kernel regularizer now applies to both kernels of c1.
    new(np.zeros((1, 12, 12, 3), "float32"))
    assert len(new.losses) == 2


def test_functional_cnn_with_skip_connection():
    model = _functional_cnn()
    new, report = separable_variant(model)
    assert [type(new.get_layer(n)) for n in ("c1", "c2")] == [keras.layers.SeparableConv2D] * 2
    assert new.get_layer("c1").get_config()["dilation_rate"] == (2, 2)
    assert new.output_shape == model.output_shape
    p, m = _full_conv(10, 10, 4, 4, 3)
    q, n = _separable(10, 10, 4, 4, 3)
    assert report.params_saved == 2 * (p - q)
    assert report.macs_saved == 2 * (m - n)
    assert report.macs_saved == profile(model).macs - profile(new).macs


class _MyConv(keras.layers.Conv2D):
    pass


def test_other_convolutions_are_left_alone():
    inputs = keras.Input(shape=(8, 8, 4))
    x = keras.layers.Conv2D(4, 1, name="pointwise")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="separable")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", groups=2, name="grouped")(x)
    x = _MyConv(4, 3, padding="same", name="custom")(x)
    x = keras.layers.Conv2DTranspose(4, 3, padding="same", name="transpose")(x)
    model = keras.Model(inputs, x)
    new, report = separable_variant(model)
    assert report.replaced == []
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons == {
        "pointwise": "1x1 kernel",
        "depthwise": "depthwise convolution",
        "separable": "already separable",
        "grouped": "grouped convolution (groups=2)",
        "custom": "a subclass of Conv2D, not exactly Conv2D",
        "transpose": "transposed convolution",
    }
    for old, layer in zip(model.layers, new.layers, strict=True):
        assert type(layer) is type(old)
        for a, b in zip(old.get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(new(x), model(x), rtol=1e-6, atol=1e-6)


def test_min_kernel_size_and_exclude():
    model = keras.Sequential([keras.Input(shape=(9, 9, 2)),
                              keras.layers.Conv2D(3, 3, name="k3"),
                              keras.layers.Conv2D(3, 5, name="k5"),
                              keras.layers.Conv2D(3, (1, 3), name="k13", padding="same")])
    _, report = separable_variant(model, min_kernel_size=4)
    assert [r.name for r in report.replaced] == ["k5"]
    skipped = {s.name: s.reason for s in report.skipped}
    assert skipped["k3"] == "3x3 kernel, below min_kernel_size=4"
    assert skipped["k13"] == "1x3 kernel, below min_kernel_size=4"
    _, report = separable_variant(model, exclude=["k3"])
    assert [r.name for r in report.replaced] == ["k5", "k13"]
    assert {s.name: s.reason for s in report.skipped} == {"k3": "excluded"}


def _rank1_kernel(rng, k, cin, cout, rank=1):
    """W[:, :, c, :] = sum_j d_cj (x) p_cj: exactly rank `rank` per input channel."""
    kernel = np.zeros((k, k, cin, cout))
    for c in range(cin):
        for _ in range(rank):
            kernel[:, :, c, :] += np.einsum("ij,o->ijo", rng.normal(size=(k, k)),
                                            rng.normal(size=cout))
    return kernel.astype("float32")


@pytest.mark.parametrize("depth_multiplier", [1, 2])
def test_approximate_weights_reproduce_a_separable_kernel(rng, depth_multiplier):
    model = keras.Sequential([
        keras.Input(shape=(7, 7, 3)),
        keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    conv = model.get_layer("conv")
    bias = rng.normal(size=5).astype("float32")
    conv.set_weights([_rank1_kernel(rng, 3, 3, 5, rank=depth_multiplier), bias])
    new, report = separable_variant(model, depth_multiplier=depth_multiplier)
    assert report.replaced[0].approximation_error < 1e-6
    sep = new.get_layer("conv")
    assert sep.depthwise_kernel.shape == (3, 3, 3, depth_multiplier)
    np.testing.assert_array_equal(sep.get_weights()[2], bias)
    x = rng.normal(size=(4, 7, 7, 3)).astype("float32")
    np.testing.assert_allclose(new(x), model(x), rtol=1e-5, atol=1e-5)


def test_factorize_kernel_is_the_truncated_svd(rng):
    kernel = rng.normal(size=(3, 3, 2, 4))
    depthwise, pointwise, error = factorize_kernel(kernel)
    rebuilt = np.einsum("hwc,co->hwco", depthwise[..., 0], pointwise[0, 0])
    expected_sq = 0.0
    for c in range(2):
        s = np.linalg.svd(kernel[:, :, c, :].reshape(9, 4), compute_uv=False)
        expected_sq += np.sum(s[1:] ** 2)
        # Eckart-Young: the rank-1 part is the best one.
        assert np.linalg.matrix_rank(rebuilt[:, :, c, :].reshape(9, 4), tol=1e-9) == 1
    np.testing.assert_allclose(np.sum((kernel - rebuilt) ** 2), expected_sq, rtol=1e-9)
    assert error == pytest.approx(np.sqrt(expected_sq / np.sum(kernel**2)))


def test_weights_none_leaves_fresh_initialisation_and_unchanged_layers_keep_weights():
    model = _sequential_cnn()
    model.get_layer("c1").set_weights([w + 1.0 for w in model.get_layer("c1").get_weights()])
    new, report = separable_variant(model, weights=None)
    assert report.weights is None and report.replaced[0].approximation_error is None
    np.testing.assert_array_equal(new.get_layer("c1").get_weights()[2], np.zeros(8))
    for name in ("bn", "pw", "head"):
        old, layer = model.get_layer(name), new.get_layer(name)
        assert layer is not old
        for a, b in zip(old.get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The copies are independent of the original.
    new.get_layer("head").set_weights([np.zeros_like(w) for w in model.get_layer("head")
                                       .get_weights()])
    assert np.any(model.get_layer("head").get_weights()[0] != 0)
    assert type(model.get_layer("c1")) is keras.layers.Conv2D  # original untouched


def test_new_model_trains_one_step_and_round_trips():
    model = _functional_cnn()
    new, _ = separable_variant(model)
    x, y = tiny_classification_data((10, 10, 4), num_classes=2)
    new.compile(optimizer=keras.optimizers.SGD(0.05),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = new.get_layer("c1").get_weights()[0].copy()
    history = new.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, new.get_layer("c1").get_weights()[0])
    restored = save_and_load(new)
    np.testing.assert_allclose(restored.predict(x, verbose=0), new.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_nested_sequential_is_rewritten():
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same", name="inner_conv"),
                              keras.layers.ReLU()], name="inner")
    inputs = keras.Input(shape=(6, 6, 2))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inner(inputs)))
    new, report = separable_variant(model)
    assert [r.name for r in report.replaced] == ["inner_conv"]
    new_inner = new.get_layer("inner")
    assert new_inner is not inner
    assert type(new_inner.get_layer("inner_conv")) is keras.layers.SeparableConv2D
    assert report.macs_saved == profile(model).macs - profile(new).macs > 0


def test_report_is_printable_and_serializable():
    _, report = separable_variant(_sequential_cnn())
    text = str(report)
    for expected in ("replaced c1", "kept     pw (Conv2D): 1x1 kernel", "Params:", "MACs:",
                     f"saved {report.macs_saved:,}"):
        assert expected in text
    data = report.to_dict()
    assert data["params_saved"] == report.params_saved
    assert data["replaced"][0]["kernel_size"] == [3, 3]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, x):
        return self.conv(x)


def test_errors(other_keras):
    model = _Subclassed()
    model(np.zeros((1, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        separable_variant(model)
    with pytest.raises(TypeError, match="Argument `model` must be"):
        separable_variant(keras.layers.Conv2D(2, 3))
    foreign = other_keras.Sequential([other_keras.Input(shape=(5, 5, 1)),
                                      other_keras.layers.Conv2D(2, 3)])
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS"):
        separable_variant(foreign)


@pytest.mark.parametrize(
    "kwargs, bad_argument",
    [
        (dict(weights="exact"), "weights"), (dict(weights=None), None),
        (dict(min_kernel_size=1), "min_kernel_size"), (dict(min_kernel_size=2), None),
        (dict(depth_multiplier=0), "depth_multiplier"), (dict(depth_multiplier=1), None),
        (dict(exclude="c1"), "exclude"), (dict(exclude=["c1"]), None),
    ],
)
def test_argument_validation(kwargs, bad_argument):
    model = _sequential_cnn()
    if bad_argument is None:
        separable_variant(model, **kwargs)
    else:
        with pytest.raises(ValueError, match=f"Argument `{bad_argument}` must be .*Received"):
            separable_variant(model, **kwargs)
