"""Tests of keras_dnnopt.layers: activations, the blocks, and the `unroll` protocol."""

import math

import numpy as np
import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.layers import (
    SUPPORTED_ACTIVATIONS,
    ConvBlock,
    InvertedResidualBlock,
    SeparableConvBlock,
    SqueezeExcite,
    get_activation_layer,
)
from keras_dnnopt.layers.activations import apply_activation_layers, get_activation_layers
from keras_dnnopt.layers.base_block import make_divisible
from tests.helpers import assert_config_round_trip, assert_layer_works

# ---- activations --------------------------------------------------------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


_ERF = np.vectorize(math.erf)

NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": _relu6,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.3 * x),
    "hard_swish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "hard_sigmoid": lambda x: _relu6(x + 3.0) / 6.0,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "linear": lambda x: x,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _ERF(x / np.sqrt(2.0))),
}


def test_every_supported_activation_has_a_reference():
    assert set(SUPPORTED_ACTIVATIONS) == set(NUMPY_ACTIVATIONS)


@pytest.mark.parametrize("name", SUPPORTED_ACTIVATIONS)
def test_activation_layer_matches_numpy(name):
    x = np.linspace(-8.0, 8.0, 65, dtype="float32").reshape(1, 65)
    expected = NUMPY_ACTIVATIONS[name](x.astype("float64"))
    layer = get_activation_layer(name)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    # The composed form the blocks use gives the same numbers, from built-in layers only.
    layers = get_activation_layers(name, name="act")
    assert all(type(lay).__module__.split(".")[0] in ("keras", "tf_keras") for lay in layers)
    composed = apply_activation_layers(layers, x)
    np.testing.assert_allclose(np.asarray(composed), expected, rtol=1e-5, atol=1e-5)


def test_linear_and_none_compose_to_no_layer():
    assert get_activation_layers("linear") == []
    assert get_activation_layers(None) == []


def test_hard_swish_is_composed_of_builtin_layers():
    layers = get_activation_layers("hard_swish", name="act")
    assert [type(lay).__name__ for lay in layers] == ["Rescaling", "ReLU", "Multiply"]
    assert [lay.name for lay in layers] == ["act_rescale", "act_clip", "act_multiply"]


@pytest.mark.parametrize("name", ["hard_swish", "hard_sigmoid"])
def test_hard_activation_layer_survives_save_load(name, tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              get_activation_layer(name)])
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("bad", ["softplus_x", "Relu", "", 3])
def test_unknown_activation_lists_supported_names(bad):
    with pytest.raises(ValueError, match=r"Argument `activation` must be one of 'relu'.*'gelu'"):
        get_activation_layer(bad)


# ---- the blocks work as layers --------------------------------------------------------

BLOCKS = [
    (ConvBlock, dict(filters=8, strides=2)),
    (ConvBlock, dict(filters=4, kernel_size=1, activation="hard_swish", dropout=0.2,
                     use_batch_norm=False, padding="valid")),
    (SeparableConvBlock, dict(filters=8)),
    (SeparableConvBlock, dict(filters=6, strides=2, depth_multiplier=2, dropout=0.1,
                              kernel_regularizer=1e-4, activation="leaky_relu",
                              batch_norm_momentum=0.9)),
    (InvertedResidualBlock, dict(filters=4)),  # residual add
    (InvertedResidualBlock, dict(filters=8, expansion=1, strides=2, use_batch_norm=False)),
    (InvertedResidualBlock, dict(filters=4, se_ratio=0.25, dropout=0.2, activation="hard_swish",
                                 kernel_regularizer="l2", batch_norm_momentum=0.9)),
    (SqueezeExcite, dict()),
    (SqueezeExcite, dict(se_ratio=0.5, divisor=1, gate="sigmoid", kernel_regularizer="l1_l2")),
]
INPUT_SHAPE = (8, 8, 4)


def _ids(params):
    return [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(params)]


@pytest.mark.parametrize("cls, kwargs", BLOCKS, ids=_ids(BLOCKS))
def test_block_works_in_models_trains_and_round_trips(cls, kwargs):
    assert_layer_works(lambda: cls(**kwargs), INPUT_SHAPE)


def _randomize(layer, seed=0):
    # Positive values everywhere keep the batch-norm variances valid.
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, size=w.shape).astype("float32")
                       for w in layer.get_weights()])


def _assert_builtin_only(model):
    for layer in model.layers:
        package = type(layer).__module__.split(".")[0]
        assert package in ("keras", "tf_keras"), f"{layer.name} is a {type(layer)}"


