"""Tests of `keras_dnnopt.profiling`: MAC rules, parameter totals, composite and nested
models, the table and `measure_latency`. References: the MobileNet papers' MAC counts,
`model.count_params()`, and closed forms computed by hand below."""

import json
from fractions import Fraction

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.profiling import (
    LatencyResult,
    LayerProfile,
    ModelProfile,
    measure_latency,
    profile,
)


def _model(input_shape, *layers):
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _row(prof, class_name):
    rows = [r for r in prof.layers if r.class_name == class_name]
    assert len(rows) == 1, [r.class_name for r in prof.layers]
    return rows[0]


def _weight_scalars(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


# ------------------------------------------------------------------ reference networks


@pytest.mark.parametrize(
    "application, paper_macs",
    [("MobileNet", 569e6), ("MobileNetV2", 300e6)],
)
def test_keras_applications_match_paper_macs(application, paper_macs):
    model = getattr(keras.applications, application)(weights=None)
    prof = profile(model)
    assert prof.params == model.count_params()
    assert abs(prof.macs / paper_macs - 1) < 0.02, prof.macs
    assert prof.macs_complete
    # BN is reported per layer but folds into the convolutions, so it is not in the total.
    bn_rows = [r for r in prof.layers if r.class_name == "BatchNormalization"]
    assert bn_rows and all(r.macs > 0 and not r.in_total for r in bn_rows)
    assert prof.batchnorm_macs == sum(r.macs for r in bn_rows)
    with_bn = profile(model, count_batchnorm=True)
    assert with_bn.macs == prof.macs + prof.batchnorm_macs


def _builder(name):
    models = pytest.importorskip("keras_dnnopt.models")
    if not hasattr(models, name):
        pytest.skip(f"keras_dnnopt.models.{name} is not available yet")
    return getattr(models, name)


@pytest.mark.parametrize(
    "builder, reference, paper_macs",
    [("mobilenet_v1", "MobileNet", 569e6), ("mobilenet_v2", "MobileNetV2", 300e6)],
)
def test_builders_match_paper_macs_and_keras_applications(builder, reference, paper_macs):
    model = _builder(builder)(input_shape=(224, 224, 3), num_classes=1000)
    prof = profile(model)
    assert prof.params == model.count_params()
    assert abs(prof.macs / paper_macs - 1) < 0.02, prof.macs
    ref = profile(getattr(keras.applications, reference)(weights=None))
    assert prof.params == ref.params


# ------------------------------------------------------------------ MAC rules


class _MyConv(keras.layers.Conv2D):
    """A user's subclass of Conv2D: gets the Conv2D rule."""


LAYER_CASES = [
    # (input shape, layer factory, expected MACs per sample, computed by hand)
    ((8, 8, 3), lambda: keras.layers.Conv2D(4, 3, padding="same"), 8 * 8 * 4 * 9 * 3),
    ((9, 9, 3), lambda: keras.layers.Conv2D(4, 3, strides=2), 4 * 4 * 4 * 9 * 3),
    ((8, 8, 4), lambda: keras.layers.Conv2D(6, 3, padding="same", groups=2),
     8 * 8 * 6 * 9 * 4 // 2),
    ((8, 8, 3), lambda: _MyConv(4, 3, padding="same"), 8 * 8 * 4 * 9 * 3),
    ((10, 3), lambda: keras.layers.Conv1D(5, 3), 8 * 5 * 3 * 3),
    ((8, 8, 3), lambda: keras.layers.DepthwiseConv2D(3, padding="same"), 8 * 8 * 3 * 9),
    ((8, 8, 3), lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), 6 * 6 * 6 * 9),
    ((8, 8, 3), lambda: keras.layers.SeparableConv2D(5, 3, padding="same"),
     8 * 8 * 3 * 9 + 8 * 8 * 3 * 5),
    ((4, 4, 3), lambda: keras.layers.Conv2DTranspose(2, 3, strides=2), 4 * 4 * 3 * 9 * 2),
    ((5, 7), lambda: keras.layers.Dense(3), 5 * 7 * 3),
    ((6,), lambda: keras.layers.Dense(4), 24),
    ((8, 8, 3), lambda: keras.layers.BatchNormalization(), 8 * 8 * 3),
    ((8, 8, 3), lambda: keras.layers.MaxPooling2D(2), 4 * 4 * 3 * 4),
    ((9, 9, 3), lambda: keras.layers.AveragePooling2D(3, strides=1), 7 * 7 * 3 * 9),
    ((8, 8, 3), lambda: keras.layers.GlobalAveragePooling2D(), 8 * 8 * 3),
    ((8, 8, 3), lambda: keras.layers.GlobalMaxPooling2D(), 8 * 8 * 3),
    ((8, 8, 3), lambda: keras.layers.ReLU(), 0),
    ((8, 8, 3), lambda: keras.layers.Activation("swish"), 0),
    ((8, 8, 3), lambda: keras.layers.Flatten(), 0),
    ((8, 8, 3), lambda: keras.layers.Dropout(0.5), 0),
    ((8, 8, 3), lambda: keras.layers.ZeroPadding2D(1), 0),
]


@pytest.mark.parametrize("input_shape, make_layer, expected", LAYER_CASES)
def test_layer_mac_rules(input_shape, make_layer, expected):
    layer = make_layer()
    model = _model(input_shape, layer)
    prof = profile(model)
    (row,) = prof.layers
    assert row.class_name == type(layer).__name__
    assert row.macs == expected
    assert row.macs_known
    assert row.params == layer.count_params() == prof.params
    if row.in_total:
        assert prof.macs == expected


def test_dispatch_is_on_exact_class():
    # tf_keras's Conv2DTranspose subclasses Conv2D (and its DepthwiseConv2D and
    # SeparableConv2D subclass `Conv`); the Conv2D rule would count them differently.
    assert issubclass(keras.layers.Conv2DTranspose, keras.layers.Conv2D) is USING_TF_KERAS
    prof = profile(_model((4, 4, 3), keras.layers.Conv2DTranspose(2, 3, strides=2)))
    assert prof.macs == 4 * 4 * 3 * 9 * 2  # the Conv2D rule would use the 9x9 output
    prof = profile(_model((8, 8, 4), keras.layers.DepthwiseConv2D(3, padding="same")))
    assert prof.macs == 8 * 8 * 4 * 9


@pytest.mark.parametrize("merge, inputs", [("Add", 2), ("Multiply", 2), ("Add", 3)])
def test_merge_layers_count_per_output_element(merge, inputs):
    x = keras.Input(shape=(4, 4, 3))
    out = getattr(keras.layers, merge)()([x] * inputs)
    prof = profile(keras.Model(x, out))
    assert prof.macs == (inputs - 1) * 4 * 4 * 3


@pytest.mark.parametrize(
    "filters, kernel, cin",
    [(8, 3, 3), (16, 3, 16), (32, 5, 8), (64, 7, 64), (10, 5, 1)],
)
def test_separable_to_full_conv_mac_ratio_is_exact(filters, kernel, cin):
    shape = (12, 12, cin)
    full = _model(shape, keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False))
    separable = _model(
        shape,
        keras.layers.DepthwiseConv2D(kernel, padding="same", use_bias=False),
        keras.layers.Conv2D(filters, 1, use_bias=False),
    )
    full_macs, sep_macs = profile(full).macs, profile(separable).macs
    assert full_macs == 12 * 12 * filters * kernel**2 * cin
    assert Fraction(sep_macs, full_macs) == Fraction(1, filters) + Fraction(1, kernel**2)
    # The fused layer counts the same as its two halves.
    fused = _model(shape, keras.layers.SeparableConv2D(filters, kernel, padding="same",
                                                      use_bias=False))
    assert profile(fused).macs == sep_macs


