"""`mobilenet_v1`: MobileNetV1 as a flat functional model of built-in layers."""

from keras_dnnopt.backend import keras
from keras_dnnopt.layers import ConvBlock, SeparableConvBlock
from keras_dnnopt.models.mobilenet.common import add_head, plan_strides, validate_builder_args
from keras_dnnopt.models.mobilenet.presets import MOBILENET_V1_BLOCKS, MOBILENET_V1_STEM_FILTERS


def _scaled(filters, alpha):
    # keras.applications' `int(filters * alpha)`, kept >= 1 for very small alphas.
    return max(1, int(filters * alpha))


def build_v1_shaped_model(make_block, *, input_shape, num_classes, alpha, depth_multiplier,
                          dropout, include_top, pooling, activation, classifier_activation,
                          use_batch_norm, kernel_regularizer, min_feature_size, name,
                          batch_norm_momentum=0.99):
    """Builds the MobileNetV1 skeleton with `make_block(filters, strides, block_name,
    **options)` making each of its 13 blocks (a `keras_dnnopt.layers` block); shared by
    `mobilenet_v1` (separable blocks) and `plain_cnn` (full convolutions)."""
    input_shape = validate_builder_args(
        input_shape=input_shape, num_classes=num_classes, alpha=alpha, dropout=dropout,
        include_top=include_top, pooling=pooling, activation=activation,
        classifier_activation=classifier_activation, use_batch_norm=use_batch_norm,
        kernel_regularizer=kernel_regularizer, min_feature_size=min_feature_size,
        depth_multiplier=depth_multiplier, batch_norm_momentum=batch_norm_momentum,
    )
    options = dict(activation=activation, use_batch_norm=use_batch_norm,
                   batch_norm_momentum=batch_norm_momentum,
                   kernel_regularizer=kernel_regularizer)
    stem_strides, *block_strides = plan_strides(
        [2] + [strides for _, strides in MOBILENET_V1_BLOCKS], input_shape, min_feature_size)

    inputs = keras.Input(shape=input_shape)
    x = ConvBlock(_scaled(MOBILENET_V1_STEM_FILTERS, alpha), 3, strides=stem_strides,
                  name="stem", **options).unroll(inputs)
    plan = zip(MOBILENET_V1_BLOCKS, block_strides, strict=True)
    for index, ((filters, _), strides) in enumerate(plan, start=1):
        block = make_block(_scaled(filters, alpha), strides, f"block{index}", **options)
        x = block.unroll(x)
    outputs = add_head(x, include_top=include_top, num_classes=num_classes, dropout=dropout,
                       pooling=pooling, classifier_activation=classifier_activation,
                       kernel_regularizer=kernel_regularizer)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v1(input_shape=(224, 224, 3), num_classes=1000, alpha=1.0, depth_multiplier=1,
                 dropout=1e-3, include_top=True, pooling=None, activation="relu6",
                 classifier_activation="softmax", use_batch_norm=True, batch_norm_momentum=0.99,
                 kernel_regularizer=None, min_feature_size=4, name="mobilenet_v1"):
    """Builds MobileNetV1 as a flat functional model of built-in Keras layers.

    A 3x3 convolution stem (`int(32 * alpha)` channels, at least 1, stride 2) and 13
    `SeparableConvBlock`s (`int(filters * alpha)` pointwise channels, filters 64 to
    1024), then global average pooling, dropout and a dense classifier. Each block is
    unrolled (`SeparableConvBlock.unroll`) so that the model holds only built-in layers
    (`block3_depthwise`, `block3_depthwise_bn`, ...), ready for TF-MOT and TFLite. At
    224x224x3 with 1000 classes the parameter count equals
    `keras.applications.MobileNet(weights=None, alpha=alpha)`'s.

    Small inputs: all convolutions use `"same"` padding, and the earliest of the five
    stride-2 stages (stem, blocks 2, 4, 6, 12) become stride 1 until the final feature
    map is at least `min_feature_size` on its smaller side: 224x224 keeps all five (7x7
    map), 32x32 and 28x28 keep the last three (4x4), 8x8 only the last (4x4).

    Args:
        input_shape: `(height, width, channels)`, e.g. `(28, 28, 1)`; unknown (None)
            spatial sizes keep every stride. Defaults to `(224, 224, 3)`.
        num_classes: the number of classes, an int >= 1 (used when `include_top`).
            Defaults to 1000.
        alpha: the width multiplier, a number > 0 (0.25, 0.5, 0.75, 1.0 are the paper's).
            Defaults to 1.0.
        depth_multiplier: the depthwise depth multiplier, an int > 0. Defaults to 1.
        dropout: the dropout rate before the classifier, in [0, 1). Defaults to 1e-3.
        include_top: whether to add the classifier. Defaults to True.
        pooling: without the top: None (4D feature map), `"avg"` or `"max"` (global
            pooling). Defaults to None.
        activation: the activation of every block (see
            `keras_dnnopt.layers.get_activation_layer`). Defaults to `"relu6"`.
        classifier_activation: the activation of the classifier, e.g. `"softmax"`, or None
            for logits. Defaults to `"softmax"`.
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
        name: the model name. Defaults to `"mobilenet_v1"`.

    Returns:
        A functional `keras.Model` of built-in layers.

    Raises:
        ValueError: for an `input_shape` that is not 3 positive dims, `num_classes < 1`,
            `alpha <= 0`, a `depth_multiplier` that is not an int > 0, `dropout` outside
            [0, 1), `batch_norm_momentum` outside [0, 1), `pooling` not in
            None/"avg"/"max", an unknown activation or a bad regularizer.

    Example:

    >>> model = mobilenet_v1(input_shape=(28, 28, 1), num_classes=10, alpha=0.25)
    >>> model.output_shape
    (None, 10)

    Reference:
        - [Howard et al., 2017. MobileNets: Efficient Convolutional Neural Networks for
          Mobile Vision Applications](https://arxiv.org/abs/1704.04861)
    """

    def make_block(filters, strides, block_name, **options):
        return SeparableConvBlock(filters, 3, strides=strides, depth_multiplier=depth_multiplier,
                                  name=block_name, **options)

    return build_v1_shaped_model(
        make_block, input_shape=input_shape, num_classes=num_classes, alpha=alpha,
        depth_multiplier=depth_multiplier, dropout=dropout, include_top=include_top,
        pooling=pooling, activation=activation, classifier_activation=classifier_activation,
        use_batch_norm=use_batch_norm, kernel_regularizer=kernel_regularizer,
        min_feature_size=min_feature_size, name=name, batch_norm_momentum=batch_norm_momentum,
    )
