"""What the MobileNet builders share: argument validation, stride planning, the head."""

import math

from keras_dnnopt.backend import keras
from keras_dnnopt.layers.activations import check_activation
from keras_dnnopt.layers.base_block import check_bool, parse_regularizer
from keras_dnnopt.utils.validation import (
    check_choice,
    check_number,
    check_positive,
    check_shape,
)


def validate_builder_args(*, input_shape, num_classes, alpha, dropout, include_top, pooling,
                          activation, classifier_activation, use_batch_norm,
                          kernel_regularizer, min_feature_size, depth_multiplier=1,
                          batch_norm_momentum=0.99):
    """Validates the arguments the builders share, Keras-style. Returns the input shape
    as a tuple."""
    input_shape = check_shape("input_shape", input_shape, rank=3)
    if input_shape[-1] is None:
        raise ValueError(
            "Argument `input_shape` must have a known number of channels (last dimension). "
            f"Received: input_shape={input_shape!r}"
        )
    check_bool("include_top", include_top)
    if include_top:
        check_positive("num_classes", num_classes, integer=True)
    check_positive("alpha", alpha)
    check_positive("depth_multiplier", depth_multiplier, integer=True)
    check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
    check_choice("pooling", pooling, (None, "avg", "max"))
    check_activation("activation", activation)
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "Argument `classifier_activation` must be None (logits) or a Keras "
                "activation such as 'softmax'. "
                f"Received: classifier_activation={classifier_activation!r}"
            ) from error
    check_bool("use_batch_norm", use_batch_norm)
    check_number("batch_norm_momentum", batch_norm_momentum, low=0, high=1,
                 high_inclusive=False)
    parse_regularizer("kernel_regularizer", kernel_regularizer)
    if min_feature_size is not None:
        check_positive("min_feature_size", min_feature_size, integer=True)
    return input_shape


def plan_strides(strides, input_shape, min_feature_size):
    """Turns the earliest stride-2 stages into stride 1 so that small inputs keep a
    feature map of at least `min_feature_size`.

    With `"same"` padding a stride-2 stage maps a side `s` to `ceil(s / 2)`. Starting
    from the smaller input side, the plan keeps the largest number `k` of stride-2 stages
    whose output side is still `>= min_feature_size`, and makes the *earliest* others
    stride 1 (the late stages, which see the deepest features, keep their strides). So a
    224x224 input keeps all five stride-2 stages of MobileNetV1/V2 (a 7x7 final map),
    32x32 and 28x28 keep three (4x4), 8x8 keeps one (4x4); an input smaller than
    `min_feature_size` keeps none.

    Args:
        strides: the strides of the stages in order, each 1 or 2.
        input_shape: `(height, width, channels)`; unknown (None) spatial sizes keep
            every stride.
        min_feature_size: the smallest final side, or None to keep every stride.

    Returns:
        The list of planned strides.
    """
    strides = list(strides)
    if min_feature_size is None or None in input_shape[:2]:
        return strides
    side = min(input_shape[:2])
    num_stride2 = strides.count(2)
    keep = 0
    while keep < num_stride2 and math.ceil(side / 2) >= min_feature_size:
        side = math.ceil(side / 2)
        keep += 1
    to_drop = num_stride2 - keep
    planned = []
    for stride in strides:
        if stride == 2 and to_drop:
            planned.append(1)
            to_drop -= 1
        else:
            planned.append(stride)
    return planned


def new_regularizer(kernel_regularizer):
    """A fresh regularizer instance for one layer (or None)."""
    regularizer = parse_regularizer("kernel_regularizer", kernel_regularizer)
    if regularizer is None:
        return None
    return type(regularizer).from_config(regularizer.get_config())


def add_head(x, *, include_top, num_classes, dropout, pooling, classifier_activation,
             kernel_regularizer):
    """The classifier head (global average pool, optional dropout, dense) or the
    backbone pooling (`pooling=None`/`"avg"`/`"max"`) when `include_top=False`."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation,
                                  kernel_regularizer=new_regularizer(kernel_regularizer),
                                  name="predictions")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x