# ------------------------------------------------------------------ params and structure


def _nested_sequential_model():
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.BatchNormalization(), keras.layers.ReLU()])
    inputs = keras.Input(shape=(8, 8, 3))
    x = inner(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x)), inner


def _frozen_model():
    model = _model((6, 6, 2), keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization(),
                   keras.layers.Flatten(), keras.layers.Dense(2))
    model.layers[1].trainable = False
    return model


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: _nested_sequential_model()[0],
        lambda: keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(3),
                                  keras.Sequential([keras.layers.Dense(4),
                                                    keras.layers.Dense(2)])]),
        lambda: keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25,
                                             weights=None, classes=5),
        _frozen_model,
    ],
    ids=["functional+sequential", "sequential-in-sequential", "mobilenet-0.25", "frozen"],
)
def test_params_match_count_params(make_model):
    model = make_model()
    prof = profile(model)
    assert prof.params == model.count_params()
    assert prof.trainable_params == _weight_scalars(model.trainable_weights)
    assert prof.non_trainable_params == _weight_scalars(model.non_trainable_weights)
    assert prof.params == sum(r.params for r in prof.layers)
    assert prof.bytes == {"float32": 4 * prof.params, "float16": 2 * prof.params,
                          "int8": prof.params}


def test_nested_model_is_recursed_into_with_prefixed_names():
    model, inner = _nested_sequential_model()
    prof = profile(model)
    names = [r.name for r in prof.layers]
    conv = inner.layers[0]
    assert f"{inner.name}/{conv.name}" in names
    assert _row(prof, "Conv2D").macs == 8 * 8 * 4 * 9 * 3
    assert _row(prof, "Conv2D").output_shape == (None, 8, 8, 4)


