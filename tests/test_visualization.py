"""Tests of keras_dnnopt.visualization, on the Keras in use (the suite runs once per Keras).

The explanations are checked on the numbers behind the pictures: on a model trained to
find a bright patch, the Grad-CAM and saliency maps peak over the patch; on models with
a global-average-pooling + linear head, Grad-CAM equals the closed form CAM
`relu(sum_k w_kc A_k)` (Zhou et al.), and on a linear model the saliency map equals the
weights. The plots are checked on their data: line values against the history or a NumPy
closed form of the schedule, the confusion-matrix image against scikit-learn, the bars
against the sparsities, and the saved file against the PNG signature.
"""

import math
import os
import re
import sys
import types
import warnings

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.callbacks import LearningRateMonitor, LRFinder
from keras_dnnopt.layers import ConvBlock, InvertedResidualBlock, SeparableConvBlock
from keras_dnnopt.models import mobilenet_v1
from keras_dnnopt.visualization import (
    find_last_conv_layer,
    grad_cam,
    overlay_heatmap,
    plot_confusion_matrix,
    plot_history,
    plot_lr_finder,
    plot_schedule,
    plot_sparsity,
    saliency_map,
)

matplotlib = pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- helpers


def patch_data(n, seed):
    """16x16x1 noise in [0, 0.5]; class 1 images also hold a bright (1.0) 3x3 patch at a
    random place. Returns the images, labels and the patch corners."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.5, size=(n, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, size=n)
    corners = rng.integers(0, 14, size=(n, 2))
    for i in np.flatnonzero(y):
        row, col = corners[i]
        x[i, row:row + 3, col:col + 3, 0] = 1.0
    return x, y, corners


def patch_mask(corner):
    mask = np.zeros((16, 16), dtype=bool)
    mask[corner[0]:corner[0] + 3, corner[1]:corner[1] + 3] = True
    return mask


@pytest.fixture(scope="module")
def patch_model():
    """A small CNN (logits output) trained until it tells patch images from noise."""
    keras.utils.set_random_seed(0)
    x, y, _ = patch_data(512, seed=0)
    model = keras.Sequential([
        keras.Input(shape=(16, 16, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(2, name="logits"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def patch_test_set(patch_model):
    x, y, corners = patch_data(64, seed=1)
    accuracy = np.mean(np.argmax(patch_model.predict(x, verbose=0), axis=-1) == y)
    assert accuracy >= 0.95, f"the patch model did not learn (test accuracy {accuracy})"
    positives = np.flatnonzero(y == 1)
    return x[positives], corners[positives]


def gap_linear_model(feature_layers, input_shape=(12, 12, 3), num_classes=4):
    """`feature_layers` -> global average pooling -> Dense (logits)."""
    return keras.Sequential([keras.Input(shape=input_shape), *feature_layers,
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, name="head")])


def cam_reference(features, dense_kernel, class_index):
    """CAM (Zhou et al. 2016) in NumPy: `relu(sum_k w_kc A_k)`, divided by its max. With
    a GAP + linear head, Grad-CAM's `alpha_k = w_kc / (h * w)` makes them equal."""
    cam = np.maximum(np.einsum("hwk,k->hw", features, dense_kernel[:, class_index]), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def feature_model(model, layer):
    return keras.Model(model.inputs, layer.output)


def is_png(path):
    with open(path, "rb") as stream:
        return stream.read(8) == PNG_SIGNATURE


# --------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_peaks_over_the_bright_patch(patch_model, patch_test_set):
    images, corners = patch_test_set
    heatmaps = grad_cam(patch_model, images, class_index=1)
    assert heatmaps.shape == (len(images), 16, 16)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0
    np.testing.assert_allclose(heatmaps.max(axis=(1, 2)), 1.0, rtol=1e-6)
    for heatmap, corner in zip(heatmaps, corners, strict=True):
        mask = patch_mask(corner)
        assert mask[np.unravel_index(np.argmax(heatmap), heatmap.shape)]
        assert heatmap[mask].mean() > 5.0 * heatmap[~mask].mean()


def test_saliency_peaks_over_the_bright_patch(patch_model, patch_test_set):
    images, corners = patch_test_set
    maps = saliency_map(patch_model, images, class_index=1)
    assert maps.shape == (len(images), 16, 16)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, rtol=1e-6)
    inside, ratios = [], []
    for saliency, corner in zip(maps, corners, strict=True):
        mask = patch_mask(corner)
        inside.append(mask[np.unravel_index(np.argmax(saliency), saliency.shape)])
        ratios.append(saliency[mask].mean() / saliency[~mask].mean())
    assert np.mean(inside) >= 0.9
    assert np.median(ratios) > 3.0


