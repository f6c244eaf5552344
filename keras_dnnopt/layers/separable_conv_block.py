"""`SeparableConvBlock`: the depthwise-separable block of MobileNetV1."""

from keras_dnnopt.backend import register_serializable
from keras_dnnopt.layers.base_block import BaseBlock, check_strides
from keras_dnnopt.utils.validation import check_choice, check_positive


@register_serializable
class SeparableConvBlock(BaseBlock):
    """Depthwise k x k conv + BN + act, then pointwise 1x1 conv + BN + act (MobileNetV1).

    A depthwise-separable convolution factorizes a k x k convolution from `M` to `N`
    channels (`k^2 M N` weights) into a per-channel k x k depthwise convolution
    (`k^2 M`) and a 1x1 pointwise convolution (`M N`): `1/N + 1/k^2` of the weights and
    multiply-adds. Made only of built-in layers, named after the block:
    `{name}_depthwise`, `{name}_depthwise_bn`, `{name}_depthwise_act`,
    `{name}_pointwise`, `{name}_pointwise_bn`, `{name}_pointwise_act`, `{name}_dropout`;
    `unroll(inputs)` puts them in a functional model (see `BaseBlock`).

    Args:
        filters: the number of output (pointwise) channels, an int > 0.
        kernel_size: the depthwise window, an int > 0. Defaults to 3.
        strides: the depthwise strides, 1 or 2. Defaults to 1.
        depth_multiplier: depthwise output channels per input channel, an int > 0.
            Defaults to 1.
        activation: the activation name (see `get_activation_layer`), after each
            convolution. Defaults to `"relu6"`.
        use_batch_norm: whether `BatchNormalization` follows each convolution (which then
            has no bias). Defaults to True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1)
            (see `BaseBlock`). Defaults to 0.99, Keras' default.
        dropout: rate of a `Dropout` after the block, in [0, 1). Defaults to 0 (none).
        kernel_regularizer: regularizer of both kernels: None, `"l1"`, `"l2"`,
            `"l1_l2"`, a number > 0 (L2 factor) or a `keras.regularizers.Regularizer`.
            Defaults to None.
        padding: the depthwise padding, `"same"` or `"valid"`. Defaults to `"same"`.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        4D tensor `(batch, new_height, new_width, filters)`; with `"same"` padding,
        `new_height = ceil(height / strides)`.

    Raises:
        ValueError: if `filters`, `kernel_size` or `depth_multiplier` is not an int > 0,
            `strides` is not 1 or 2, `padding` is unknown, or a `BaseBlock` option is
            invalid.

    Example:

    >>> block = SeparableConvBlock(64, strides=2)
    >>> block(np.zeros((1, 32, 32, 16), "float32")).shape
    TensorShape([1, 16, 16, 64])

    Reference:
        - [Howard et al., 2017. MobileNets: Efficient Convolutional Neural Networks for
          Mobile Vision Applications](https://arxiv.org/abs/1704.04861)
    """

    def __init__(self, filters, kernel_size=3, strides=1, depth_multiplier=1,
                 activation="relu6", use_batch_norm=True, dropout=0.0, kernel_regularizer=None,
                 padding="same", batch_norm_momentum=0.99, **kwargs):
        super().__init__(activation=activation, use_batch_norm=use_batch_norm,
                         dropout=dropout, kernel_regularizer=kernel_regularizer,
                         batch_norm_momentum=batch_norm_momentum, **kwargs)
        self.filters = check_positive("filters", filters, integer=True)
        self.kernel_size = check_positive("kernel_size", kernel_size, integer=True)
        self.strides = check_strides("strides", strides)
        self.depth_multiplier = check_positive("depth_multiplier", depth_multiplier,
                                               integer=True)
        self.padding = check_choice("padding", padding, ("same", "valid"))

    def _create_layers(self, input_shape):
        self.depthwise = self._depthwise_conv2d(
            self.kernel_size, "depthwise", strides=self.strides,
            depth_multiplier=self.depth_multiplier, padding=self.padding)
        self.depthwise_bn = self._batch_norm("depthwise_bn")
        self.depthwise_act = self._activation_layers("depthwise_act")
        self.pointwise = self._conv2d(self.filters, 1, "pointwise")
        self.pointwise_bn = self._batch_norm("pointwise_bn")
        self.pointwise_act = self._activation_layers("pointwise_act")
        self.dropout_layer = self._dropout_layer()

    def _forward(self, x, apply):
        x = self._apply(apply, self.depthwise, x)
        x = self._apply(apply, self.depthwise_bn, x)
        x = self._apply_activation(apply, self.depthwise_act, x)
        x = self._apply(apply, self.pointwise, x)
        x = self._apply(apply, self.pointwise_bn, x)
        x = self._apply_activation(apply, self.pointwise_act, x)
        return self._apply(apply, self.dropout_layer, x)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, depth_multiplier=self.depth_multiplier,
                      padding=self.padding)
        return config
