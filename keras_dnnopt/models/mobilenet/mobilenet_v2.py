"""`mobilenet_v2`: MobileNetV2 as a flat functional model of built-in layers."""

from keras_dnnopt.backend import keras
from keras_dnnopt.layers import ConvBlock, InvertedResidualBlock
from keras_dnnopt.layers.base_block import make_divisible
from keras_dnnopt.layers.squeeze_excite import check_se_ratio
from keras_dnnopt.models.mobilenet.common import add_head, plan_strides, validate_builder_args
from keras_dnnopt.models.mobilenet.presets import (
    MOBILENET_V2_LAST_FILTERS,
    MOBILENET_V2_STAGES,
    MOBILENET_V2_STEM_FILTERS,
)


def mobilenet_v2(input_shape=(224, 224, 3), num_classes=1000, alpha=1.0, include_top=True,
                 pooling=None, activation="relu6", classifier_activation="softmax", dropout=0.0,
                 se_ratio=None, use_batch_norm=True, batch_norm_momentum=0.99,
                 kernel_regularizer=None, min_feature_size=4, name="mobilenet_v2"):
    """Builds MobileNetV2 as a flat functional model of built-in Keras layers.

    A 3x3 convolution stem (`make_divisible(32 * alpha, 8)` channels, stride 2), 17
    `InvertedResidualBlock`s in 7 stages (`make_divisible(int(filters * alpha), 8)`
    channels; the first block without expansion), a 1x1 convolution to 1280 channels
    (`make_divisible(1280 * alpha, 8)` when `alpha > 1`), then global average pooling,
    optional dropout and a dense classifier. Each block is unrolled
    (`InvertedResidualBlock.unroll`) so that the model holds only built-in layers
    (`block3_expand`, ..., `block3_add`), ready for TF-MOT and TFLite. At 224x224x3 with
    1000 classes and no squeeze-excite, the parameter count equals
    `keras.applications.MobileNetV2(weights=None, alpha=alpha)`'s (3,538,984 at
    `alpha=1`).

    Small inputs: all convolutions use `"same"` padding, and the earliest of the five
    stride-2 stages (stem, blocks 1, 3, 6, 13) become stride 1 until the final feature map
    is at least `min_feature_size` on its smaller side: 224x224 keeps all five (7x7 map),
    32x32 and 28x28 keep the last three (4x4), 8x8 only the last (4x4).

    Args:
        input_shape: `(height, width, channels)`, e.g. `(32, 32, 3)`; unknown (None)
            spatial sizes keep every stride. Defaults to `(224, 224, 3)`.
        num_classes: the number of classes, an int >= 1 (used when `include_top`).
            Defaults to 1000.
        alpha: the width multiplier, a number > 0. Defaults to 1.0.
        include_top: whether to add the classifier. Defaults to True.
        pooling: without the top: None (4D feature map), `"avg"` or `"max"`. Defaults to
            None.
        activation: the activation of every block (see
            `keras_dnnopt.layers.get_activation_layer`). Defaults to `"relu6"`.
        classifier_activation: the activation of the classifier, e.g. `"softmax"`, or None
            for logits. Defaults to `"softmax"`.
        dropout: the dropout rate before the classifier, in [0, 1); 0 adds no `Dropout`.
            Defaults to 0.
        se_ratio: the squeeze-excite ratio of every block, in (0, 1], or None for none
            (the original MobileNetV2). Defaults to None.
        use_batch_norm: whether every convolution is followed by batch norm. Defaults to
            True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1).
            Lower it (e.g. 0.9) when training for only a few hundred steps: the moving
            statistics then follow the weights. Defaults to 0.99, Keras' default.
        kernel_regularizer: regularizer of every convolution and the classifier kernel:
            None, `"l1"`, `"l2"`, `"l1_l2"`, a number > 0 (L2 factor) or a
            `keras.regularizers.Regularizer`. Defaults to None.
        min_feature_size: the smallest final feature map side kept by the stride plan
            (see above), an int > 0, or None to keep every stride. Defaults to 4.
        name: the model name. Defaults to `"mobilenet_v2"`.

    Returns:
        A functional `keras.Model` of built-in layers.

    Raises:
        ValueError: for an `input_shape` that is not 3 positive dims, `num_classes < 1`,
            `alpha <= 0`, `dropout` or `batch_norm_momentum` outside [0, 1), `se_ratio`
            outside (0, 1], `pooling` not in None/"avg"/"max", an unknown activation or a
            bad regularizer.

    Example:

    >>> model = mobilenet_v2(input_shape=(32, 32, 3), num_classes=10, alpha=0.35)
    >>> model.output_shape
    (None, 10)

    Reference:
        - [Sandler et al., 2018. MobileNetV2: Inverted Residuals and Linear Bottlenecks](
          https://arxiv.org/abs/1801.04381)
    """
    input_shape = validate_builder_args(
        input_shape=input_shape, num_classes=num_classes, alpha=alpha, dropout=dropout,
        include_top=include_top, pooling=pooling, activation=activation,
        classifier_activation=classifier_activation, use_batch_norm=use_batch_norm,
        kernel_regularizer=kernel_regularizer, min_feature_size=min_feature_size,
        batch_norm_momentum=batch_norm_momentum,
    )
    if se_ratio is not None:
        check_se_ratio("se_ratio", se_ratio)
    options = dict(activation=activation, use_batch_norm=use_batch_norm,
                   batch_norm_momentum=batch_norm_momentum,
                   kernel_regularizer=kernel_regularizer)
    blocks = [
        (expansion, filters, strides if repeat == 0 else 1)
        for expansion, filters, repeats, strides in MOBILENET_V2_STAGES
        for repeat in range(repeats)
    ]
    stem_strides, *block_strides = plan_strides(
        [2] + [strides for _, _, strides in blocks], input_shape, min_feature_size)

    inputs = keras.Input(shape=input_shape)
    x = ConvBlock(make_divisible(MOBILENET_V2_STEM_FILTERS * alpha, 8), 3, strides=stem_strides,
                  name="stem", **options).unroll(inputs)
    plan = zip(blocks, block_strides, strict=True)
    for index, ((expansion, filters, _), strides) in enumerate(plan):
        x = InvertedResidualBlock(
            make_divisible(int(filters * alpha), 8), expansion=expansion, strides=strides,
            se_ratio=se_ratio, name=f"block{index}", **options,
        ).unroll(x)
    last_filters = MOBILENET_V2_LAST_FILTERS
    if alpha > 1.0:
        last_filters = make_divisible(MOBILENET_V2_LAST_FILTERS * alpha, 8)
    x = ConvBlock(last_filters, 1, name="top", **options).unroll(x)
    outputs = add_head(x, include_top=include_top, num_classes=num_classes, dropout=dropout,
                       pooling=pooling, classifier_activation=classifier_activation,
                       kernel_regularizer=kernel_regularizer)
    return keras.Model(inputs, outputs, name=name)
