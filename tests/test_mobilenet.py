"""Tests of the MobileNet builders: exact parameter counts against keras.applications,
small inputs and the stride plan, the plain baseline, validation."""

import numpy as np
import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.layers.base_block import make_divisible
from keras_dnnopt.models import mobilenet_v1, mobilenet_v2, plain_cnn
from keras_dnnopt.models.mobilenet.common import plan_strides
from keras_dnnopt.models.mobilenet.presets import MOBILENET_V1_BLOCKS
from tests.helpers import save_and_load, tiny_classification_data

BUILDERS = [mobilenet_v1, mobilenet_v2, plain_cnn]


def _assert_builtin_only(model):
    for layer in model.layers:
        package = type(layer).__module__.split(".")[0]
        assert package in ("keras", "tf_keras"), f"{layer.name} is a {type(layer)}"


def _strides_of(model, layer_type):
    return [layer.strides[0] for layer in model.layers if type(layer) is layer_type]


# ---- exact parameter counts and strides at 224x224x3 ----------------------------------


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_mobilenet_v1_matches_keras_applications(alpha):
    model = mobilenet_v1(alpha=alpha)
    reference = keras.applications.MobileNet(weights=None, alpha=alpha)
    assert model.count_params() == reference.count_params()
    _assert_builtin_only(model)
    # 224 keeps every stride-2 stage, at the same places as keras.applications.
    depthwise = keras.layers.DepthwiseConv2D
    assert _strides_of(model, depthwise) == _strides_of(reference, depthwise)
    assert model.get_layer("block13_pointwise_act").output.shape[1:3] == (7, 7)
    assert model.output_shape == reference.output_shape == (None, 1000)


@pytest.mark.parametrize("alpha", [0.35, 1.0, 1.3])
def test_mobilenet_v2_matches_keras_applications(alpha):
    model = mobilenet_v2(alpha=alpha)
    reference = keras.applications.MobileNetV2(weights=None, alpha=alpha)
    assert model.count_params() == reference.count_params()
    if alpha == 1.0:
        assert model.count_params() == 3_538_984
    _assert_builtin_only(model)
    depthwise = keras.layers.DepthwiseConv2D
    assert _strides_of(model, depthwise) == _strides_of(reference, depthwise)
    # The last conv has 1280 channels, widened only when alpha > 1.
    expected_last = make_divisible(1280 * alpha, 8) if alpha > 1 else 1280
    assert model.get_layer("top_act").output.shape[1:] == (7, 7, expected_last)
    # Residual adds where keras.applications has them.
    count_adds = lambda m: sum(isinstance(lay, keras.layers.Add) for lay in m.layers)
    assert count_adds(model) == count_adds(reference) == 10


def test_mobilenet_v1_without_top_matches_keras_applications():
    model = mobilenet_v1(include_top=False, pooling="avg", alpha=0.5)
    reference = keras.applications.MobileNet(weights=None, include_top=False, pooling="avg",
                                             alpha=0.5)
    assert model.count_params() == reference.count_params()
    assert model.output_shape == reference.output_shape == (None, 512)


# ---- small inputs and the stride plan -------------------------------------------------


@pytest.mark.parametrize(
    "side, expected",
    [(224, [2, 2, 2, 2, 2]), (32, [1, 1, 2, 2, 2]), (28, [1, 1, 2, 2, 2]),
     (8, [1, 1, 1, 1, 2]), (4, [1, 1, 1, 1, 1]), (2, [1, 1, 1, 1, 1])],
)
def test_plan_strides_drops_the_earliest_stride2_stages(side, expected):
    strides = [2, 1, 2, 1, 2, 1, 2, 2, 1]
    planned = plan_strides(strides, (side, side + 5, 1), min_feature_size=4)
    assert [s for s, original in zip(planned, strides, strict=True) if original == 2] == expected
    assert [s for s, original in zip(planned, strides, strict=True) if original == 1] == [1] * 4


def test_plan_strides_keeps_everything_when_disabled_or_unknown():
    strides = [2, 1, 2]
    assert plan_strides(strides, (8, 8, 3), None) == strides
    assert plan_strides(strides, (None, None, 3), 4) == strides