def test_nested_model_with_undefined_dims_takes_the_outer_shapes():
    i = keras.Input(shape=(None, None, 3))
    inner = keras.Model(i, keras.layers.Conv2D(4, 3, padding="same")(i), name="inner")
    outer_input = keras.Input(shape=(8, 8, 3))
    outer = keras.Model(outer_input, inner(outer_input))
    prof = profile(outer)
    assert prof.macs == 8 * 8 * 4 * 9 * 3 and prof.macs_complete
    assert prof.params == outer.count_params()


def test_shared_layer_counts_once_for_params_and_per_call_for_macs():
    dense = keras.layers.Dense(4)
    a, b = keras.Input(shape=(3,)), keras.Input(shape=(3,))
    model = keras.Model([a, b], keras.layers.Add()([dense(a), dense(b)]))
    prof = profile(model)
    row = _row(prof, "Dense")
    assert row.calls == 2 and row.macs == 2 * 3 * 4
    assert row.params == 16 == prof.params == model.count_params()
    assert "x2" in str(prof)


class _Opaque(keras.layers.Layer):
    """A user's layer the profiler cannot see into."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(int(input_shape[-1]),), initializer="ones")

    def call(self, x):
        return x * self.w


def test_custom_layer_keeps_params_and_is_marked_unknown():
    model = _model((4, 4, 3), keras.layers.Conv2D(2, 1), _Opaque(), keras.layers.Flatten())
    prof = profile(model)
    row = _row(prof, "_Opaque")
    assert row.params == 2 and not row.macs_known and row.macs == 0
    assert not prof.macs_complete
    assert prof.params == model.count_params()
    assert prof.macs == 4 * 4 * 2 * 3
    table = str(prof)
    assert "?" in table and "incomplete" in table


class _TwoDense(keras.layers.Layer):
    """A composite layer with the `unroll` protocol of keras_dnnopt's blocks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(5, name="first")
        self.second = keras.layers.Dense(2, name="second")

    def build(self, input_shape):
        self.first.build(input_shape)
        self.second.build((*input_shape[:-1], 5))
        self.built = True

    def call(self, x):
        return self.second(self.first(x))

    def unroll(self, inputs):
        return self.second(self.first(inputs))


def test_layer_with_unroll_is_profiled_through_its_sublayers():
    model = _model((3, 4), _TwoDense(name="block"))
    prof = profile(model)
    assert [r.name for r in prof.layers] == ["block/first", "block/second"]
    assert prof.macs == 3 * 4 * 5 + 3 * 5 * 2
    assert prof.params == model.count_params() == (4 * 5 + 5) + (5 * 2 + 2)


def test_keras_dnnopt_blocks_are_unrolled():
    layers = pytest.importorskip("keras_dnnopt.layers")
    block = layers.SeparableConvBlock(8, name="block")
    model = _model((8, 8, 4), block, keras.layers.GlobalAveragePooling2D())
    prof = profile(model)
    assert prof.params == model.count_params()
    assert all(r.name.startswith("block/") for r in prof.layers[:-1])
    depthwise = _row(prof, "DepthwiseConv2D")
    pointwise = [r for r in prof.layers if r.class_name == "Conv2D"]
    assert depthwise.macs == 8 * 8 * 4 * 9
    assert [r.macs for r in pointwise] == [8 * 8 * 4 * 8]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_is_one_opaque_row():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    prof = profile(model)
    assert prof.params == model.count_params() == 15
    assert len(prof.layers) == 1 and not prof.layers[0].macs_known


