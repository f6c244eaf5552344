"""`InvertedResidualBlock`: the inverted residual with linear bottleneck of MobileNetV2/V3."""

from keras_dnnopt.backend import keras, register_serializable
from keras_dnnopt.layers.activations import check_activation
from keras_dnnopt.layers.base_block import BaseBlock, check_strides, make_divisible
from keras_dnnopt.layers.squeeze_excite import (
    apply_squeeze_excite,
    check_se_ratio,
    create_squeeze_excite_layers,
)
from keras_dnnopt.utils.validation import check_positive


@register_serializable
class InvertedResidualBlock(BaseBlock):
    """Expand 1x1, depthwise k x k, optional squeeze-excite, linear 1x1 projection, residual.

    With `C` input channels and `t = expansion`: 1x1 conv to `t C` channels + BN + act
    (skipped when `t == 1`), depthwise k x k conv + BN + act, optional squeeze-excite
    (reduced width `make_divisible(t C * se_ratio, 8)`, `"relu"` then `"hard_sigmoid"`
    gate, as MobileNetV3), 1x1 projection to `filters` + BN with *no* activation (the
    linear bottleneck), optional `Dropout`, then a residual `Add` with the input when
    `strides == 1` and `C == filters`. Made only of built-in layers, named after the
    block: `{name}_expand`, `{name}_expand_bn`, `{name}_expand_act`, `{name}_depthwise`,
    `{name}_depthwise_bn`, `{name}_depthwise_act`, `{name}_se_*`, `{name}_project`,
    `{name}_project_bn`, `{name}_dropout`, `{name}_add`; `unroll(inputs)` puts them in a
    functional model (see `BaseBlock`).

    Args:
        filters: the number of output channels, an int > 0.
        expansion: the expansion factor `t`, an int > 0. Defaults to 6.
        kernel_size: the depthwise window, an int > 0. Defaults to 3.
        strides: the depthwise strides, 1 or 2. Defaults to 1.
        se_ratio: the squeeze-excite ratio in (0, 1], or None for no squeeze-excite.
            Defaults to None.
        activation: the activation after the expansion and the depthwise convolution
            (see `get_activation_layer`). Defaults to `"relu6"`.
        use_batch_norm: whether `BatchNormalization` follows each convolution (which then
            has no bias). Defaults to True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, in [0, 1)
            (see `BaseBlock`). Defaults to 0.99, Keras' default.
        dropout: rate of a `Dropout` on the projected branch, before the residual add,
            in [0, 1). Defaults to 0 (none).
        kernel_regularizer: regularizer of every kernel: None, `"l1"`, `"l2"`, `"l1_l2"`,
            a number > 0 (L2 factor) or a `keras.regularizers.Regularizer`. Defaults to
            None.
        se_activation: the activation inside the squeeze-excite. Defaults to `"relu"`.
        se_gate: the squeeze-excite gate. Defaults to `"hard_sigmoid"`.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        4D tensor `(batch, ceil(height / strides), ceil(width / strides), filters)`.

    Raises:
        ValueError: if `filters`, `expansion` or `kernel_size` is not an int > 0,
            `strides` is not 1 or 2, `se_ratio` is outside (0, 1], or a `BaseBlock`
            option is invalid.

    Example:

    >>> block = InvertedResidualBlock(24, expansion=6, strides=1)
    >>> block(np.zeros((1, 16, 16, 24), "float32")).shape  # with a residual add
    TensorShape([1, 16, 16, 24])

    Reference:
        - [Sandler et al., 2018. MobileNetV2: Inverted Residuals and Linear Bottlenecks](
          https://arxiv.org/abs/1801.04381)
        - [Howard et al., 2019. Searching for MobileNetV3](
          https://arxiv.org/abs/1905.02244)
    """

    def __init__(self, filters, expansion=6, kernel_size=3, strides=1, se_ratio=None,
                 activation="relu6", use_batch_norm=True, dropout=0.0, kernel_regularizer=None,
                 se_activation="relu", se_gate="hard_sigmoid", batch_norm_momentum=0.99,
                 **kwargs):
        super().__init__(activation=activation, use_batch_norm=use_batch_norm,
                         dropout=dropout, kernel_regularizer=kernel_regularizer,
                         batch_norm_momentum=batch_norm_momentum, **kwargs)
        self.filters = check_positive("filters", filters, integer=True)
        self.expansion = check_positive("expansion", expansion, integer=True)
        self.kernel_size = check_positive("kernel_size", kernel_size, integer=True)
        self.strides = check_strides("strides", strides)
        self.se_ratio = None if se_ratio is None else check_se_ratio("se_ratio", se_ratio)
        self.se_activation = check_activation("se_activation", se_activation)
        self.se_gate = check_activation("se_gate", se_gate)

    def _create_layers(self, input_shape):
        in_channels = input_shape[-1]
        expanded = in_channels * self.expansion
        self.expand = self.expand_bn = None
        self.expand_act = []
        if self.expansion != 1:
            self.expand = self._conv2d(expanded, 1, "expand")
            self.expand_bn = self._batch_norm("expand_bn")
            self.expand_act = self._activation_layers("expand_act")
        self.depthwise = self._depthwise_conv2d(self.kernel_size, "depthwise",
                                                strides=self.strides)
        self.depthwise_bn = self._batch_norm("depthwise_bn")
        self.depthwise_act = self._activation_layers("depthwise_act")
        if self.se_ratio is not None:
            create_squeeze_excite_layers(self, expanded,
                                         make_divisible(expanded * self.se_ratio, 8),
                                         self.se_activation, self.se_gate)
        self.project = self._conv2d(self.filters, 1, "project")
        self.project_bn = self._batch_norm("project_bn")
        self.dropout_layer = self._dropout_layer()
        self.residual = self.strides == 1 and in_channels == self.filters
        self.residual_add = None
        if self.residual:
            self.residual_add = keras.layers.Add(name=self._sublayer_name("add"))

    def _forward(self, x, apply):
        inputs = x
        x = self._apply(apply, self.expand, x)
        x = self._apply(apply, self.expand_bn, x)
        x = self._apply_activation(apply, self.expand_act, x)
        x = self._apply(apply, self.depthwise, x)
        x = self._apply(apply, self.depthwise_bn, x)
        x = self._apply_activation(apply, self.depthwise_act, x)
        if self.se_ratio is not None:
            x = apply_squeeze_excite(self, x, apply)
        x = self._apply(apply, self.project, x)
        x = self._apply(apply, self.project_bn, x)
        x = self._apply(apply, self.dropout_layer, x)
        if self.residual:
            x = apply(self.residual_add, [inputs, x])
        return x

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, expansion=self.expansion,
                      kernel_size=self.kernel_size, strides=self.strides,
                      se_ratio=self.se_ratio, se_activation=self.se_activation,
                      se_gate=self.se_gate)
        return config
