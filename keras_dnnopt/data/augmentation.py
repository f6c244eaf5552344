"""Image augmentation as Keras preprocessing layers (both Kerases ship the same ones)."""

from keras_dnnopt.backend import keras
from keras_dnnopt.utils.validation import check_choice, check_number, check_shape

_FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")


def augmentation_layers(rotation=None, zoom=None, translation=None, crop=None, flip=None,
                        input_shape=None, fill_mode="constant", seed=None):
    """A `keras.Sequential` of random image augmentations, active only when training.

    The layers are Keras' own preprocessing layers (`RandomRotation`, `RandomZoom`,
    `RandomTranslation`, `ZeroPadding2D` + `RandomCrop`, `RandomFlip`), which run inside a
    `tf.data` map on both Keras 3 (TensorFlow backend) and tf_keras. Applied to a batch,
    rotation, zoom, translation and flip are drawn per image; the crop offset is drawn
    once per batch (that is how Keras' `RandomCrop` works), so prefer `translation` when
    per-image shifts matter. Pass `training=True` when calling it outside `fit`.

    Args:
        rotation: the largest rotation, as a fraction of a full turn (0.05 = 18 degrees),
            a float in (0, 0.5], or None for none. Defaults to None.
        zoom: the largest zoom in or out, as a fraction of the size, a float in (0, 1),
            or None. Defaults to None.
        translation: the largest shift, as a fraction of height and width, a float in
            (0, 1), or None. Defaults to None.
        crop: pad-and-crop: pad `crop` pixels of zeros on every side, then crop back to
            the original size at a random offset; an integer > 0, or None. Needs
            `input_shape`. Defaults to None.
        flip: `"horizontal"`, `"vertical"`, `"horizontal_and_vertical"` or None. Defaults
            to None (digits and letters change meaning when flipped).
        input_shape: the `(height, width, channels)` of one image; needed for `crop`,
            and builds the model when given. Defaults to None.
        fill_mode: how rotation, zoom and translation fill new pixels: `"constant"`
            (zeros), `"reflect"`, `"wrap"` or `"nearest"`. Defaults to `"constant"`.
        seed: an int seed for the random layers, or None. Defaults to None.

    Returns:
        A `keras.Sequential` named `"augmentation"` (an identity when no augmentation is
        asked for).

    Raises:
        ValueError: if an argument is out of range, or `crop` is given without
            `input_shape`.

    Example:

    >>> augment = augmentation_layers(rotation=0.05, zoom=0.1, translation=0.1)
    >>> images = np.zeros((4, 8, 8, 1), "float32")
    >>> augment(images, training=True).shape
    TensorShape([4, 8, 8, 1])
    """
    fill_mode = check_choice("fill_mode", fill_mode, ("constant", "reflect", "wrap", "nearest"))
    if input_shape is not None:
        input_shape = check_shape("input_shape", input_shape, rank=3)
    if seed is not None:
        seed = check_number("seed", seed, low=0, integer=True)
    layers = []
    if rotation is not None:
        rotation = check_number("rotation", rotation, low=0.0, high=0.5, low_inclusive=False)
        layers.append(keras.layers.RandomRotation(rotation, fill_mode=fill_mode, seed=seed))
    if zoom is not None:
        zoom = check_number("zoom", zoom, low=0.0, high=1.0, low_inclusive=False,
                            high_inclusive=False)
        layers.append(keras.layers.RandomZoom(zoom, fill_mode=fill_mode, seed=seed))
    if translation is not None:
        translation = check_number("translation", translation, low=0.0, high=1.0,
                                   low_inclusive=False, high_inclusive=False)
        layers.append(keras.layers.RandomTranslation(translation, translation,
                                                     fill_mode=fill_mode, seed=seed))
    if crop is not None:
        crop = check_number("crop", crop, low=1, integer=True)
        if input_shape is None or input_shape[0] is None or input_shape[1] is None:
            raise ValueError(
                "Argument `crop` needs the image size: pass `input_shape=(height, width, "
                f"channels)` with known height and width. Received: crop={crop}, "
                f"input_shape={input_shape!r}"
            )
        layers.append(keras.layers.ZeroPadding2D(crop))
        layers.append(keras.layers.RandomCrop(input_shape[0], input_shape[1], seed=seed))
    if flip is not None:
        flip = check_choice("flip", flip, _FLIPS)
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if not layers:
        layers.append(keras.layers.Identity())
    if input_shape is not None:
        layers.insert(0, keras.Input(shape=input_shape))
    return keras.Sequential(layers, name="augmentation")
