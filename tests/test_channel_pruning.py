"""Structured channel pruning (`prune_channels`, `channel_pruning_plan`), on both Kerases.

Checked against independent references: the outputs of the original model (ratio 0, and
channels whose weights are exactly zero), the profiler's parameter and MAC counts of the
model built, a `.keras` round trip, and the shapes Keras itself infers when it builds the
new graph.
"""

import numpy as np
import pytest

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.compression import prune_channels
from keras_dnnopt.compression.channel_pruning import channel_pruning_plan
from keras_dnnopt.layers import InvertedResidualBlock, SeparableConvBlock, SqueezeExcite
from keras_dnnopt.models import mobilenet_v1, mobilenet_v2
from keras_dnnopt.profiling import profile

RNG = np.random.default_rng(0)
X = RNG.random((6, 16, 16, 3)).astype("float32")


def randomize_batch_norms(model):
    """Gives every batch norm non-trivial statistics, so that a wrong channel shows."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        for sub in [layer] + list(getattr(layer, "sublayers", []) or []):
            if isinstance(sub, keras.layers.BatchNormalization):
                gamma, beta, mean, var = sub.get_weights()
                sub.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                                 rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def residual_cnn():
    """ResNet-style functional: two residual adds tied across branches, a concatenate, a
    depthwise with multiplier 2, a separable conv, squeeze-and-excitation, and a Flatten ->
    Dense head."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for i in range(2):
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"res{i}_a")(x)
        y = keras.layers.BatchNormalization(name=f"res{i}_bn")(y)
        y = keras.layers.Activation("relu", name=f"res{i}_relu")(y)
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"res{i}_b")(y)
        x = keras.layers.Add(name=f"res{i}_add")([x, y])
    x = SqueezeExcite(name="se")(x)
    d = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(x)
    s = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.Concatenate(name="concat")([d, s])
    x = keras.layers.Conv2D(12, 1, strides=2, activation="relu", name="reduce")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(24, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return randomize_batch_norms(keras.Model(inputs, outputs, name="residual_cnn"))


def sequential_cnn():
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="dense"),
    ], name="sequential_cnn")


