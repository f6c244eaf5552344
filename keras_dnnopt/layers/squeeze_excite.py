"""`SqueezeExcite`: channel attention of SENet and MobileNetV3."""

from keras_dnnopt.backend import keras, register_serializable
from keras_dnnopt.layers.activations import check_activation
from keras_dnnopt.layers.base_block import BaseBlock, make_divisible
from keras_dnnopt.utils.validation import check_number, check_positive


def check_se_ratio(name, value):
    """Checks a squeeze ratio: a number in (0, 1]."""
    return check_number(name, value, low=0, high=1, low_inclusive=False)


def create_squeeze_excite_layers(block, channels, squeeze_filters, activation, gate,
                                 prefix="se"):
    """Creates the built-in layers of a squeeze-excite on `block` (as attributes
    `se_pool`, `se_reduce`, `se_act_layers`, `se_expand`, `se_gate_layers`, `se_multiply`), named
    `{block}_{prefix}_squeeze`, `_reduce`, `_act`, `_expand`, `_gate`, `_excite`.

    Shared by `SqueezeExcite` and `InvertedResidualBlock`, so that both are made of the
    same built-in layers. The 1x1 convolutions have biases, as in MobileNetV3.
    """
    name = block._sublayer_name
    block.se_pool = keras.layers.GlobalAveragePooling2D(keepdims=True,
                                                        name=name(f"{prefix}_squeeze"))
    block.se_reduce = keras.layers.Conv2D(squeeze_filters, 1, use_bias=True,
                                          kernel_regularizer=block._new_regularizer(),
                                          name=name(f"{prefix}_reduce"))
    block.se_act_layers = block._activation_layers(f"{prefix}_act", activation)
    block.se_expand = keras.layers.Conv2D(channels, 1, use_bias=True,
                                          kernel_regularizer=block._new_regularizer(),
                                          name=name(f"{prefix}_expand"))
    block.se_gate_layers = block._activation_layers(f"{prefix}_gate", gate)
    block.se_multiply = keras.layers.Multiply(name=name(f"{prefix}_excite"))


def apply_squeeze_excite(block, x, apply):
    """`x * gate(expand(act(reduce(avg_pool(x)))))` with the layers of
    `create_squeeze_excite_layers`."""
    s = block._apply(apply, block.se_pool, x)
    s = block._apply(apply, block.se_reduce, s)
    s = block._apply_activation(apply, block.se_act_layers, s)
    s = block._apply(apply, block.se_expand, s)
    s = block._apply_activation(apply, block.se_gate_layers, s)
    return block._apply(apply, block.se_multiply, [x, s])


@register_serializable
class SqueezeExcite(BaseBlock):
    """Squeeze-and-excitation: rescales each channel by a gate computed from all channels.

    Global average pooling (keeping dims) squeezes the `C` input channels to a `1x1xC`
    descriptor, a 1x1 convolution reduces it to `filters` channels, `activation`, a 1x1
    convolution expands it back to `C`, `gate` maps it to (0, 1), and the input is
    multiplied by it (MobileNetV3 form, with `hard_sigmoid` gate; SENet uses
    `"sigmoid"`). Made only of built-in layers, named after the block:
    `{name}_se_squeeze`, `{name}_se_reduce`, `{name}_se_act`, `{name}_se_expand`,
    `{name}_se_gate`, `{name}_se_excite` (a `Multiply`); `unroll(inputs)` puts them in a
    functional model (see `BaseBlock`).

    Args:
        se_ratio: the squeeze ratio in (0, 1]: the reduced width is
            `make_divisible(C * se_ratio, divisor)`. Defaults to 0.25.
        filters: the reduced width, an int > 0, overriding `se_ratio`. Defaults to None.
        activation: the activation after the reduction. Defaults to `"relu"`.
        gate: the gating activation. Defaults to `"hard_sigmoid"`
            (`relu6(x + 3) / 6`).
        divisor: the reduced width is rounded to a multiple of it (as in MobileNetV3), an
            int > 0; 1 keeps `int(C * se_ratio)` (at least 1). Defaults to 8.
        kernel_regularizer: None, `"l1"`, `"l2"`, `"l1_l2"`, a number > 0 (L2 factor) or a
            `keras.regularizers.Regularizer`. Defaults to None.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Raises:
        ValueError: if `se_ratio` is outside (0, 1], `filters` or `divisor` is not an
            int > 0, or an activation or the regularizer is invalid.

    Example:

    >>> se = SqueezeExcite(se_ratio=0.25)
    >>> se(np.ones((2, 8, 8, 32), "float32")).shape
    TensorShape([2, 8, 8, 32])

    Reference:
        - [Hu et al., 2018. Squeeze-and-Excitation Networks](
          https://arxiv.org/abs/1709.01507)
        - [Howard et al., 2019. Searching for MobileNetV3](
          https://arxiv.org/abs/1905.02244)
    """

    def __init__(self, se_ratio=0.25, filters=None, activation="relu", gate="hard_sigmoid",
                 divisor=8, kernel_regularizer=None, **kwargs):
        super().__init__(activation=activation, kernel_regularizer=kernel_regularizer,
                         **kwargs)
        self.se_ratio = check_se_ratio("se_ratio", se_ratio)
        self.filters = None if filters is None else check_positive("filters", filters,
                                                                   integer=True)
        self.gate = check_activation("gate", gate)
        self.divisor = check_positive("divisor", divisor, integer=True)

    def _create_layers(self, input_shape):
        channels = input_shape[-1]
        squeeze = self.filters or make_divisible(channels * self.se_ratio, self.divisor,
                                                 min_value=1)
        create_squeeze_excite_layers(self, channels, squeeze, self.activation, self.gate)

    def _forward(self, x, apply):
        return apply_squeeze_excite(self, x, apply)

    def get_config(self):
        config = super().get_config()
        del config["use_batch_norm"], config["batch_norm_momentum"], config["dropout"]
        config.update(se_ratio=self.se_ratio, filters=self.filters, gate=self.gate,
                      divisor=self.divisor)
        return config