@pytest.mark.parametrize("cls, kwargs", BLOCKS, ids=_ids(BLOCKS))
def test_unroll_of_a_new_block_gives_builtin_layers_with_the_same_output(cls, kwargs):
    block = cls(name="blk", **kwargs)
    inputs = keras.Input(INPUT_SHAPE)
    model = keras.Model(inputs, block.unroll(inputs))
    _assert_builtin_only(model)
    assert len(model.layers) - 1 == len(block.sublayers)
    assert all(layer.name.startswith("blk_") for layer in model.layers[1:])
    _randomize(block)
    x = np.random.default_rng(1).normal(size=(2, *INPUT_SHAPE)).astype("float32")
    np.testing.assert_allclose(model(x), block(x), rtol=1e-5, atol=1e-5)
    # The unrolled graph shares the block's weights: no copies.
    assert model.count_params() == block.count_params()


@pytest.mark.parametrize("cls, kwargs", BLOCKS, ids=_ids(BLOCKS))
def test_unroll_of_a_built_block_taken_from_a_sequential_model(cls, kwargs):
    seq = keras.Sequential([keras.Input(INPUT_SHAPE), cls(name="blk", **kwargs),
                            keras.layers.GlobalAveragePooling2D()])
    block = seq.layers[0]
    _randomize(block)
    assert block.built
    inputs = keras.Input(INPUT_SHAPE)
    outputs = block.unroll(inputs)
    _assert_builtin_only(keras.Model(inputs, outputs))
    traced = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(outputs))
    x = np.random.default_rng(2).normal(size=(2, *INPUT_SHAPE)).astype("float32")
    np.testing.assert_allclose(traced(x), seq(x), rtol=1e-5, atol=1e-5)


def _layer_names(block, input_shape=INPUT_SHAPE):
    inputs = keras.Input(input_shape)
    return [layer.name for layer in keras.Model(inputs, block.unroll(inputs)).layers[1:]]


def test_separable_block_sublayer_names():
    assert _layer_names(SeparableConvBlock(8, dropout=0.1, name="block3")) == [
        "block3_depthwise", "block3_depthwise_bn", "block3_depthwise_act",
        "block3_pointwise", "block3_pointwise_bn", "block3_pointwise_act", "block3_dropout",
    ]
    # Without batch norm the convolutions carry the bias instead.
    block = SeparableConvBlock(8, use_batch_norm=False, name="b")
    assert _layer_names(block) == ["b_depthwise", "b_depthwise_act", "b_pointwise",
                                   "b_pointwise_act"]
    assert block.depthwise.use_bias and block.pointwise.use_bias


def test_inverted_residual_sublayers_and_residual_rule():
    names = _layer_names(InvertedResidualBlock(4, se_ratio=0.25, name="b"))
    assert names == [
        "b_expand", "b_expand_bn", "b_expand_act", "b_depthwise", "b_depthwise_bn",
        "b_depthwise_act", "b_se_squeeze", "b_se_reduce", "b_se_act", "b_se_expand",
        "b_se_gate_rescale", "b_se_gate_clip", "b_se_excite", "b_project", "b_project_bn",
        "b_add",
    ]
    # No residual when the stride is 2 or the channels change; no expansion when t == 1.
    assert "c_add" not in _layer_names(InvertedResidualBlock(4, strides=2, name="c"))
    assert "d_add" not in _layer_names(InvertedResidualBlock(8, name="d"))
    assert "e_expand" not in _layer_names(InvertedResidualBlock(4, expansion=1, name="e"))


def test_separable_block_parameters_closed_form():
    m, n, k, dm = 4, 8, 3, 2
    block = SeparableConvBlock(n, kernel_size=k, depth_multiplier=dm)
    block.build((None, 8, 8, m))
    # depthwise k^2*M*dm, its BN 4*M*dm, pointwise M*dm*N, its BN 4*N.
    assert block.count_params() == k * k * m * dm + 4 * m * dm + m * dm * n + 4 * n


def test_inverted_residual_parameters_closed_form():
    c, t, f = 4, 6, 4
    block = InvertedResidualBlock(f, expansion=t, se_ratio=0.25)
    block.build((None, 8, 8, c))
    e = c * t
    s = make_divisible(e * 0.25, 8)
    expected = (c * e + 4 * e) + (9 * e + 4 * e) + (e * s + s + s * e + e) + (e * f + 4 * f)
    assert block.count_params() == expected


