"""`saliency_map`: gradient saliency maps (vanilla gradients)."""

import numpy as np

from keras_dnnopt.backend import tf
from keras_dnnopt.visualization._explain import (
    check_class_index,
    check_images,
    class_scores,
    image_model_input_shape,
    normalize_maps,
    predictions_of,
    warn_if_flat,
)


def saliency_map(model, images, class_index=None, normalize=True):
    """Gradient saliency maps: how strongly each pixel sways a class score.

    The map of an image is `max_c |d y / d x[i, j, c]|`, the largest absolute gradient of
    the class score `y` (the model's output unit for the class) with respect to the
    pixel over its channels, computed with a `tf.GradientTape` on the input; with
    `normalize`, divided by its maximum (so in [0, 1]).

    As in the paper, the score should be the one before the softmax: for a model ending
    in a softmax, the gradient of a probability close to 1 vanishes; prefer a model with
    logits outputs.

    Args:
        model: a built Keras model of the Keras in use with one image input
            `(batch, height, width, channels)` (channels last) and one output of class
            scores `(batch, classes)`.
        images: one image `(height, width, channels)` or a batch of them, matching the
            model's input (a grayscale image as `(height, width, 1)`).
        class_index: the class to explain: None for each image's predicted class, an
            int for all images, or one int per image. Defaults to None.
        normalize: whether to scale each map to [0, 1] by its maximum; False keeps the
            raw gradient magnitudes. Defaults to True.

    Returns:
        A float32 NumPy array: `(height, width)` for one image, `(batch, height, width)`
        for a batch.

    Raises:
        TypeError: if `model` is not a Keras model of the Keras in use.
        ValueError: if `images` has the wrong rank or shape, `class_index` is out of
            range, or the model does not have one image input and one
            `(batch, classes)` output.

    Example:

    ```python
    saliency = saliency_map(model, x_test[:8])  # (8, height, width), in [0, 1]
    ```

    Reference:
        Simonyan, Vedaldi and Zisserman, [Deep Inside Convolutional Networks:
        Visualising Image Classification Models and Saliency Maps](
        https://arxiv.org/abs/1312.6034), ICLR workshop 2014.
    """
    input_shape = image_model_input_shape(model, "saliency_map")
    batch, single = check_images(images, input_shape)
    if not isinstance(normalize, bool):
        raise ValueError(
            f"Argument `normalize` must be a bool. Received: normalize={normalize!r}")
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        predictions = predictions_of(model(inputs, training=False), "saliency_map")
        indices = check_class_index(class_index, int(predictions.shape[-1]), len(batch))
        scores, _ = class_scores(predictions, indices)
    gradients = tape.gradient(scores, inputs)
    if gradients is None:
        raise ValueError("The model's output does not depend on its input; no saliency map.")
    warn_if_flat(gradients, "saliency_map")
    maps = tf.reduce_max(tf.abs(gradients), axis=-1).numpy().astype("float32")
    if normalize:
        maps = normalize_maps(maps)
    maps = np.asarray(maps, dtype="float32")
    return maps[0] if single else maps