def blocks_model():
    """The package's blocks (custom layers, unrolled by the pruner)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = SeparableConvBlock(16, name="sep_block")(x)
    x = InvertedResidualBlock(16, expansion=3, name="inv")(x)  # identity skip inside
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return randomize_batch_norms(keras.Model(inputs, keras.layers.Dense(10, name="head")(x)))


MODELS = {
    "residual_cnn": residual_cnn,
    "sequential_cnn": sequential_cnn,
    "blocks": blocks_model,
    "mobilenet_v1": lambda: randomize_batch_norms(
        mobilenet_v1((16, 16, 3), num_classes=10, alpha=0.25)),
    "mobilenet_v2": lambda: randomize_batch_norms(
        mobilenet_v2((16, 16, 3), num_classes=10, alpha=0.35)),
    "keras_mobilenet_v2": lambda: randomize_batch_norms(keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)),
}


def sample(model):
    shape = tuple(model.inputs[0].shape[1:])
    return RNG.random((4,) + shape).astype("float32")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ratio_zero_gives_the_same_model(name):
    model = MODELS[name]()
    x = sample(model)
    same = prune_channels(model, ratio=0.0)
    assert same.count_params() == model.count_params()
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_the_channels_keeps_shapes_reloads_and_counts_as_predicted(name, tmp_path):
    model = MODELS[name]()
    before = [w.copy() for w in model.get_weights()]
    plan = channel_pruning_plan(model, ratio=0.5)
    pruned = plan.apply()
    x = sample(model)
    out = pruned.predict(x, verbose=0)
    assert out.shape == model.predict(x, verbose=0).shape and np.isfinite(out).all()
    measured = profile(pruned)
    assert plan.params == pruned.count_params() == measured.params
    assert plan.macs == measured.macs
    assert plan.macs_before == profile(model).macs
    assert measured.macs < 0.5 * plan.macs_before
    assert plan.channels and all(new < old for old, new in plan.channels.values())
    # Plain built-in layers only, and a safe-mode round trip.
    assert all(type(layer).__module__.split(".")[0] in ("keras", "tf_keras")
               for layer in pruned.layers)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored.predict(x, verbose=0), out, atol=1e-5)
    # The given model is untouched.
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_filters_are_removed_without_changing_the_outputs():
    model = sequential_cnn()
    removed = {"conv1": [1, 5, 9, 12], "conv2": [0, 3, 7, 15]}
    for name, channels in removed.items():
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., channels] = 0
        bias[channels] = 0
        model.get_layer(name).set_weights([kernel, bias])
    x = sample(model)
    # A quarter of each conv: exactly the zero filters (importance 0); conv2's zeros also
    # remove their 6 x 6 rows of the Dense kernel after Flatten.
    plan = channel_pruning_plan(model, per_layer={"conv1": 0.25, "conv2": 0.25})
    pruned = plan.apply()
    assert plan.channels == {"conv1": (16, 12), "conv2": (16, 12)}
    assert pruned.get_layer("dense").kernel.shape[0] == 6 * 6 * 12
    assert pruned.count_params() < model.count_params()
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_dead_batch_norm_channels_of_a_residual_stage_are_removed_exactly():
    # The stem and both residual branches write the same 16 channels (the adds tie them):
    # channels whose batch norm gamma and beta are 0 and whose branch filters are zero
    # carry nothing, and removing them (criterion bn_gamma) changes no output.
    model = residual_cnn()
    dead = [2, 6, 11, 13]
    gamma, beta, mean, var = model.get_layer("stem_bn").get_weights()
    gamma[dead], beta[dead] = 0, 0
    model.get_layer("stem_bn").set_weights([gamma, beta, mean, var])
    for i in range(2):
        kernel, bias = model.get_layer(f"res{i}_b").get_weights()
        kernel[..., dead], bias[dead] = 0, 0
        model.get_layer(f"res{i}_b").set_weights([kernel, bias])
    plan = channel_pruning_plan(model, per_layer={"stem": 0.25}, criterion="bn_gamma")
    pruned = plan.apply()
    # The squeeze-and-excitation gate multiplies the same channels: its expanding conv
    # loses them too.
    assert plan.channels == {"stem": (16, 12), "res0_b": (16, 12), "res1_b": (16, 12),
                             "se_se_expand": (16, 12)}
    assert {"stem", "res0_b", "res1_b"} <= set(plan.groups["stem"])
    # The depthwise with multiplier 2 and the separable conv read the 12 channels left.
    assert pruned.get_layer("dw2").get_weights()[0].shape[2] == 12
    assert pruned.get_layer("sep").get_weights()[0].shape[2] == 12
    x = sample(model)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_data_keeps_what_constant_channels_gave_the_next_layer():
    # Channels whose batch norm has gamma 0 output the constant relu(beta) > 0: cutting them
    # shifts the 1x1 convolution that reads them; with `data` their mean is folded into
    # its bias (a bias is added: it had none), which is exact for a constant channel.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    gamma, beta, mean, var = model.get_layer("bn1").get_weights()
    gamma[[1, 4]], beta[[1, 4]] = 0.0, 0.5
    model.get_layer("bn1").set_weights([gamma, beta, mean, var])
    data = RNG.random((32, 16, 16, 3)).astype("float32")
    reference = model.predict(data, verbose=0)
    args = dict(per_layer={"conv1": 0.25}, criterion="bn_gamma")
    cut = prune_channels(model, **args)
    kept = prune_channels(model, data=data, **args)
    assert cut.get_layer("conv1").filters == kept.get_layer("conv1").filters == 6
    assert kept.get_layer("conv2").use_bias and not cut.get_layer("conv2").use_bias
    assert np.abs(cut.predict(data, verbose=0) - reference).max() > 1e-3
    np.testing.assert_allclose(kept.predict(data, verbose=0), reference, atol=1e-5)
    # The plan counts the added bias: params and MACs still equal the profiler's.
    plan = channel_pruning_plan(model, data=data, **args)
    assert plan.params == kept.count_params() == profile(kept).params


def test_data_brings_a_pruned_network_closer_to_the_original():
    model = residual_cnn()
    data = RNG.random((64, 16, 16, 3)).astype("float32")
    reference = model.predict(data, verbose=0)
    error = {}
    for name, given in (("cut", None), ("compensated", data)):
        pruned = prune_channels(model, ratio=0.25, data=given)
        error[name] = np.abs(pruned.predict(data, verbose=0) - reference).mean()
    assert error["compensated"] < 0.7 * error["cut"], error


def test_target_macs_is_met_closely_and_round_to_holds():
    model = mobilenet_v2((16, 16, 3), num_classes=10, alpha=0.5)
    full = profile(model).macs
    for target in (0.5, 0.3):
        plan = channel_pruning_plan(model, target_macs=target, round_to=8)
        pruned = plan.apply()
        macs = profile(pruned).macs
        assert 0.99 * target * full <= macs <= target * full, (target, macs / full)
        for old, new in plan.channels.values():
            assert new % 8 == 0 or new == old
    plan = channel_pruning_plan(model, target_macs=int(0.5 * full))
    assert plan.macs <= 0.5 * full


def test_exclude_and_frozen_layers_keep_their_channels():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, name="b")(x)
    x = keras.layers.Reshape((32, 4), name="reshape")(x)  # mixes channels: frozen
    x = keras.layers.Conv1D(8, 3, name="c")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    plan = channel_pruning_plan(model, ratio=0.5, exclude=["a"])
    assert plan.channels == {"c": (8, 4)}  # a excluded, b feeds the Reshape
    assert set(plan.frozen) == {"a", "b", "out"}  # out: the model's output
    pruned = plan.apply()
    x = RNG.random((2, 8, 8, 3)).astype("float32")
    assert pruned.predict(x, verbose=0).shape == (2, 4)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_gamma", "taylor"])
def test_every_criterion_removes_the_least_important_channels(criterion):
    model = sequential_cnn()
    kernel, bias = model.get_layer("conv1").get_weights()
    weak = [0, 4, 8, 12]
    kernel[..., weak] *= 1e-3  # weak filters: small weights, small gradient x weight
    model.get_layer("conv1").set_weights([kernel, bias * 0])
    x = sample(model)
    y = np.arange(len(x)) % 10
    plan = channel_pruning_plan(model, per_layer={"conv1": 0.25}, criterion=criterion,
                                data=(x, y) if criterion == "taylor" else None,
                                loss=keras.losses.SparseCategoricalCrossentropy(
                                    from_logits=True))
    pruned = plan.apply()
    kept_norms = np.abs(pruned.get_layer("conv1").get_weights()[0]).sum(axis=(0, 1, 2))
    assert kept_norms.min() > np.abs(kernel[..., weak]).sum(axis=(0, 1, 2)).max()


def test_pruned_model_exports_and_composes_with_qat(tmp_path):
    from keras_dnnopt.compression import quantize
    from keras_dnnopt.export import export_tflite

    model = blocks_model()
    pruned = prune_channels(model, ratio=0.5, round_to=4)
    assert pruned.count_params() < model.count_params()
    export_tflite(pruned, str(tmp_path / "float.tflite"))
    qat = quantize(pruned)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = sample(model)
    qat.fit(x, np.arange(len(x)) % 10, epochs=1, verbose=0)
    result = export_tflite(qat, str(tmp_path / "int8.tflite"), quantization="int8")
    assert result.size_bytes > 0


def test_bad_arguments_are_refused_and_the_model_untouched():
    model = sequential_cnn()
    before = [w.copy() for w in model.get_weights()]
    cases = [
        (dict(ratio=1.0), r"`ratio` must be a fraction .* \[0, 1\) \(1 would remove every "
                          r"channel of a layer\)\. Received: ratio=1\.0"),
        (dict(ratio=-0.1), r"Received: ratio=-0\.1"),
        (dict(ratio="half"), r"Received: ratio='half'"),
        (dict(criterion="l3"), r"`criterion` must be one of 'l1', 'l2', 'bn_gamma', "
                               r"'taylor'\. Received: criterion='l3'"),
        (dict(round_to=0), r"`round_to` must be a positive int\. Received: round_to=0"),
        (dict(ratio=0.5, target_macs=0.5), r"`ratio` and `target_macs` cannot both"),
        (dict(target_macs=1.5), r"`target_macs` must be an int .* Received: target_macs=1\.5"),
        (dict(target_macs=10), r"`target_macs` \(10 MACs\) is out of reach"),
        (dict(criterion="taylor"), r"`data` is needed for criterion='taylor'"),
        (dict(criterion="taylor", data=X), r"`data` must hold labels for criterion='taylor'"),
        (dict(per_layer={"nope": 0.5}), r"nope"),
        (dict(per_layer={"flatten": 0.5}), r"`per_layer` names 'flatten', which makes no "
                                           r"channels"),
        (dict(exclude=["nope"]), r"nope"),
        (dict(per_layer=[0.5]), r"`per_layer` must be a dict"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            prune_channels(model, **kwargs)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_model_of_the_other_keras_is_refused(other_keras):
    inputs = other_keras.Input((4, 4, 1))
    model = other_keras.Model(inputs, other_keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS"):
        prune_channels(model, ratio=0.5)


# ---------------------------------------------------------------- whole residual blocks


def test_residual_blocks_are_found_ranked_and_removed():
    from keras_dnnopt.compression import remove_blocks, residual_blocks

    model = residual_cnn()
    blocks = residual_blocks(model)
    assert [b.add for b in blocks] and {b.add for b in blocks} == {"res0_add", "res1_add"}
    assert {"res0_a", "res0_bn", "res0_relu", "res0_b"} == set(
        next(b for b in blocks if b.add == "res0_add").layers)
    # Silence one branch: its last conv's weights scaled down; "l1" and "output" rank it
    # first, and removing it barely changes the outputs (it added almost nothing).
    kernel, bias = model.get_layer("res1_b").get_weights()
    model.get_layer("res1_b").set_weights([kernel * 1e-4, bias * 0])
    x = sample(model)
    for criterion, data in (("l1", None), ("output", x)):
        assert residual_blocks(model, criterion=criterion, data=data)[0].add == "res1_add"
    smaller = remove_blocks(model, n=1, criterion="l1")
    assert "res1_b" not in {layer.name for layer in smaller.layers}
    res1 = next(b for b in blocks if b.add == "res1_add")
    assert res1.params == sum(int(np.prod(w.shape)) for name in ("res1_a", "res1_bn", "res1_b")
                              for w in model.get_layer(name).weights)
    assert smaller.count_params() == model.count_params() - res1.params
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-3, rtol=1e-3)
    named = remove_blocks(model, names=["res0_add"])
    assert "res0_a" not in {layer.name for layer in named.layers}


@pytest.mark.parametrize("name", ["mobilenet_v2", "keras_mobilenet_v2", "blocks"])
def test_remove_blocks_on_mobilenets_keeps_a_working_model(name, tmp_path):
    from keras_dnnopt.compression import remove_blocks, residual_blocks

    model = MODELS[name]()
    blocks = residual_blocks(model)
    assert blocks, "an identity-skip block is expected"
    smaller = remove_blocks(model, n=min(2, len(blocks)))
    assert len(residual_blocks(smaller)) == len(blocks) - min(2, len(blocks))
    x = sample(model)
    assert smaller.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape
    assert profile(smaller).macs < profile(model).macs
    path = str(tmp_path / "smaller.keras")
    smaller.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               smaller.predict(x, verbose=0), atol=1e-5)


def identity_plain_cnn():
    """Two plain (skip-free) shape-keeping blocks: `blk1` is exactly the identity on the
    non-negative activations it reads (a 1x1 identity kernel and a ReLU), `blk2` is not."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 1, name="blk1_conv")(x)
    y = keras.layers.ReLU(name="blk1_relu")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="blk2_conv")(y)
    y = keras.layers.BatchNormalization(name="blk2_bn")(y)
    y = keras.layers.ReLU(name="blk2_relu")(y)
    y = keras.layers.Conv2D(6, 1, name="blk3_conv")(y)  # 4 -> 6 channels: not removable
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, outputs, name="plain_cnn")
    model.get_layer("blk1_conv").set_weights([np.eye(4, dtype="float32")[None, None],
                                              np.zeros(4, "float32")])
    return model