def test_grad_cam_defaults_to_the_predicted_class(patch_model, patch_test_set):
    images, _ = patch_test_set
    predicted = np.argmax(patch_model.predict(images[:4], verbose=0), axis=-1)
    np.testing.assert_allclose(grad_cam(patch_model, images[:4]),
                               grad_cam(patch_model, images[:4], class_index=list(predicted)))
    single = grad_cam(patch_model, images[0])  # one image -> one (h, w) map
    assert single.shape == (16, 16)
    np.testing.assert_allclose(single, grad_cam(patch_model, images[:1])[0], atol=1e-6)


def test_grad_cam_equals_cam_closed_form(rng):
    model = gap_linear_model([keras.layers.Conv2D(6, 3, padding="same", activation="relu",
                                                  name="features")])
    images = rng.normal(size=(3, 12, 12, 3)).astype("float32")
    features = feature_model(model, model.get_layer("features")).predict(images, verbose=0)
    kernel = model.get_layer("head").get_weights()[0]
    for class_index in (0, 3):
        heatmaps = grad_cam(model, images, class_index=class_index)
        for heatmap, feature in zip(heatmaps, features, strict=True):
            np.testing.assert_allclose(heatmap, cam_reference(feature, kernel, class_index),
                                       atol=1e-5)


def test_grad_cam_resizes_to_the_input(rng):
    model = gap_linear_model([keras.layers.Conv2D(4, 3, strides=2, padding="same",
                                                  activation="relu", name="features")])
    image = rng.normal(size=(12, 12, 3)).astype("float32")
    small = grad_cam(model, image, class_index=1, resize=False)
    assert small.shape == (6, 6)
    feature = feature_model(model, model.get_layer("features")).predict(image[None],
                                                                          verbose=0)[0]
    kernel = model.get_layer("head").get_weights()[0]
    np.testing.assert_allclose(small, cam_reference(feature, kernel, 1), atol=1e-5)
    large = grad_cam(model, image, class_index=1)
    assert large.shape == (12, 12)
    assert large.min() >= 0.0 and math.isclose(large.max(), 1.0, rel_tol=1e-6)
    # bilinear upsampling by 2: the peak stays in the 2x2 cell of the small map's peak
    # (or next to it)
    peak_small = np.array(np.unravel_index(np.argmax(small), small.shape))
    peak_large = np.array(np.unravel_index(np.argmax(large), large.shape))
    assert np.all(np.abs(peak_large // 2 - peak_small) <= 1)


def test_find_last_conv_layer_in_a_mobilenet():
    model = mobilenet_v1((16, 16, 1), num_classes=3, alpha=0.25, dropout=0.0,
                         classifier_activation=None)
    layer = find_last_conv_layer(model)
    pooling = next(lay for lay in model.layers
                   if isinstance(lay, keras.layers.GlobalAveragePooling2D))
    # the reference: the layer feeding the global pooling, the last block's activation
    pooled_input = pooling.input
    assert layer.output is pooled_input or layer.output.name == pooled_input.name
    assert layer.name.startswith("block13")
    heatmap = grad_cam(model, np.random.default_rng(0).normal(size=(16, 16, 1)))
    assert heatmap.shape == (16, 16)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_grad_cam_on_package_blocks_used_as_layers(rng):
    block = SeparableConvBlock(5, name="sep")
    model = gap_linear_model([ConvBlock(4, 3, name="stem"), block], input_shape=(8, 8, 3),
                             num_classes=3)
    assert find_last_conv_layer(model) is block
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    features = feature_model(model, block).predict(images, verbose=0)
    kernel = model.get_layer("head").get_weights()[0]
    heatmaps = grad_cam(model, images, class_index=2)
    for heatmap, feature in zip(heatmaps, features, strict=True):
        np.testing.assert_allclose(heatmap, cam_reference(feature, kernel, 2), atol=1e-5)


def nested_backbone():
    inputs = keras.Input(shape=(10, 10, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="inner_a")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="inner_b")(x)
    return keras.Model(inputs, x, name="backbone")


@pytest.mark.parametrize("outer", ["sequential", "functional"])
def test_grad_cam_inside_a_nested_model(outer, rng):
    backbone = nested_backbone()
    head = keras.layers.Dense(3, name="head")
    if outer == "sequential":
        model = keras.Sequential([keras.Input(shape=(10, 10, 2)), backbone,
                                  keras.layers.GlobalAveragePooling2D(), head])
    else:
        inputs = keras.Input(shape=(10, 10, 2))
        model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(
            backbone(inputs))))
    assert find_last_conv_layer(model) is backbone.get_layer("inner_b")
    images = rng.normal(size=(2, 10, 10, 2)).astype("float32")
    features = backbone.predict(images, verbose=0)
    kernel = head.get_weights()[0]
    default = grad_cam(model, images, class_index=1)
    for heatmap, feature in zip(default, features, strict=True):
        np.testing.assert_allclose(heatmap, cam_reference(feature, kernel, 1), atol=1e-5)
    # naming the nested model itself (a top-level layer) gives the same maps
    np.testing.assert_allclose(grad_cam(model, images, class_index=1, layer_name="backbone"),
                               default, atol=1e-5)
    # a layer deep inside: against a hand-written tape over the same computation
    inner_a = backbone.get_layer("inner_a")
    inner_b = backbone.get_layer("inner_b")
    pool = keras.layers.GlobalAveragePooling2D()
    with tf.GradientTape() as tape:
        a = inner_a(tf.constant(images))
        tape.watch(a)
        score = head(pool(inner_b(a)))[:, 1]
    weights = tf.reduce_mean(tape.gradient(score, a), axis=(1, 2))
    reference = np.maximum(np.einsum("nhwk,nk->nhw", a.numpy(), weights.numpy()), 0.0)
    reference /= reference.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(grad_cam(model, images, class_index=1, layer_name="inner_a"),
                               reference, atol=1e-5)
    # the hook is removed after use
    assert "call" not in vars(inner_a)