def _final_side(side, min_feature_size=4, stages=5):
    # Independent statement of the rule: halve (ceil) while the result stays >= the minimum.
    for _ in range(stages):
        if -(-side // 2) < min_feature_size:
            break
        side = -(-side // 2)
    return side


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_small_inputs_build_and_train(builder, input_shape):
    model = builder(input_shape, num_classes=3, alpha=0.25, classifier_activation=None)
    _assert_builtin_only(model)
    features = keras.Model(model.input, model.get_layer("avg_pool").input)
    side = _final_side(input_shape[0])
    assert features.output_shape[1:3] == (side, side) == (4, 4)
    x, y = tiny_classification_data(input_shape, num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, a) for b, a in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("builder", [mobilenet_v1, mobilenet_v2])
def test_min_feature_size_moves_the_plan(builder):
    shape = (32, 32, 3)
    get = lambda **kw: builder(shape, include_top=False, alpha=0.25, **kw).output_shape[1:3]
    assert get(min_feature_size=8) == (8, 8)
    assert get(min_feature_size=2) == (2, 2)
    assert get(min_feature_size=None) == (1, 1)  # every stride kept, as keras.applications


def test_saved_model_round_trip_and_logits():
    model = mobilenet_v2((16, 16, 3), num_classes=4, alpha=0.35, se_ratio=0.25, dropout=0.2,
                         activation="hard_swish", classifier_activation=None)
    assert model.get_layer("predictions").activation.__name__ == "linear"
    assert sum(isinstance(lay, keras.layers.Multiply) for lay in model.layers) > 17
    _assert_builtin_only(model)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(save_and_load(model).predict(x, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)


def test_softmax_head_and_pooling_options():
    model = mobilenet_v1((16, 16, 1), num_classes=5, alpha=0.25)
    out = model.predict(np.zeros((2, 16, 16, 1), "float32"), verbose=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    assert mobilenet_v1((16, 16, 1), alpha=0.25, include_top=False).output_shape == (
        None, 4, 4, 256)
    assert mobilenet_v1((16, 16, 1), alpha=0.25, include_top=False,
                        pooling="max").output_shape == (None, 256)
    assert mobilenet_v2((16, 16, 1), alpha=0.35, include_top=False,
                        pooling="avg").output_shape == (None, 1280)


def test_kernel_regularizer_reaches_every_kernel():
    model = mobilenet_v1((8, 8, 1), num_classes=2, alpha=0.25, kernel_regularizer=1e-4)
    # stem conv + 13 x (depthwise + pointwise) + classifier.
    assert len(model.losses) == 1 + 2 * 13 + 1


def _batch_norms(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("momentum", [None, 0.9])
def test_batch_norm_momentum_reaches_every_batch_norm(builder, momentum):
    kwargs = {} if momentum is None else {"batch_norm_momentum": momentum}
    expected = 0.99 if momentum is None else momentum  # Keras' default by default
    extra = {"se_ratio": 0.25} if builder is mobilenet_v2 else {}
    model = builder((8, 8, 1), num_classes=3, alpha=0.25, **extra, **kwargs)
    batch_norms = _batch_norms(model)
    # stem + 13 x (1 or 2) for the V1 shape; stem + 16 x 3 + 1 x 2 + top for V2.
    expected_count = {mobilenet_v1: 1 + 13 * 2, plain_cnn: 1 + 13, mobilenet_v2: 1 + 50 + 1}
    assert len(batch_norms) == expected_count[builder]
    assert all(bn.momentum == pytest.approx(expected) for bn in batch_norms)
    # The option changes no weight.
    reference = builder((8, 8, 1), num_classes=3, alpha=0.25, **extra)
    assert model.count_params() == reference.count_params()
    # The model config keeps it.
    clone = keras.Model.from_config(model.get_config())
    assert [bn.momentum for bn in _batch_norms(clone)] == pytest.approx(
        [expected] * len(batch_norms))


def test_batch_norm_momentum_survives_save_and_load(tmp_path):
    model = mobilenet_v1((8, 8, 1), num_classes=3, alpha=0.25, batch_norm_momentum=0.9)
    restored = save_and_load(model, str(tmp_path))
    batch_norms = _batch_norms(restored)
    assert batch_norms and all(bn.momentum == pytest.approx(0.9) for bn in batch_norms)


# ---- the plain baseline ---------------------------------------------------------------


def test_plain_cnn_has_the_shape_of_mobilenet_v1_with_full_convolutions():
    shape, alpha = (32, 32, 3), 0.5
    separable = mobilenet_v1(shape, num_classes=10, alpha=alpha)
    plain = plain_cnn(shape, num_classes=10, alpha=alpha)
    assert plain.output_shape == separable.output_shape
    # Each of the 13 blocks has conv/bn/act (3 layers) instead of 6.
    assert len(separable.layers) - len(plain.layers) == 13 * 3
    for index in range(1, 14):
        assert (plain.get_layer(f"block{index}_act").output.shape
                == separable.get_layer(f"block{index}_pointwise_act").output.shape)

    # Closed form per block, from M to N channels with 3x3 kernels: separable has
    # 9M (depthwise) + 4M (its BN) + MN (pointwise), plain has 9MN; the rest is shared.
    in_channels = [int(32 * alpha)] + [int(f * alpha) for f, _ in MOBILENET_V1_BLOCKS[:-1]]
    out_channels = [int(f * alpha) for f, _ in MOBILENET_V1_BLOCKS]
    separable_only = sum(9 * m + 4 * m + m * n for m, n in zip(in_channels, out_channels,
                                                                 strict=True))
    plain_only = sum(9 * m * n for m, n in zip(in_channels, out_channels, strict=True))
    assert plain.count_params() == separable.count_params() - separable_only + plain_only
    assert plain.count_params() > 7 * separable.count_params()

    # Per block, the kernel ratio is 1/N + 1/k^2.
    for index, (m, n) in enumerate(zip(in_channels, out_channels, strict=True), start=1):
        sep_kernels = sum(separable.get_layer(f"block{index}_{part}").count_params()
                          for part in ("depthwise", "pointwise"))
        full_kernels = plain.get_layer(f"block{index}_conv").count_params()
        assert sep_kernels == 9 * m + m * n and full_kernels == 9 * m * n
        assert sep_kernels / full_kernels == pytest.approx(1 / n + 1 / 9)


# ---- validation: both sides of each boundary ------------------------------------------

INVALID = [
    (dict(input_shape=(32, 32)), r"`input_shape` must have 3 dimensions"),
    (dict(input_shape=(32, 0, 3)), r"`input_shape` must be a tuple of positive integers"),
    (dict(input_shape=(32, 32, None)), r"`input_shape` must have a known number of channels"),
    (dict(num_classes=0), r"`num_classes` must be > 0. Received: num_classes=0"),
    (dict(alpha=0), r"`alpha` must be > 0. Received: alpha=0"),
    (dict(alpha=-0.5), r"`alpha` must be > 0"),
    (dict(dropout=1.0), r"`dropout` must be in \[0, 1\)"),
    (dict(dropout=-0.1), r"`dropout` must be in \[0, 1\)"),
    (dict(pooling="sum"), r"`pooling` must be one of None, 'avg', 'max'"),
    (dict(activation="relu7"), r"`activation` must be one of"),
    (dict(classifier_activation="softmaxx"), r"`classifier_activation` must be None"),
    (dict(include_top="yes"), r"`include_top` must be a bool"),
    (dict(use_batch_norm=None), r"`use_batch_norm` must be a bool"),
    (dict(batch_norm_momentum=-0.1),
     r"`batch_norm_momentum` must be in \[0, 1\). Received: batch_norm_momentum=-0.1"),
    (dict(batch_norm_momentum=1.0),
     r"`batch_norm_momentum` must be in \[0, 1\). Received: batch_norm_momentum=1.0"),
    (dict(batch_norm_momentum="x"),
     r"`batch_norm_momentum` must be a number. Received: batch_norm_momentum='x'"),
    (dict(kernel_regularizer="l5"), r"`kernel_regularizer` must be None"),
    (dict(min_feature_size=0), r"`min_feature_size` must be > 0"),
]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("kwargs, match", INVALID, ids=[m[3:30] for _, m in INVALID])
def test_invalid_builder_arguments(builder, kwargs, match):
    kwargs = {"input_shape": (8, 8, 1), **kwargs}
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


@pytest.mark.parametrize("builder", [mobilenet_v1, plain_cnn])
@pytest.mark.parametrize("value", [0, 1.5])
def test_invalid_depth_multiplier(builder, value):
    with pytest.raises(ValueError, match=r"`depth_multiplier` must be"):
        builder((8, 8, 1), depth_multiplier=value)


@pytest.mark.parametrize("value, match", [(0.0, r"\(0, 1\]"), (1.5, r"\(0, 1\]")])
def test_invalid_se_ratio(value, match):
    with pytest.raises(ValueError, match=r"`se_ratio` must be in " + match):
        mobilenet_v2((8, 8, 1), se_ratio=value)


@pytest.mark.parametrize(
    "builder, kwargs",
    [
        (mobilenet_v1, dict(num_classes=1, alpha=1e-2, dropout=0.0, min_feature_size=1,
                            depth_multiplier=2, pooling="max", classifier_activation="sigmoid")),
        (mobilenet_v1, dict(num_classes=0, include_top=False, dropout=0.999,
                            batch_norm_momentum=0.0)),
        (mobilenet_v2, dict(num_classes=1, alpha=0.1, se_ratio=1.0, classifier_activation=None,
                            batch_norm_momentum=0.5)),
        (plain_cnn, dict(num_classes=2, alpha=0.05, batch_norm_momentum=0.0)),
        (plain_cnn, dict(num_classes=1, alpha=0.05, kernel_regularizer="l1_l2",
                         use_batch_norm=False, activation=None, classifier_activation=None)),
    ],
)
def test_boundary_builder_arguments_are_accepted(builder, kwargs):
    model = builder((8, 8, 1), **kwargs)
    assert np.all(np.isfinite(model.predict(np.ones((1, 8, 8, 1), "float32"), verbose=0)))