def test_plain_blocks_are_found_and_an_identity_block_removed_exactly():
    from keras_dnnopt.compression import removable_blocks, remove_blocks

    model = identity_plain_cnn()
    x = sample(model)
    blocks = removable_blocks(model, criterion="output", data=x)
    assert [(b.name, b.kind) for b in blocks] == [("blk1", "plain"), ("blk2", "plain")]
    assert blocks[0].importance < 1e-6 < blocks[1].importance
    assert set(blocks[0].layers) == {"blk1_conv", "blk1_relu"} and blocks[0].add is None
    assert removable_blocks(model, kind="residual") == []
    before = [w.copy() for w in model.get_weights()]
    smaller = remove_blocks(model, n=1, criterion="output", data=x)
    assert "blk1_conv" not in {layer.name for layer in smaller.layers}
    assert smaller.count_params() == model.count_params() - blocks[0].params
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    both = remove_blocks(model, names=["blk1", "blk2"])  # neighbours removed together
    assert {"blk1_conv", "blk2_conv", "blk2_bn"}.isdisjoint(
        layer.name for layer in both.layers)
    assert both.predict(x, verbose=0).shape == (len(x), 10)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_repeats_removes_mobilenet_v1s_five_512_blocks_the_shallow_mobilenet(tmp_path):
    from keras_dnnopt.compression import removable_blocks, remove_blocks
    from keras_dnnopt.models import mobilenet_v1

    model = mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    blocks = removable_blocks(model, criterion="repeats")
    # Shape-keeping: blocks 3, 5, 7-11 and 13; the five 512-filter blocks first.
    assert sorted(b.name for b in blocks) == sorted(
        ["block3", "block5", "block7", "block8", "block9", "block10", "block11", "block13"])
    assert {b.name for b in blocks[:5]} == {f"block{i}" for i in range(7, 12)}
    assert all(b.kind == "plain" for b in blocks)
    shallow = remove_blocks(model, n=5, criterion="repeats")
    gone = {f"block{i}" for i in range(7, 12)}
    left = {layer.name.split("_")[0] for layer in shallow.layers}
    assert not gone & left and {"block6", "block12", "block13"} <= left
    found = profile(shallow)
    assert found.params == model.count_params() - sum(b.params for b in blocks[:5])
    assert found.macs < profile(model).macs
    x = sample(model)
    path = str(tmp_path / "shallow.keras")
    shallow.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               shallow.predict(x, verbose=0), atol=1e-5)