@pytest.mark.parametrize("explain", [grad_cam, saliency_map])
def test_a_saturated_softmax_is_reported(explain):
    """Logits of +-1800: the softmax gives exactly [1, 0] in float32, so the gradient of
    the probability is 0 everywhere; the same model with logits explains fine."""
    def model_with(activation):
        constant = keras.initializers.Constant
        return keras.Sequential([
            keras.Input(shape=(6, 6, 1)),
            keras.layers.Conv2D(2, 3, kernel_initializer=constant(1.0)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation=activation, bias_initializer="zeros",
                               kernel_initializer=constant([[100.0, -100.0], [100.0, -100.0]])),
        ])
    images = np.ones((6, 6, 1), "float32")
    with pytest.warns(UserWarning, match=r"gradient is 0 everywhere for image\(s\) \[0\].*"
                                         "logits"):
        flat = explain(model_with("softmax"), images, class_index=0)
    assert np.all(flat == 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert explain(model_with(None), images, class_index=0).max() == 1.0


# --------------------------------------------------------------------------- saliency


def test_saliency_of_a_linear_model_is_its_weights(rng):
    model = keras.Sequential([keras.Input(shape=(5, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, name="head")])
    image = rng.normal(size=(5, 4, 3)).astype("float32")
    kernel = model.get_layer("head").get_weights()[0]  # (60, 3): d y_c / d x = W[:, c]
    expected = np.abs(kernel[:, 2].reshape(5, 4, 3)).max(axis=-1)
    raw = saliency_map(model, image, class_index=2, normalize=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-5)
    np.testing.assert_allclose(saliency_map(model, image, class_index=2),
                               expected / expected.max(), rtol=1e-5)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_model():
    return gap_linear_model([keras.layers.Conv2D(2, 3, padding="same", name="features")],
                            input_shape=(6, 6, 1), num_classes=3)


@pytest.mark.parametrize("explain", [grad_cam, saliency_map])
def test_images_of_the_wrong_rank(explain, small_model):
    for shape in [(6, 6), (1, 1, 6, 6, 1), (6,)]:
        with pytest.raises(ValueError, match=r"Argument `images` must be one image.*"
                                             rf"Received: images.shape={re.escape(str(shape))}"):
            explain(small_model, np.zeros(shape, "float32"))
    assert explain(small_model, np.zeros((6, 6, 1), "float32")).shape == (6, 6)


@pytest.mark.parametrize("explain", [grad_cam, saliency_map])
def test_images_of_the_wrong_size(explain, small_model):
    with pytest.raises(ValueError, match=r"must match the model's input shape \(6, 6, 1\)"):
        explain(small_model, np.zeros((2, 7, 6, 1), "float32"))
    assert explain(small_model, np.ones((2, 6, 6, 1), "float32")).shape == (2, 6, 6)


def test_layer_name_that_does_not_exist(small_model):
    with pytest.raises(ValueError, match=r"Argument `layer_name` must name a layer.*"
                                         r"'features'.*Received: layer_name='nope'"):
        grad_cam(small_model, np.zeros((6, 6, 1)), layer_name="nope")
    with pytest.raises(ValueError, match=r"4-D output.*layer_name='head'"):
        grad_cam(small_model, np.zeros((6, 6, 1)), layer_name="head")
    assert grad_cam(small_model, np.zeros((6, 6, 1)), layer_name="features").shape == (6, 6)


@pytest.mark.parametrize("explain", [grad_cam, saliency_map])
def test_class_index_out_of_range(explain, small_model):
    images = np.ones((2, 6, 6, 1), "float32")
    for bad in (3, -1):
        with pytest.raises(ValueError, match=r"`class_index` must be in \[0, 3\).*"
                                             rf"class_index={bad}"):
            explain(small_model, images, class_index=bad)
    for bad in ([0, 1, 2], 1.0, True):
        with pytest.raises(ValueError, match="Argument `class_index`"):
            explain(small_model, images, class_index=bad)
    for good in (0, 2, [2, 0]):
        assert explain(small_model, images, class_index=good).shape == (2, 6, 6)


@pytest.mark.parametrize("explain", [grad_cam, saliency_map])
def test_model_of_the_other_keras(explain, other_keras):
    model = other_keras.Sequential([other_keras.Input(shape=(6, 6, 1)),
                                    other_keras.layers.Conv2D(2, 3),
                                    other_keras.layers.GlobalAveragePooling2D(),
                                    other_keras.layers.Dense(2)])
    other = "Keras 3" if USING_TF_KERAS else "tf_keras"
    with pytest.raises(TypeError, match=rf"Argument `model` is a model of {other}.*"
                                        "TF_USE_LEGACY_KERAS"):
        explain(model, np.zeros((6, 6, 1)))
    with pytest.raises(TypeError, match="Argument `model` must be a"):
        explain("model", np.zeros((6, 6, 1)))


def test_models_grad_cam_cannot_explain():
    dense_only = keras.Sequential([keras.Input(shape=(6, 6, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="No layer of the model has a 4-D output"):
        find_last_conv_layer(dense_only)
    with pytest.raises(ValueError, match="No layer of the model has a 4-D output"):
        grad_cam(dense_only, np.zeros((6, 6, 1)))
    vectors = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"input is a batch of images.*\(None, 6\)"):
        grad_cam(vectors, np.zeros((2, 6)))
    inputs = keras.Input(shape=(6, 6, 1))
    features = keras.layers.Conv2D(2, 3)(inputs)
    two_outputs = keras.Model(inputs, [keras.layers.Dense(2)(keras.layers.Flatten()(features)),
                                       keras.layers.Dense(3)(keras.layers.Flatten()(features))])
    with pytest.raises(ValueError, match="explains models with one output"):
        grad_cam(two_outputs, np.zeros((6, 6, 1)))


# --------------------------------------------------------------------------- overlay


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3)])
def test_overlay_heatmap_blends_the_colormap(shape, rng):
    image = rng.uniform(0.0, 16.0, size=shape)  # any range: rescaled to [0, 1]
    heatmap = rng.uniform(size=(6, 5))
    picture = overlay_heatmap(image, heatmap, alpha=0.3, colormap="inferno")
    scaled = (image - image.min()) / (image.max() - image.min())
    rgb = np.repeat(scaled.reshape(6, 5, -1), 3 // scaled.reshape(6, 5, -1).shape[-1], -1)
    colours = matplotlib.colormaps["inferno"](heatmap)[..., :3]
    assert picture.shape == (6, 5, 3) and picture.dtype == np.float32
    np.testing.assert_allclose(picture, 0.7 * rgb + 0.3 * colours, atol=1e-6)


def test_overlay_resizes_the_heatmap_and_checks_arguments(rng):
    image = rng.uniform(size=(8, 8))
    small = np.zeros((4, 4))
    small[0, 0] = 1.0
    picture = overlay_heatmap(image, small, alpha=1.0, colormap="gray")
    assert picture.shape == (8, 8, 3)
    assert picture[0, 0, 0] > 0.5 and picture[7, 7, 0] == 0.0  # hot corner stays there
    np.testing.assert_allclose(overlay_heatmap(image, np.zeros((8, 8)), alpha=0.0),
                               np.repeat((image - image.min())[..., None]
                                         / (image.max() - image.min()), 3, -1), atol=1e-6)
    with pytest.raises(ValueError, match=r"Argument `image` must be one image.*"
                                         r"image.shape=\(2, 8, 8, 1\)"):
        overlay_heatmap(np.zeros((2, 8, 8, 1)), small)
    with pytest.raises(ValueError, match=r"Argument `heatmap` must hold values in \[0, 1\]"):
        overlay_heatmap(image, small * 2.0)
    with pytest.raises(ValueError, match=r"Argument `heatmap` must be one map"):
        overlay_heatmap(image, np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"Argument `alpha` must be in \[0.0, 1.0\]"):
        overlay_heatmap(image, small, alpha=1.5)
    with pytest.raises(ValueError, match="Argument `colormap`.*colormap='no-such-map'"):
        overlay_heatmap(image, small, colormap="no-such-map")


def test_grad_cam_overlay_end_to_end(patch_model, patch_test_set):
    images, corners = patch_test_set
    heatmap = grad_cam(patch_model, images[0], class_index=1)
    picture = overlay_heatmap(images[0], heatmap, alpha=1.0, colormap="gray")
    mask = patch_mask(corners[0])
    # gray colormap and alpha=1: the red channel is the heatmap itself
    np.testing.assert_allclose(picture[..., 0], heatmap, atol=1e-2)
    assert picture[mask].mean() > picture[~mask].mean()


# --------------------------------------------------------------------------- plots


def lines_by_label(figure):
    return {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}


def test_plot_history_draws_the_history_values(tmp_path):
    x, y, _ = patch_data(16, seed=2)
    model = keras.Sequential([keras.Input(shape=(16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, validation_split=0.25, epochs=3, batch_size=4, verbose=0,
                        callbacks=[LearningRateMonitor()])
    path = tmp_path / "history.png"
    figure = plot_history(history, save_path=path)
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == ["loss", "accuracy", "learning rate"]
    lines = lines_by_label(figure)
    assert set(lines) == set(history.history)
    for key, values in history.history.items():
        np.testing.assert_allclose(lines[key].get_ydata(), values)
        np.testing.assert_array_equal(lines[key].get_xdata(), [1, 2, 3])
    assert is_png(path)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100
    # the plain dict works the same, and `metrics` picks panels
    only_loss = plot_history(history.history, metrics="loss")
    assert [ax.get_title() for ax in only_loss.axes if ax.get_visible()] == ["loss"]
    assert set(lines_by_label(only_loss)) == {"loss", "val_loss"}


def test_plot_history_bad_input():
    with pytest.raises(ValueError, match=r"Argument `metrics` must name.*'loss'.*"
                                         r"metrics=\['f1'\]"):
        plot_history({"loss": [1.0, 0.5]}, metrics=["f1"])
    with pytest.raises(TypeError, match="Argument `history` must be a `keras.callbacks.History`"):
        plot_history([1.0, 0.5])
    with pytest.raises(ValueError, match="Argument `history` is empty"):
        plot_history({})
    with pytest.raises(ValueError, match="lists of numbers"):
        plot_history({"loss": ["a"]})
    lr_log = plot_history({"loss": [1.0, 0.5, 0.2], "lr": [1.0, 0.1, 1e-3]})
    assert lr_log.axes[1].get_yscale() == "log"


def numpy_cosine_decay(step, initial, decay_steps, alpha=0.0):
    fraction = min(step, decay_steps) / decay_steps
    return initial * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)


def test_plot_schedule_draws_the_schedule_values(tmp_path):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=40, alpha=0.1)
    figure = plot_schedule(schedule, 50, save_path=tmp_path / "schedule.png")
    (line,) = figure.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(50))
    np.testing.assert_allclose(line.get_ydata(),
                               [numpy_cosine_decay(s, 0.1, 40, 0.1) for s in range(50)],
                               rtol=1e-5)
    assert line.get_label() == "CosineDecay"
    assert is_png(tmp_path / "schedule.png")
    # piecewise constant and a Python-branching callable (called one step at a time)
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay([3, 6], [1.0, 0.5, 0.1])
    branching = lambda step: 0.2 if int(step) < 4 else 0.05
    figure = plot_schedule(piecewise, 9, label="piecewise")
    plot_schedule(branching, 9, label="branching", ax=figure.axes[0])
    lines = lines_by_label(figure)
    np.testing.assert_allclose(lines["piecewise"].get_ydata(),
                               [1.0] * 4 + [0.5] * 3 + [0.1] * 2, rtol=1e-6)
    np.testing.assert_allclose(lines["branching"].get_ydata(), [0.2] * 4 + [0.05] * 5)


def test_plot_schedule_bad_input():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"Argument `steps` must be.*steps={bad}"):
            plot_schedule(schedule, bad)
    assert len(plot_schedule(schedule, 1).axes[0].get_lines()[0].get_ydata()) == 1
    with pytest.raises(TypeError, match="Argument `schedule` must be"):
        plot_schedule(0.1, 10)
    with pytest.raises(ValueError, match="non-finite learning rate at step 0"):
        plot_schedule(lambda step: float("nan"), 3)


def test_plot_confusion_matrix_from_labels_matches_sklearn(tmp_path, rng):
    metrics = pytest.importorskip("sklearn.metrics")
    y_true = rng.integers(0, 4, size=60)
    y_pred = np.where(rng.uniform(size=60) < 0.7, y_true, rng.integers(0, 4, size=60))
    names = ["zero", "one", "two", "three"]
    figure = plot_confusion_matrix(y_true=y_true, y_pred=y_pred, class_names=names,
                                   save_path=tmp_path / "cm.png")
    ax = figure.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(),
                                  metrics.confusion_matrix(y_true, y_pred))
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert len(ax.texts) == 16
    assert is_png(tmp_path / "cm.png")
    for mode in ("true", "pred", "all"):
        figure = plot_confusion_matrix(y_true=y_true, y_pred=y_pred, normalize=mode)
        np.testing.assert_allclose(figure.axes[0].images[0].get_array(),
                                   metrics.confusion_matrix(y_true, y_pred, normalize=mode))
    # scores instead of labels: their argmax
    scores = np.eye(4)[y_pred] + 0.01
    figure = plot_confusion_matrix(y_true=y_true, y_pred=scores, normalize=True)
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(),
                               metrics.confusion_matrix(y_true, y_pred, normalize="true"))


