"""`tf.data` input pipelines with caching, shuffling, augmentation and prefetching."""

import numpy as np

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.data.augmentation import augmentation_layers
from keras_dnnopt.utils.validation import check_number


def default_augmentation(input_shape, seed=None):
    """The augmentation `augment=True` gives: small rotations, zooms and shifts, no flip
    (flipping changes the meaning of digits and letters)."""
    return augmentation_layers(rotation=0.05, zoom=0.1, translation=0.1,
                               input_shape=input_shape, seed=seed)


def resolve_augmentation(augment, input_shape, seed=None):
    """Turns `augment` (None/False, True, a dict of `augmentation_layers` arguments, or a
    callable) into a callable or None."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return default_augmentation(input_shape, seed)
    if isinstance(augment, dict):
        kwargs = dict(augment)
        kwargs.setdefault("input_shape", input_shape)
        kwargs.setdefault("seed", seed)
        return augmentation_layers(**kwargs)
    if callable(augment):
        return augment
    raise ValueError(
        "Argument `augment` must be None, a bool, a dict of `augmentation_layers` arguments "
        f"or a callable (e.g. a Keras layer). Received: augment={augment!r}"
    )


def make_pipeline(x, y=None, batch_size=32, training=False, augment=None, cache=True,
                  shuffle=None, prefetch=True, normalizer=None, seed=None):
    """A batched `tf.data.Dataset` of `(x, y)` set up for training or evaluation.

    The stages, in order: `from_tensor_slices` -> `cache()` (of the raw samples, so later
    epochs skip any upstream work) -> `shuffle` over the whole set, reshuffled every
    epoch -> `batch` -> augmentation (training only), then normalisation, in one
    vectorised map per batch with `num_parallel_calls=AUTOTUNE` -> `prefetch(AUTOTUNE)`.
    Augmenting whole batches rather than single images runs the Keras preprocessing
    layers once per batch, which is what keeps the pipeline ahead of training.

    Args:
        x: the inputs, an array of shape `(n, ...)`.
        y: the targets, an array of length `n`, or None for an inputs-only pipeline.
            Defaults to None.
        batch_size: samples per batch, an integer > 0. Defaults to 32.
        training: whether the pipeline feeds training (shuffled, augmented) or
            evaluation (in order, never augmented). Defaults to False.
        augment: the augmentation, for training pipelines only: None or False (none),
            True (`default_augmentation`: rotation 0.05, zoom 0.1, translation 0.1),
            a dict of `augmentation_layers` arguments, or a callable such as a Keras
            layer (called with `training=True` when it accepts it). Defaults to None.
        cache: whether to cache the samples after the first epoch. Defaults to True.
        shuffle: whether to shuffle every epoch. Defaults to None (= `training`).
        prefetch: whether to prefetch batches (`tf.data.AUTOTUNE`). Defaults to True.
        normalizer: a layer or callable applied to every batch of `x` after the
            augmentation, e.g. `adapt_normalizer(x_train)`. Defaults to None.
        seed: the shuffle (and default augmentation) seed, an int or None. Defaults to
            None.

    Returns:
        A `tf.data.Dataset` yielding `(x_batch, y_batch)` (or `x_batch` when `y` is None),
        `x` as float32.

    Raises:
        ValueError: if `y` does not have one entry per sample of `x`, `batch_size` is not
            a positive integer, or `augment` is given for an evaluation pipeline.

    Example:

    >>> x = np.zeros((10, 8, 8, 1), "float32"); y = np.arange(10) % 2
    >>> ds = make_pipeline(x, y, batch_size=4, training=True, augment=True, seed=0)
    >>> [tuple(b[0].shape) for b in ds]
    [(4, 8, 8, 1), (4, 8, 8, 1), (2, 8, 8, 1)]
    """
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    x = np.asarray(x, dtype="float32")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"Argument `x` must be a non-empty array. Received: x with shape {x.shape}"
        )
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or len(y) != len(x):
            raise ValueError(
                "Arguments `x` and `y` must have the same number of samples. Received: "
                f"len(x)={len(x)}, y with shape {y.shape}"
            )
    if not training and augment not in (None, False):
        raise ValueError(
            "Augmentation belongs to training pipelines only: evaluating on augmented data "
            "measures the augmentation, not the model. Pass `training=True` or "
            f"`augment=None`. Received: training={training!r}, augment={augment!r}"
        )
    if seed is not None:
        seed = check_number("seed", seed, low=0, integer=True)
    augmenter = resolve_augmentation(augment, x.shape[1:], seed) if training else None
    shuffle = training if shuffle is None else bool(shuffle)

    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    if augmenter is not None or normalizer is not None:
        def transform(images):
            if augmenter is not None:
                images = _call(augmenter, images)
            if normalizer is not None:
                images = normalizer(images)
            return tf.cast(images, tf.float32)

        if y is None:
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(lambda images, labels: (transform(images), labels),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset


def _call(augmenter, images):
    if isinstance(augmenter, keras.layers.Layer):
        return augmenter(images, training=True)
    return augmenter(images)
