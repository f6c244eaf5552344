"""What Grad-CAM and saliency maps share: the checks of the model, the images and the
class indices, the class score, and the per-image normalisation to [0, 1]."""

import numbers
import warnings

import numpy as np

from keras_dnnopt.backend import check_model, tf


def image_model_input_shape(model, what):
    """The model's input shape `(None, height, width, channels)`, checked: one image input."""
    check_model(model)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"`{what}` needs a built model with a known input: give it a `keras.Input` (or "
            f"call it on a batch) first. Received: model={model.name!r} with no inputs"
        )
    if len(inputs) != 1:
        raise ValueError(
            f"`{what}` explains models with one image input. Received: model={model.name!r} "
            f"with {len(inputs)} inputs"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(
            f"`{what}` needs a model whose input is a batch of images, shape "
            f"(batch, height, width, channels). Received: model={model.name!r} with input "
            f"shape {shape}"
        )
    return shape


def check_images(images, input_shape):
    """Checks `images` against the model's input shape.

    Returns:
        `(batch, single)`: a float32 NumPy batch of rank 4, and whether one image
        (rank 3) was given.
    """
    try:
        array = np.asarray(images, dtype="float32")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Argument `images` must be an array of numbers. "
            f"Received: images of type {type(images).__name__}"
        ) from error
    expected = tuple(input_shape[1:])
    described = tuple("?" if d is None else d for d in expected)
    if array.ndim not in (3, 4):
        raise ValueError(
            "Argument `images` must be one image of shape (height, width, channels) = "
            f"{described} or a batch of them, rank 3 or 4 (channels last, a grayscale image "
            f"as (height, width, 1)). Received: images.shape={array.shape}"
        )
    single = array.ndim == 3
    batch = array[None] if single else array
    if batch.shape[0] == 0:
        raise ValueError(f"Argument `images` is an empty batch. Received: images.shape="
                         f"{array.shape}")
    mismatch = [d is not None and d != s for d, s in zip(expected, batch.shape[1:], strict=True)]
    if any(mismatch):
        raise ValueError(
            f"Argument `images` must match the model's input shape {described} per image. "
            f"Received: images.shape={array.shape}"
        )
    if not np.all(np.isfinite(batch)):
        raise ValueError("Argument `images` must hold finite numbers. Received: NaN or inf")
    return batch, single


def predictions_of(outputs, what):
    """The model's output as a `(batch, classes)` tensor, checked."""
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"`{what}` explains models with one output. Received: {len(outputs)} outputs; "
            "build a model with the output to explain, e.g. "
            "`keras.Model(model.inputs, model.outputs[0])`"
        )
    if len(outputs.shape) != 2:
        raise ValueError(
            f"`{what}` needs a model whose output is class scores of shape (batch, classes). "
            f"Received: output shape {tuple(outputs.shape)}"
        )
    return outputs


def check_class_index(class_index, num_classes, batch_size):
    """Validates `class_index` (None, an int, or one int per image) against the number
    of classes; returns None or a NumPy int vector of length `batch_size`."""
    if class_index is None:
        return None
    if isinstance(class_index, np.ndarray) and class_index.ndim == 0:
        class_index = class_index.item()
    values = [class_index] if isinstance(class_index, numbers.Integral) else class_index
    try:
        values = list(values)
    except TypeError:
        values = None
    valid = values is not None and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
    if not valid or isinstance(class_index, bool):
        raise ValueError(
            "Argument `class_index` must be None (the predicted class), an int, or one int "
            f"per image. Received: class_index={class_index!r}"
        )
    if len(values) == 1:
        values = values * batch_size
    if len(values) != batch_size:
        raise ValueError(
            f"Argument `class_index` must give one class per image ({batch_size}). "
            f"Received: class_index={class_index!r}"
        )
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise ValueError(
            f"Argument `class_index` must be in [0, {num_classes}) for a model with "
            f"{num_classes} output units. Received: class_index={class_index!r}"
        )
    return np.asarray(values, dtype="int32")


def class_scores(predictions, class_index):
    """The score of each image's class (its predicted one when `class_index` is None),
    and the class indices used."""
    if class_index is None:
        class_index = tf.argmax(predictions, axis=-1, output_type=tf.int32)
    class_index = tf.convert_to_tensor(class_index, dtype=tf.int32)
    scores = tf.gather(predictions, class_index[:, None], batch_dims=1)[:, 0]
    return scores, class_index


def normalize_maps(maps):
    """Scales each map of a `(batch, height, width)` batch to [0, 1] by its maximum (a
    map that is 0 everywhere stays 0)."""
    maps = np.asarray(maps, dtype="float32")
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peaks > 0, peaks, 1.0).astype("float32")
    return maps / scale[:, None, None]


def warn_if_flat(gradients, what):
    """Warns when an image's class-score gradient is 0 everywhere: its map is then all 0,
    the sign of a saturated output (a softmax probability of 1.0 in float32)."""
    flat = np.all(np.reshape(np.asarray(gradients), (len(gradients), -1)) == 0.0, axis=1)
    if np.any(flat):
        warnings.warn(
            f"`{what}`: the class score's gradient is 0 everywhere for image(s) "
            f"{np.flatnonzero(flat).tolist()}, so their maps are all 0. With a softmax "
            "output this is saturation (a probability of 1.0): explain a model with logits "
            "outputs, e.g. `classifier_activation=None`.",
            stacklevel=3,
        )