def test_plot_confusion_matrix_from_a_matrix_and_bad_input():
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    figure = plot_confusion_matrix(matrix, normalize="true")
    expected = np.array([[5 / 6, 1 / 6, 0], [2 / 6, 3 / 6, 1 / 6], [0, 0, 0]])
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), expected)
    report = types.SimpleNamespace(confusion_matrix=matrix)  # an evaluation report
    np.testing.assert_array_equal(plot_confusion_matrix(report).axes[0].images[0].get_array(),
                                  matrix)
    with pytest.raises(ValueError, match="Pass either `matrix`, or both `y_true` and `y_pred`"):
        plot_confusion_matrix()
    with pytest.raises(ValueError, match="Pass either `matrix`, or both"):
        plot_confusion_matrix(matrix, y_true=[0], y_pred=[0])
    with pytest.raises(ValueError, match="Pass either `matrix`, or both"):
        plot_confusion_matrix(y_true=[0, 1])
    with pytest.raises(ValueError, match=r"square.*matrix.shape=\(2, 3\)"):
        plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"one name per class \(3\)"):
        plot_confusion_matrix(matrix, class_names=["a", "b"])
    with pytest.raises(ValueError, match="Argument `normalize` must be one of"):
        plot_confusion_matrix(matrix, normalize="rows")
    with pytest.raises(ValueError, match="same length"):
        plot_confusion_matrix(y_true=[0, 1, 2], y_pred=[0, 1])
    with pytest.raises(ValueError, match="Argument `y_true` must hold class indices"):
        plot_confusion_matrix(y_true=[0, -1], y_pred=[0, 1])
    with pytest.raises(ValueError, match=r"`num_classes` must exceed every label \(2\)"):
        plot_confusion_matrix(y_true=[0, 2], y_pred=[0, 1], num_classes=2)
    figure = plot_confusion_matrix(y_true=[0, 1], y_pred=[0, 1], num_classes=3)
    assert figure.axes[0].images[0].get_array().shape == (3, 3)