def test_squeeze_excite_matches_numpy():
    se = SqueezeExcite(se_ratio=0.5, divisor=1, name="se")
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 6)).astype("float32")
    y = np.asarray(se(x))
    w1, b1 = se.se_reduce.get_weights()
    w2, b2 = se.se_expand.get_weights()
    assert w1.shape == (1, 1, 6, 3)
    s = x.mean(axis=(1, 2))
    s = np.maximum(s @ w1[0, 0] + b1, 0.0)
    gate = np.clip(s @ w2[0, 0] + b2 + 3.0, 0.0, 6.0) / 6.0
    np.testing.assert_allclose(y, x * gate[:, None, None, :], rtol=1e-5, atol=1e-5)


def test_regularizer_losses_closed_form():
    block = SeparableConvBlock(8, kernel_regularizer=1e-3)
    inputs = keras.Input(INPUT_SHAPE)
    model = keras.Model(inputs, block(inputs))
    assert len(model.losses) == 2
    expected = 1e-3 * sum(float(np.sum(np.square(layer.get_weights()[0])))
                          for layer in (block.depthwise, block.pointwise))
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


@pytest.mark.parametrize("regularizer", [None, "l1", "l2", "l1_l2", 1e-4])
def test_regularizer_spellings_round_trip(regularizer):
    block = ConvBlock(4, kernel_regularizer=regularizer)
    assert assert_config_round_trip(block).get_config()["kernel_regularizer"] == regularizer


def test_regularizer_instance_round_trips():
    block = ConvBlock(4, kernel_regularizer=keras.regularizers.L1L2(l1=0.1, l2=0.2))
    clone = assert_config_round_trip(block)
    config = clone._regularizer.get_config()
    np.testing.assert_allclose([config["l1"], config["l2"]], [0.1, 0.2], rtol=1e-6)


BN_BLOCKS = [
    (ConvBlock, dict(filters=4), 1),
    (SeparableConvBlock, dict(filters=4), 2),
    (InvertedResidualBlock, dict(filters=4, se_ratio=0.25), 3),
]


