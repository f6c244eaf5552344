"""`plain_cnn`: MobileNetV1's shape with full convolutions, the baseline of separable ones."""

from keras_dnnopt.layers import ConvBlock
from keras_dnnopt.models.mobilenet.mobilenet_v1 import build_v1_shaped_model


def plain_cnn(input_shape=(224, 224, 3), num_classes=1000, alpha=1.0, depth_multiplier=1,
              dropout=1e-3, include_top=True, pooling=None, activation="relu6",
              classifier_activation="softmax", use_batch_norm=True, batch_norm_momentum=0.99,
              kernel_regularizer=None, min_feature_size=4, name="plain_cnn"):
    """Builds the plain-convolution twin of `mobilenet_v1`: same shape, full convolutions.

    Every `SeparableConvBlock` of `mobilenet_v1` becomes a `ConvBlock` (a full 3x3
    convolution + BN + activation) with the same output channels and strides; stem, stride
    plan, head and arguments are the same. Comparing the two shows what separable
    convolutions buy: a block from `M` to `N` channels has `9 M N` kernel weights here
    against `9 M + M N` there, a ratio of `1/N + 1/9` (about 8-9x fewer in MobileNetV1).

    Args:
        input_shape, num_classes, alpha, dropout, include_top, pooling, activation,
        classifier_activation, use_batch_norm, kernel_regularizer, min_feature_size:
            as in `mobilenet_v1` (same defaults).
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1).
            Lower it (e.g. 0.9) when training for only a few hundred steps: the moving
            statistics then follow the weights. Defaults to 0.99, Keras' default.
        depth_multiplier: accepted (and validated) for the same signature as
            `mobilenet_v1`; a full convolution has no depthwise multiplier, so it has no
            effect. Defaults to 1.
        name: the model name. Defaults to `"plain_cnn"`.

    Returns:
        A functional `keras.Model` of built-in layers.

    Raises:
        ValueError: as `mobilenet_v1`.

    Example:

    >>> model = plain_cnn(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    >>> model.count_params() > mobilenet_v1((32, 32, 3), 10, alpha=0.25).count_params()
    True
    """

    def make_block(filters, strides, block_name, **options):
        return ConvBlock(filters, 3, strides=strides, name=block_name, **options)

    return build_v1_shaped_model(
        make_block, input_shape=input_shape, num_classes=num_classes, alpha=alpha,
        depth_multiplier=depth_multiplier, dropout=dropout, include_top=include_top,
        pooling=pooling, activation=activation, classifier_activation=classifier_activation,
        use_batch_norm=use_batch_norm, kernel_regularizer=kernel_regularizer,
        min_feature_size=min_feature_size, name=name, batch_norm_momentum=batch_norm_momentum,
    )
