"""`grad_cam`: Grad-CAM class-activation heatmaps, and `find_last_conv_layer`."""

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.utils.patching import MethodPatch
from keras_dnnopt.visualization._explain import (
    check_class_index,
    check_images,
    class_scores,
    image_model_input_shape,
    normalize_maps,
    predictions_of,
    warn_if_flat,
)


def _output_rank(layer):
    """The rank of a layer's (first) output, or None when it has no symbolic output
    (a layer of a subclassed model, a layer never called)."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(output, (list, tuple, dict)):
        return None
    shape = getattr(output, "shape", None)
    return None if shape is None else len(shape)


def _is_input_layer(layer):
    return isinstance(layer, keras.layers.InputLayer)


def _walk(model, enclosing=()):
    """Every layer of `model`, nested models' layers included (after the nested model
    itself), in order, as `(layer, enclosing_models)`."""
    for layer in model.layers:
        yield layer, enclosing
        if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
            yield from _walk(layer, (*enclosing, layer))


def _spatial_layers(model):
    """The layers with a 4-D output `(batch, height, width, channels)`, in order."""
    return [(layer, enclosing) for layer, enclosing in _walk(model)
            if not _is_input_layer(layer) and _output_rank(layer) == 4]


def _locate_last_spatial(model):
    """The last layer with a 4-D output, going into nested models: a nested model is
    replaced by its own last such layer."""
    for layer in reversed(model.layers):
        if _is_input_layer(layer):
            continue
        if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
            found = _locate_last_spatial(layer)
            if found is not None:
                return found[0], (layer, *found[1])
        if _output_rank(layer) == 4:
            return layer, ()
    return None


def find_last_conv_layer(model):
    """Finds the layer Grad-CAM explains by default: the last layer with a 4-D output.

    The last layer whose output is a feature map `(batch, height, width, channels)`:
    a `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`, a block of `keras_dnnopt.layers`
    (`SeparableConvBlock`, `InvertedResidualBlock`...), or the activation, batch norm or
    pooling that follows them (in the flat models of `keras_dnnopt.models`, the last
    block's final activation). Nested models (a backbone inside a classifier) are
    searched too: the last such layer inside the last nested model that has one.

    Args:
        model: a built Keras model (functional or Sequential) of the Keras in use.

    Returns:
        The layer (a `keras.layers.Layer`, possibly inside a nested model).

    Raises:
        TypeError: if `model` is not a Keras model of the Keras in use.
        ValueError: if no layer has a 4-D output (e.g. a subclassed model, whose layers
            have no symbolic outputs: pass `layer_name` to `grad_cam` instead).

    Example:

    ```python
    model = keras_dnnopt.models.mobilenet_v1((32, 32, 3), num_classes=10, alpha=0.25)
    find_last_conv_layer(model).name  # 'block13_pointwise_relu'
    ```
    """
    check_model(model)
    found = _locate_last_spatial(model)
    if found is None:
        raise ValueError(
            "No layer of the model has a 4-D output (batch, height, width, channels), so "
            "there is no convolutional feature map to explain. For a subclassed model, "
            f"pass `layer_name` explicitly. Received: model={model.name!r}"
        )
    return found[0]


def _resolve_layer(model, layer_name):
    """The layer to explain and the nested models enclosing it (empty: top level)."""
    if layer_name is None:
        found = _locate_last_spatial(model)
        if found is None:
            find_last_conv_layer(model)  # raises the error
        return found
    if not isinstance(layer_name, str):
        raise ValueError(
            f"Argument `layer_name` must be a layer name (str) or None. "
            f"Received: layer_name={layer_name!r}"
        )
    for layer, enclosing in _walk(model):
        if layer.name == layer_name:
            if _is_input_layer(layer) or _output_rank(layer) not in (4, None):
                raise ValueError(
                    f"Argument `layer_name` must name a layer with a 4-D output (a "
                    f"convolutional feature map). Received: layer_name={layer_name!r}, whose "
                    f"output has rank {_output_rank(layer)}"
                )
            return layer, enclosing
    candidates = [layer.name for layer, _ in _spatial_layers(model)]
    shown = ", ".join(repr(n) for n in candidates[-8:]) or "none"
    more = f" (the last 8 of {len(candidates)})" if len(candidates) > 8 else ""
    raise ValueError(
        f"Argument `layer_name` must name a layer of the model (nested models included). "
        f"Layers with a 4-D output{more}: {shown}. Received: layer_name={layer_name!r}"
    )


def _features_and_predictions(model, layer, enclosing, batch, tape):
    """Runs the model on `batch` under `tape`; returns the layer's output (watched) and
    the model's output."""
    nodes = getattr(layer, "_inbound_nodes", None)
    single_node = nodes is None or len(nodes) == 1
    if not enclosing and single_node and not isinstance(layer, keras.Model):
        # A layer of the model itself: the functional sub-model of Keras' Grad-CAM
        # example, on both Kerases (with `model.outputs`: `model.output` is undefined for
        # a Keras 3 Sequential model).
        grad_model = keras.Model(model.inputs, [layer.output, *model.outputs])
        features, *predictions = grad_model(batch, training=False)
        return features, predictions[0] if len(predictions) == 1 else predictions
    # A layer inside a nested model is not reachable from the outer model's inputs as a
    # tensor of the outer graph (its `output` is a tensor of the nested model's own graph;
    # the same for a nested model's `output`, or a layer called several times), so no
    # sub-model can be built. Its output is read while the whole model runs instead: the
    # layer's `call` is wrapped on the instance for the duration of this forward pass
    # (our own hook; neither Keras offers one). The last call's output is used.
    recorded = []

    def make_wrapper(call):
        def recording_call(*args, **kwargs):
            output = call(*args, **kwargs)
            tape.watch(output)
            recorded.append(output)
            return output

        return recording_call

    patch = MethodPatch(layer, "call", make_wrapper)
    try:
        predictions = model(batch, training=False)
    finally:
        patch.restore()
    if not recorded:
        raise ValueError(
            f"The layer {layer.name!r} did not run in the model's forward pass, so it cannot "
            "be explained; pass another `layer_name`."
        )
    return recorded[-1], predictions


def grad_cam(model, images, class_index=None, layer_name=None, resize=True):
    """Grad-CAM heatmaps: where in each image the evidence for a class lies.

    For the class score `y_c` (the model's output unit `c`) and the feature maps `A_k`
    of a convolutional layer, the heatmap is
    `relu(sum_k alpha_k * A_k)` with `alpha_k = mean_ij(d y_c / d A_k[i, j])`,
    divided by its maximum (so in [0, 1]; a map with no positive evidence is all 0) and
    resized (bilinear) to the input's height and width.

    The gradients come from a `tf.GradientTape` over a functional sub-model
    `keras.Model(model.inputs, [layer.output, *model.outputs])` for a layer of the model
    itself; a layer inside a nested model (a backbone used as a layer) is read while the
    whole model runs. Works on Keras 3 and tf_keras, for functional and Sequential
    models, including the flat models of `keras_dnnopt.models` and models holding the
    blocks of `keras_dnnopt.layers` as layers.

    The paper uses the score before the softmax: for a model ending in a softmax, the
    gradient of a probability close to 1 vanishes (and the map with it); prefer a model
    with logits outputs (e.g. `classifier_activation=None`).

    Args:
        model: a built Keras model of the Keras in use with one image input
            `(batch, height, width, channels)` (channels last) and one output of class
            scores `(batch, classes)`.
        images: one image `(height, width, channels)` or a batch of them, matching the
            model's input (a grayscale image as `(height, width, 1)`).
        class_index: the class to explain: None for each image's predicted class
            (`argmax` of the output), an int for all images, or one int per image.
            Defaults to None.
        layer_name: the name of the layer whose feature maps are used (searched in
            nested models too), or None for `find_last_conv_layer(model)`. Defaults to
            None.
        resize: whether to resize the heatmaps to the input's height and width; False
            keeps the layer's resolution. Defaults to True.

    Returns:
        A float32 NumPy array in [0, 1]: `(height, width)` for one image,
        `(batch, height, width)` for a batch.

    Raises:
        TypeError: if `model` is not a Keras model of the Keras in use (e.g. a tf_keras
            model while Keras 3 is active).
        ValueError: if `images` has the wrong rank or shape, `layer_name` names no layer
            (the message lists layers that would work) or a layer without a 4-D output,
            `class_index` is out of range, or the model does not have one image input
            and one `(batch, classes)` output.

    Example:

    ```python
    heatmap = grad_cam(model, x_test[0])          # (height, width), in [0, 1]
    picture = overlay_heatmap(x_test[0], heatmap)  # RGB, for plt.imshow
    ```

    Reference:
        Selvaraju et al., [Grad-CAM: Visual Explanations from Deep Networks via
        Gradient-based Localization](https://arxiv.org/abs/1610.02391), ICCV 2017.
    """
    input_shape = image_model_input_shape(model, "grad_cam")
    batch, single = check_images(images, input_shape)
    layer, enclosing = _resolve_layer(model, layer_name)
    if not isinstance(resize, bool):
        raise ValueError(f"Argument `resize` must be a bool. Received: resize={resize!r}")
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        features, predictions = _features_and_predictions(model, layer, enclosing, inputs, tape)
        predictions = predictions_of(predictions, "grad_cam")
        shape = getattr(features, "shape", None)
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"Argument `layer_name` must name a layer with one 4-D output. Received: "
                f"layer {layer.name!r} with output shape "
                f"{None if shape is None else tuple(shape)}"
            )
        indices = check_class_index(class_index, int(predictions.shape[-1]), len(batch))
        scores, _ = class_scores(predictions, indices)
    gradients = tape.gradient(scores, features)
    if gradients is None:
        raise ValueError(
            f"The model's output does not depend on layer {layer.name!r}, so Grad-CAM has no "
            "gradient; pass another `layer_name`."
        )
    warn_if_flat(gradients, "grad_cam")
    weights = tf.reduce_mean(gradients, axis=(1, 2))  # alpha_k, one per channel
    maps = tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights))
    if resize and tuple(maps.shape[1:]) != batch.shape[1:3]:
        # Bilinear interpolation keeps the maps >= 0; normalised after, so the peak is 1.
        maps = tf.image.resize(maps[..., None], batch.shape[1:3], method="bilinear")[..., 0]
    maps = normalize_maps(np.maximum(maps.numpy(), 0.0))
    return maps[0] if single else maps