class FakeSparsityReport:
    """Duck-types `keras_dnnopt.compression.sparsity_report(model)`'s result."""

    def __init__(self, rows, overall):
        self.layers = [types.SimpleNamespace(name=n, sparsity=s) for n, s in rows]
        self.overall_sparsity = overall


def test_plot_sparsity_draws_one_bar_per_layer(tmp_path):
    rows = [("conv_a", 0.5), ("conv_b", 0.75), ("dense", 0.0)]
    for report in (dict(rows), FakeSparsityReport(rows, 0.6),
                   types.SimpleNamespace(to_dict=lambda: {
                       "layers": [{"name": n, "sparsity": s} for n, s in rows]}),
                   rows):
        figure = plot_sparsity(report, save_path=tmp_path / "sparsity.png")
        ax = figure.axes[0]
        np.testing.assert_allclose([bar.get_width() for bar in ax.patches],
                                   [s for _, s in rows])
        assert [t.get_text() for t in ax.get_yticklabels()] == [n for n, _ in rows]
        assert is_png(tmp_path / "sparsity.png")
    overall_lines = plot_sparsity(FakeSparsityReport(rows, 0.6)).axes[0].get_lines()
    assert [line.get_xdata()[0] for line in overall_lines] == [0.6]


def test_plot_sparsity_of_a_sparsity_report():
    compression = pytest.importorskip("keras_dnnopt.compression")
    model = keras.Sequential([keras.Input(shape=(6, 6, 4)),
                              InvertedResidualBlock(4, expansion=2, name="ir"),
                              SeparableConvBlock(4, name="sep"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, name="head")])
    kernel, bias = model.get_layer("head").get_weights()
    kernel.ravel()[: kernel.size // 4] = 0.0  # a quarter of the head's kernel
    model.get_layer("head").set_weights([kernel, bias])
    report = compression.sparsity_report(model)
    figure = plot_sparsity(report)
    ax = figure.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    np.testing.assert_allclose(widths, [row.sparsity for row in report.layers])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "head" and math.isclose(widths[-1], 0.25)
    # the inverted residual block's two kernels: one bar each, `layer/weight`
    assert labels == ["ir/ir_expand/kernel", "ir/ir_project/kernel", "sep", "head"]
    (overall,) = ax.get_lines()
    assert math.isclose(overall.get_xdata()[0], report.overall)


def test_plot_confusion_matrix_of_an_evaluation_report():
    evaluation = pytest.importorskip("keras_dnnopt.evaluation")
    matrix = np.array([[3, 1], [0, 4]])
    report = evaluation.EvaluationReport("classification", 8, {"accuracy": 0.875},
                                         per_class={}, confusion_matrix=matrix,
                                         class_names=["cat", "dog"])
    ax = plot_confusion_matrix(report).axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]