def test_keras_applications_mobilenet_plain_layers_are_removable():
    from keras_dnnopt.compression import removable_blocks, remove_blocks

    model = keras.applications.MobileNet(input_shape=(32, 32, 3), weights=None, alpha=0.25,
                                         classes=10)
    names = {b.name for b in removable_blocks(model, criterion="repeats")}
    assert {"conv_dw_7", "conv_pw_7", "conv_pw_11"} <= names
    assert "conv_pw_6" not in names  # 128 -> 256 channels
    smaller = remove_blocks(model, names=["conv_dw_8", "conv_pw_8"])
    x = sample(model)
    assert smaller.predict(x, verbose=0).shape == (len(x), 10)
    assert smaller.count_params() < model.count_params()


def test_remove_blocks_bad_arguments():
    from keras_dnnopt.compression import remove_blocks

    model = residual_cnn()
    with pytest.raises(ValueError, match="exactly one of `n`.*Received: n=None, names=None"):
        remove_blocks(model)
    # Two residual blocks and the squeeze-and-excitation block (shape-keeping, plain).
    with pytest.raises(ValueError, match=r"`n` must be an int from 0 to .* 3 .* Received: n=4"):
        remove_blocks(model, n=4)
    with pytest.raises(ValueError, match=r"`n` must be an int from 0 to the number of "
                                         r"removable residual .* 2 .* Received: n=3"):
        remove_blocks(model, n=3, kind="residual")
    with pytest.raises(ValueError, match=r"'fc', not a removable block .* "
                                         r"Removable blocks: se, res"):
        remove_blocks(model, names=["fc"])
    with pytest.raises(ValueError, match=r"`data` is needed for criterion='output'"):
        remove_blocks(model, n=1, criterion="output")
    with pytest.raises(ValueError, match=r"`criterion` must be one of 'output', 'bn_gamma', "
                                         r"'l1', 'repeats'\. Received: criterion='gamma'"):
        remove_blocks(model, n=1, criterion="gamma")
    with pytest.raises(ValueError, match=r"`kind` must be one of 'any', 'residual', 'plain'\."
                                         r" Received: kind='skip'"):
        remove_blocks(model, n=1, kind="skip")
    with pytest.raises(ValueError, match=r"removable plain blocks of 'residual_cnn', 1 \(se\)"):
        remove_blocks(model, n=2, kind="plain")