def _batch_norms(block):
    return [layer for layer in block.sublayers
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("momentum", [None, 0.9])
@pytest.mark.parametrize("cls, kwargs, num_bn", BN_BLOCKS,
                         ids=[cls.__name__ for cls, _, _ in BN_BLOCKS])
def test_batch_norm_momentum_reaches_every_batch_norm_and_round_trips(cls, kwargs, num_bn,
                                                                      momentum):
    if momentum is not None:
        kwargs = {**kwargs, "batch_norm_momentum": momentum}
    expected = 0.99 if momentum is None else momentum  # Keras' default by default
    block = cls(**kwargs)
    block.build((None, *INPUT_SHAPE))
    batch_norms = _batch_norms(block)
    assert len(batch_norms) == num_bn
    assert all(bn.momentum == pytest.approx(expected) for bn in batch_norms)
    # The option changes no weight: same count as with Keras' default.
    reference = cls(**{k: v for k, v in kwargs.items() if k != "batch_norm_momentum"})
    reference.build((None, *INPUT_SHAPE))
    assert block.count_params() == reference.count_params()
    clone = assert_config_round_trip(block)
    assert clone.get_config()["batch_norm_momentum"] == pytest.approx(expected)
    clone.build((None, *INPUT_SHAPE))
    assert all(bn.momentum == pytest.approx(expected) for bn in _batch_norms(clone))


def test_batch_norm_momentum_sets_the_moving_statistics_update():
    # Keras: moving = momentum * moving + (1 - momentum) * batch, from moving_mean = 0.
    block = ConvBlock(4, kernel_size=1, batch_norm_momentum=0.25, name="b")
    x = np.random.default_rng(4).normal(1.0, 1.0, size=(8, *INPUT_SHAPE)).astype("float32")
    block(x, training=True)
    batch_mean = np.asarray(block.conv(x)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(block.bn.moving_mean), 0.75 * batch_mean,
                               rtol=1e-4, atol=1e-5)


def test_squeeze_excite_has_no_batch_norm_momentum_in_its_config():
    assert "batch_norm_momentum" not in SqueezeExcite().get_config()


def test_build_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, height, width"):
        ConvBlock(4).build((None, 8, 4))


# ---- argument validation: both sides of each boundary ---------------------------------

INVALID = [
    (ConvBlock, dict(filters=0), r"`filters` must be > 0. Received: filters=0"),
    (ConvBlock, dict(filters=2.5), r"`filters` must be an integer"),
    (ConvBlock, dict(filters=4, kernel_size=0), r"`kernel_size` must be > 0"),
    (ConvBlock, dict(filters=4, strides=3), r"`strides` must be 1 or 2. Received: strides=3"),
    (ConvBlock, dict(filters=4, strides=True), r"`strides` must be 1 or 2"),
    (ConvBlock, dict(filters=4, padding="causal"), r"`padding` must be one of 'same', 'valid'"),
    (ConvBlock, dict(filters=4, activation="swish2"), r"`activation` must be one of"),
    (ConvBlock, dict(filters=4, use_batch_norm=1), r"`use_batch_norm` must be a bool"),
    (ConvBlock, dict(filters=4, batch_norm_momentum=-0.1),
     r"`batch_norm_momentum` must be in \[0, 1\). Received: batch_norm_momentum=-0.1"),
    (SeparableConvBlock, dict(filters=4, batch_norm_momentum=1.0),
     r"`batch_norm_momentum` must be in \[0, 1\). Received: batch_norm_momentum=1.0"),
    (InvertedResidualBlock, dict(filters=4, batch_norm_momentum="x"),
     r"`batch_norm_momentum` must be a number. Received: batch_norm_momentum='x'"),
    (InvertedResidualBlock, dict(filters=4, batch_norm_momentum=1.0),
     r"`batch_norm_momentum` must be in \[0, 1\)"),
    (SeparableConvBlock, dict(filters=4, dropout=1.0), r"`dropout` must be in \[0, 1\)"),
    (SeparableConvBlock, dict(filters=4, dropout=-0.1), r"`dropout` must be in \[0, 1\)"),
    (SeparableConvBlock, dict(filters=4, depth_multiplier=0), r"`depth_multiplier` must be > 0"),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer="l3"),
     r"`kernel_regularizer` must be None, one of 'l1', 'l2', 'l1_l2'"),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer=0.0),
     r"`kernel_regularizer` must be > 0"),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer=-1e-4),
     r"`kernel_regularizer` must be > 0"),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer=object()),
     r"`kernel_regularizer` must be None"),
    (InvertedResidualBlock, dict(filters=-1), r"`filters` must be > 0"),
    (InvertedResidualBlock, dict(filters=4, expansion=0), r"`expansion` must be > 0"),
    (InvertedResidualBlock, dict(filters=4, se_ratio=0.0), r"`se_ratio` must be in \(0, 1\]"),
    (InvertedResidualBlock, dict(filters=4, se_ratio=1.01), r"`se_ratio` must be in \(0, 1\]"),
    (InvertedResidualBlock, dict(filters=4, se_gate="gate"), r"`se_gate` must be one of"),
    (SqueezeExcite, dict(se_ratio=0), r"`se_ratio` must be in \(0, 1\]"),
    (SqueezeExcite, dict(filters=0), r"`filters` must be > 0"),
    (SqueezeExcite, dict(divisor=0), r"`divisor` must be > 0"),
    (SqueezeExcite, dict(gate="nope"), r"`gate` must be one of"),
]

VALID_BOUNDARIES = [
    (ConvBlock, dict(filters=1, kernel_size=1, strides=2, padding="valid")),
    (ConvBlock, dict(filters=4, activation=None)),
    (ConvBlock, dict(filters=4, batch_norm_momentum=0.0)),
    (SeparableConvBlock, dict(filters=4, batch_norm_momentum=0.5)),
    (InvertedResidualBlock, dict(filters=4, batch_norm_momentum=0.0)),
    (SeparableConvBlock, dict(filters=4, dropout=0.0, depth_multiplier=1)),
    (SeparableConvBlock, dict(filters=4, dropout=0.999)),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer=1e-12)),
    (SeparableConvBlock, dict(filters=4, kernel_regularizer=keras.regularizers.L2(1e-4))),
    (InvertedResidualBlock, dict(filters=4, expansion=1, se_ratio=1.0)),
    (InvertedResidualBlock, dict(filters=4, se_ratio=1e-3)),
    (SqueezeExcite, dict(se_ratio=1.0, filters=1, divisor=1)),
]


@pytest.mark.parametrize("cls, kwargs, match", INVALID,
                         ids=[f"{c.__name__}-{m[:20]}" for c, _, m in INVALID])
def test_invalid_arguments_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("cls, kwargs", VALID_BOUNDARIES, ids=_ids(VALID_BOUNDARIES))
def test_boundary_arguments_are_accepted(cls, kwargs):
    block = cls(**kwargs)
    x = np.ones((1, *INPUT_SHAPE), "float32")
    assert np.all(np.isfinite(np.asarray(block(x))))
