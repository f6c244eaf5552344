"""`ConvBlock`: a full convolution, batch norm and activation."""

from keras_dnnopt.backend import register_serializable
from keras_dnnopt.layers.base_block import BaseBlock, check_strides
from keras_dnnopt.utils.validation import check_choice, check_positive


@register_serializable
class ConvBlock(BaseBlock):
    """Full k x k convolution + batch norm + activation (+ dropout).

    The stem of the MobileNets, and the block of the plain-convolution baseline
    (`keras_dnnopt.models.plain_cnn`). Made only of built-in layers, named after the
    block: `{name}_conv`, `{name}_bn`, `{name}_act`, `{name}_dropout`; `unroll(inputs)`
    puts them in a functional model (see `BaseBlock`).

    Args:
        filters: the number of output channels, an int > 0.
        kernel_size: the convolution window, an int > 0. Defaults to 3.
        strides: 1 or 2. Defaults to 1.
        activation: the activation name (see `get_activation_layer`). Defaults to
            `"relu6"`.
        use_batch_norm: whether `BatchNormalization` follows the convolution (which then
            has no bias). Defaults to True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1)
            (see `BaseBlock`). Defaults to 0.99, Keras' default.
        dropout: rate of a `Dropout` after the block, in [0, 1). Defaults to 0 (none).
        kernel_regularizer: None, `"l1"`, `"l2"`, `"l1_l2"`, a number > 0 (L2 factor) or
            a `keras.regularizers.Regularizer`. Defaults to None.
        padding: `"same"` or `"valid"`. Defaults to `"same"`.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        4D tensor `(batch, new_height, new_width, filters)`; with `"same"` padding,
        `new_height = ceil(height / strides)`.

    Raises:
        ValueError: if `filters` or `kernel_size` is not an int > 0, `strides` is not 1
            or 2, `padding` is unknown, or a `BaseBlock` option is invalid.

    Example:

    >>> block = ConvBlock(32, strides=2)
    >>> block(np.zeros((1, 32, 32, 3), "float32")).shape
    TensorShape([1, 16, 16, 32])
    """

    def __init__(self, filters, kernel_size=3, strides=1, activation="relu6",
                 use_batch_norm=True, dropout=0.0, kernel_regularizer=None, padding="same",
                 batch_norm_momentum=0.99, **kwargs):
        super().__init__(activation=activation, use_batch_norm=use_batch_norm,
                         dropout=dropout, kernel_regularizer=kernel_regularizer,
                         batch_norm_momentum=batch_norm_momentum, **kwargs)
        self.filters = check_positive("filters", filters, integer=True)
        self.kernel_size = check_positive("kernel_size", kernel_size, integer=True)
        self.strides = check_strides("strides", strides)
        self.padding = check_choice("padding", padding, ("same", "valid"))

    def _create_layers(self, input_shape):
        self.conv = self._conv2d(self.filters, self.kernel_size, "conv", strides=self.strides,
                                 padding=self.padding)
        self.bn = self._batch_norm("bn")
        self.act = self._activation_layers("act")
        self.dropout_layer = self._dropout_layer()

    def _forward(self, x, apply):
        x = self._apply(apply, self.conv, x)
        x = self._apply(apply, self.bn, x)
        x = self._apply_activation(apply, self.act, x)
        return self._apply(apply, self.dropout_layer, x)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, padding=self.padding)
        return config