# ---------------------------------------------------------------- training toward pruning


def test_group_lasso_and_slimming_drive_channels_to_zero():
    from keras_dnnopt.compression import GroupLasso, with_channel_sparsity

    value = GroupLasso(0.5)(np.ones((3, 3, 2, 4), "float32"))
    assert float(value) == pytest.approx(0.5 * 4 * np.sqrt(18), rel=1e-5)
    assert GroupLasso.from_config(GroupLasso(0.5).get_config()).strength == 0.5
    model = residual_cnn()
    sparse = with_channel_sparsity(model, bn_gamma_l1=1e-2, group_lasso=1e-2)
    x = sample(model)
    np.testing.assert_allclose(sparse.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)  # same weights
    assert len(sparse.losses) > 0 and not model.losses
    gamma = lambda m: np.abs(m.get_layer("stem_bn").get_weights()[0]).mean()  # noqa: E731
    before = gamma(sparse)
    sparse.compile(keras.optimizers.SGD(0.5), lambda y, p: 0.0 * tf.reduce_sum(p))
    sparse.fit(x, np.zeros(len(x)), epochs=5, verbose=0)  # the penalty alone trains
    assert gamma(sparse) < before
    with pytest.raises(ValueError, match=r"`bn_gamma_l1` must be a number >= 0 .*Received: "
                                         r"bn_gamma_l1=-1"):
        with_channel_sparsity(model, bn_gamma_l1=-1)
    with pytest.raises(ValueError, match="both 0"):
        with_channel_sparsity(model, bn_gamma_l1=0, group_lasso=0)


def test_iterative_pruning_reaches_the_budget_step_by_step():
    from keras_dnnopt.compression import prune_channels_iteratively

    model = sequential_cnn()
    x = sample(model)
    y = np.arange(len(x)) % 10
    pruned, log = prune_channels_iteratively(model, x, y, target_macs=0.4, steps=2, epochs=1,
                                             verbose=0, validation_data=(x, y))
    full = profile(model).macs
    assert [entry["step"] for entry in log] == [1, 2]
    assert log[0]["macs"] > log[1]["macs"] and profile(pruned).macs <= 0.4 * full
    assert log[1]["macs"] == profile(pruned).macs and 0 <= log[1]["val_accuracy"] <= 1
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 1\. Received: steps=0"):
        prune_channels_iteratively(model, x, y, target_macs=0.4, steps=0)