def test_plot_sparsity_bad_input():
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError,
                           match=rf"zero weights in \[0, 1\].*name='conv', sparsity={bad}"):
            plot_sparsity({"conv": bad})
    for edge in (0.0, 1.0):
        plot_sparsity({"conv": edge})
    with pytest.raises(ValueError, match="holds no layers"):
        plot_sparsity({})
    with pytest.raises(TypeError, match="Argument `report` must be a mapping"):
        plot_sparsity(3)


def test_plot_lr_finder_delegates_to_the_finder(tmp_path):
    x, y, _ = patch_data(32, seed=3)
    model = keras.Sequential([keras.Input(shape=(16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    finder = LRFinder(min_learning_rate=1e-4, max_learning_rate=1.0, num_steps=8)
    with pytest.raises(ValueError, match="run the range test first"):
        plot_lr_finder(finder)
    finder.find(model, x, y, batch_size=4)
    figure = plot_lr_finder(finder, save_path=tmp_path / "lr.png")
    lines = lines_by_label(figure)
    np.testing.assert_allclose(lines["loss"].get_xdata(), finder.learning_rates)
    np.testing.assert_allclose(lines["loss"].get_ydata(), finder.losses)
    np.testing.assert_allclose(lines["smoothed loss"].get_ydata(), finder.smoothed_losses)
    assert figure.axes[0].get_xscale() == "log"
    assert is_png(tmp_path / "lr.png")
    with pytest.raises(TypeError, match="Argument `finder` must be a"):
        plot_lr_finder({"losses": [1.0]})


# --------------------------------------------------------------------------- saving, backend


def test_save_path_is_written_atomically_in_the_requested_format(tmp_path):
    history = {"loss": [1.0, 0.5]}
    target = tmp_path / "sub" / "plot"
    plot_history(history, save_path=target)  # no extension: PNG
    assert is_png(target)
    (tmp_path / "old.png").write_bytes(b"not an image")
    plot_history(history, save_path=str(tmp_path / "old.png"))
    assert is_png(tmp_path / "old.png")
    plot_history(history, save_path=tmp_path / "plot.svg")
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:500]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    with pytest.raises(ValueError, match=r"Argument `save_path` must end with an image "
                                         r"extension.*save_path='plot.xyz'"):
        plot_history(history, save_path="plot.xyz")
    assert not os.path.exists("plot.xyz")


def test_plots_leave_pyplot_and_its_backend_alone():
    backend = matplotlib.rcParams["backend"]
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figure = plot_history({"loss": [1.0, 0.5]})
    assert type(figure).__name__ == "Figure"
    assert type(figure.canvas).__name__ == "FigureCanvasAgg"
    assert matplotlib.rcParams["backend"] == backend
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


def test_missing_matplotlib_names_the_viz_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    calls = [lambda: plot_history({"loss": [1.0]}),
             lambda: plot_schedule(lambda step: 0.1, 3),
             lambda: plot_confusion_matrix(np.eye(2)),
             lambda: plot_sparsity({"conv": 0.5}),
             lambda: overlay_heatmap(np.zeros((4, 4)), np.zeros((4, 4)))]
    for call in calls:
        with pytest.raises(ImportError, match=r"pip install keras_dnnopt\[viz\]"):
            call()