def test_unbuilt_sequential_needs_input_shape():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built.*pass `input_shape`"):
        profile(model)
    prof = profile(model, input_shape=(4,))
    assert prof.params == 15 == model.count_params()
    assert prof.macs == 12


def test_input_shape_defines_undefined_dims_and_must_match():
    model = _model((None, None, 3), keras.layers.Conv2D(2, 3, padding="same"))
    assert not profile(model).macs_complete
    prof = profile(model, input_shape=(10, 10, 3))
    assert prof.macs == 10 * 10 * 2 * 9 * 3 and prof.macs_complete
    assert profile(model, input_shape=[10, 10, 3]).macs == prof.macs
    with pytest.raises(ValueError, match="must match the input"):
        profile(model, input_shape=(10, 10, 4))
    with pytest.raises(ValueError, match="Argument `input_shape` must be a tuple"):
        profile(model, input_shape=(10, 0, 3))


def test_output_of_profile_is_printable_and_serializable():
    model, _ = _nested_sequential_model()
    prof = profile(model)
    assert isinstance(prof, ModelProfile) and all(isinstance(r, LayerProfile)
                                                  for r in prof.layers)
    data = json.loads(json.dumps(prof.to_dict()))
    assert data["params"] == prof.params and data["macs"] == prof.macs
    assert len(data["layers"]) == len(prof.layers)
    assert data["layers"][0]["output_shape"] == [None, 8, 8, 4]
    lines = []
    prof.summary(print_fn=lines.append)
    table = lines[0]
    assert table == str(prof)
    for text in ("Total params: ", f"{prof.params:,}", "Total MACs", "float16", "% MACs",
                 "folded"):
        assert text in table
    assert prof.flops == 2 * prof.macs


def test_profile_rejects_other_keras_and_non_models(other_keras):
    foreign = other_keras.Sequential([other_keras.Input(shape=(2,)),
                                      other_keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS"):
        profile(foreign)
    with pytest.raises(TypeError, match="Argument `model` must be"):
        profile("model")


# ------------------------------------------------------------------ latency


@pytest.fixture
def small_model():
    return _model((8, 8, 3), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                  keras.layers.Dense(2))


def test_measure_latency_result_structure(small_model):
    result = measure_latency(small_model, batch_size=2, warmup=1, runs=5)
    assert isinstance(result, LatencyResult)
    assert result.runs == 5 and result.warmup == 1 and result.batch_size == 2
    assert len(result.times_ms) == 5
    assert result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms <= result.max_ms
    assert result.std_ms >= 0 and result.mean_ms > 0
    assert result.throughput == pytest.approx(2000.0 / result.median_ms)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["median_ms"] == result.median_ms
    assert "median" in str(result) and "batch 2" in str(result)


def test_measure_latency_with_input_data_and_eager(small_model):
    x = np.zeros((3, 8, 8, 3), "float32")
    result = measure_latency(small_model, input_data=x, warmup=0, runs=1,
                             use_tf_function=False)
    assert result.batch_size == 3 and result.runs == 1 and not result.use_tf_function


@pytest.mark.parametrize(
    "kwargs, bad_argument",
    [
        (dict(runs=0), "runs"), (dict(runs=1), None), (dict(runs=1.5), "runs"),
        (dict(warmup=-1), "warmup"), (dict(warmup=0), None),
        (dict(batch_size=0), "batch_size"), (dict(batch_size=1), None),
    ],
)
def test_measure_latency_validates_arguments(small_model, kwargs, bad_argument):
    kwargs = {"warmup": 0, "runs": 1, **kwargs}
    if bad_argument is None:
        assert measure_latency(small_model, **kwargs).runs == kwargs["runs"]
    else:
        with pytest.raises(ValueError, match=f"Argument `{bad_argument}` must be .*Received"):
            measure_latency(small_model, **kwargs)


def test_measure_latency_needs_defined_input_shape(other_keras):
    model = _model((None, None, 3), keras.layers.Conv2D(2, 3))
    with pytest.raises(ValueError, match="undefined dimensions.*input_shape"):
        measure_latency(model, runs=1, warmup=0)
    assert measure_latency(model, input_shape=(8, 8, 3), runs=1, warmup=0).runs == 1
    foreign = other_keras.Sequential([other_keras.Input(shape=(2,)),
                                      other_keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS"):
        measure_latency(foreign)
