"""Shared logic of the composite layers (blocks) of keras_dnnopt.

A block is a `keras.layers.Layer` made only of built-in Keras layers (`Conv2D`,
`DepthwiseConv2D`, `BatchNormalization`, `ReLU`, `Add`, `Multiply`...), which it creates
in `build` (their sizes depend on the input channels) and names after itself
(`block3_depthwise`, `block3_depthwise_bn`, ...). Each subclass writes its computation
once, in `_forward(x, apply)`, applying every sublayer through `apply(layer, x)`; that
one definition is used three ways:

- `call(inputs, training)`: eager/graph execution, `apply = layer(x, training=...)`;
- `unroll(inputs)`: applies the sublayers *directly* to a symbolic (functional) tensor,
  so that the built-in sublayers, not the block, appear in a functional model. The
  builders of `keras_dnnopt.models` make flat models this way (TF-MOT and TFLite then
  see only built-in layers), and the profiler uses it to trace a built block;
- `build(input_shape)`: builds each sublayer from the shape the previous one outputs.

`BaseBlock` also owns the options every block shares (activation, batch norm, dropout,
kernel regularizer), their validation and `get_config`.
"""

import numbers

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.layers.activations import (
    apply_activation_layers,
    check_activation,
    get_activation_layers,
)
from keras_dnnopt.utils.validation import check_number

_REGULARIZER_NAMES = ("l1", "l2", "l1_l2")


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count to a multiple of `divisor`, never below 90% of `value`.

    The rule of the TF-slim/`keras.applications` MobileNetV2 and V3 code.

    Args:
        value: the channel count to round (a number).
        divisor: the multiple to round to. Defaults to 8.
        min_value: the smallest result. Defaults to `divisor`.

    Returns:
        The rounded channel count, an int.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def check_bool(name, value):
    """Checks that `value` is a bool and returns it."""
    if not isinstance(value, bool):
        raise ValueError(f"Argument `{name}` must be a bool. Received: {name}={value!r}")
    return value


def check_strides(name, value):
    """Checks a block's strides: the int 1 or 2."""
    if isinstance(value, bool) or value not in (1, 2):
        raise ValueError(f"Argument `{name}` must be 1 or 2. Received: {name}={value!r}")
    return int(value)


def _regularizer_message(name, value):
    names = ", ".join(repr(n) for n in _REGULARIZER_NAMES)
    return (
        f"Argument `{name}` must be None, one of {names}, a number > 0 (an L2 factor) or a "
        f"keras.regularizers.Regularizer. Received: {name}={value!r}"
    )


def parse_regularizer(name, value):
    """Turns a `kernel_regularizer` argument into a Keras regularizer (or None).

    Args:
        name: the argument name, for the message.
        value: None; `"l1"`, `"l2"` or `"l1_l2"` (factors 0.01); a number > 0,
            meaning an L2 regularizer of that factor; a `keras.regularizers.Regularizer`;
            or the serialized dict of one.

    Returns:
        A `keras.regularizers.Regularizer`, or None.

    Raises:
        ValueError: for any other value.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value not in _REGULARIZER_NAMES:
            raise ValueError(_regularizer_message(name, value))
        # Keras' own string defaults (factor 0.01); Keras 3 has no "l1_l2" string.
        return {
            "l1": lambda: keras.regularizers.L1(0.01),
            "l2": lambda: keras.regularizers.L2(0.01),
            "l1_l2": lambda: keras.regularizers.L1L2(l1=0.01, l2=0.01),
        }[value]()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return keras.regularizers.L2(check_number(name, value, low=0, low_inclusive=False))
    if isinstance(value, dict):
        value = keras.regularizers.deserialize(value)
    if isinstance(value, keras.regularizers.Regularizer):
        return value
    raise ValueError(_regularizer_message(name, value))


def _as_shape(shape):
    """A shape (TensorShape, tuple, list) as a tuple of ints/None; lists of shapes kept."""
    if isinstance(shape, tf.TensorShape):
        return tuple(shape.as_list())
    if isinstance(shape, list) and shape and not isinstance(shape[0], (numbers.Integral,
                                                                       type(None))):
        return [_as_shape(s) for s in shape]
    return tuple(shape)


def _build_sublayer(layer, shape):
    """Builds `layer` for `shape` (if needed) and returns its output shape."""
    if not layer.built:
        if USING_TF_KERAS:
            # tf_keras scopes variable names by layer only inside `__call__`.
            with tf.name_scope(layer.name):
                layer.build(shape)
        else:
            layer.build(shape)
    return _as_shape(layer.compute_output_shape(shape))


def _output_shape(layer, shape):
    return _as_shape(layer.compute_output_shape(shape))


class BaseBlock(keras.layers.Layer):
    """Base of the blocks: a layer made only of built-in Keras layers, with `unroll`.

    Subclasses validate their own arguments, call `super().__init__(...)`, and define:

    - `_create_layers(input_shape)`: creates the built-in sublayers (as attributes) for
      a `(batch, height, width, channels)` input shape, using the helpers `_conv2d`,
      `_depthwise_conv2d`, `_batch_norm`, `_activation_layers`, `_dropout_layer`, which
      apply the shared options and name each sublayer `{block name}_{suffix}`;
    - `_forward(x, apply)`: the computation, applying every sublayer through
      `self._apply(apply, layer, x)` (skips a None layer) or
      `self._apply_activation(apply, layers, x)`;
    - `get_config`, extending this one.

    Args:
        activation: the activation name (see `keras_dnnopt.layers.get_activation_layer`).
            Defaults to `"relu6"`.
        use_batch_norm: whether each convolution is followed by `BatchNormalization`
            (and then has no bias). Defaults to True.
        batch_norm_momentum: the `momentum` of every `BatchNormalization`, the weight of
            the old moving mean/variance at each update, in [0, 1). Lower it (e.g. 0.9)
            when training for only a few hundred steps: the moving statistics then follow
            the weights. Defaults to 0.99, Keras' default.
        dropout: the rate of the block's `Dropout`, in [0, 1); 0 means no `Dropout`
            layer. Defaults to 0.
        kernel_regularizer: regularizer of every convolution kernel: None, `"l1"`,
            `"l2"`, `"l1_l2"` (factor 0.01), a number > 0 (L2 factor) or a
            `keras.regularizers.Regularizer`. Defaults to None.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Raises:
        ValueError: for an unknown activation, a non-bool `use_batch_norm`,
            `batch_norm_momentum` or `dropout` outside [0, 1) or a bad
            `kernel_regularizer`.
    """

    def __init__(self, activation="relu6", use_batch_norm=True, dropout=0.0,
                 kernel_regularizer=None, batch_norm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation("activation", activation)
        self.use_batch_norm = check_bool("use_batch_norm", use_batch_norm)
        self.batch_norm_momentum = check_number("batch_norm_momentum", batch_norm_momentum,
                                                low=0, high=1, high_inclusive=False)
        self.dropout = check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
        self._regularizer = parse_regularizer("kernel_regularizer", kernel_regularizer)
        if isinstance(kernel_regularizer, (keras.regularizers.Regularizer, dict)):
            kernel_regularizer = keras.regularizers.serialize(self._regularizer)
        self._kernel_regularizer_config = kernel_regularizer

    # ---- the three uses of `_forward` -------------------------------------------------

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        self._create_layers(shape)
        self._forward(shape, _build_sublayer)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self._forward(inputs, lambda layer, x: layer(x, training=training))

    def unroll(self, inputs):
        """Applies the block's built-in sublayers directly to a symbolic tensor.

        The result is the block's output in a functional graph whose layers are the
        block's built-in sublayers (sharing their weights with the block), not the
        block itself. Works on a built block (e.g. one taken from a model) and on a new
        one, which it builds for `inputs`.

        Args:
            inputs: a symbolic tensor (`keras.Input(...)` or a functional layer output)
                of shape `(batch, height, width, channels)`.

        Returns:
            The symbolic output tensor.

        Example:

        >>> block = SeparableConvBlock(16, name="block1")
        >>> inputs = keras.Input((32, 32, 3))
        >>> model = keras.Model(inputs, block.unroll(inputs))
        >>> [layer.name for layer in model.layers][1:3]
        ['block1_depthwise', 'block1_depthwise_bn']
        """
        if not self.built:
            self.build(inputs.shape)
        return self._forward(inputs, lambda layer, x: layer(x))

    def compute_output_shape(self, input_shape):
        shape = self._check_input_shape(input_shape)
        if not self.built:
            self.build(shape)
        return self._forward(shape, _output_shape)

    @property
    def sublayers(self):
        """The block's built-in sublayers in order of application (empty before build)."""
        found = []

        def record(layer, x):
            found.append(layer)
            return x

        if self.built:
            self._forward(self._built_input_shape, record)
        return found

    def get_prunable_weights(self):
        """The kernels magnitude pruning may sparsify: those of the block's `Conv2D`s.

        The protocol of TF-MOT's `PrunableLayer`, which makes a block prunable by
        `keras_dnnopt.compression.prune` (and `tfmot.sparsity.keras.prune_low_magnitude`)
        like the built-in layers it is made of: as TF-MOT's registry does for those, the
        depthwise kernels, biases and batch-norm weights are left dense.

        Returns:
            A list of variables (empty before the block is built).
        """
        return [layer.kernel for layer in self.sublayers
                if type(layer) is keras.layers.Conv2D]  # exact class: not DepthwiseConv2D

    # ---- subclass interface -----------------------------------------------------------

    def _create_layers(self, input_shape):
        raise NotImplementedError

    def _forward(self, x, apply):
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------------

    def _check_input_shape(self, input_shape):
        shape = _as_shape(input_shape)
        if len(shape) != 4 or shape[-1] is None:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) expects inputs of shape "
                f"(batch, height, width, channels) with known channels. "
                f"Received: input_shape={shape}"
            )
        self._built_input_shape = shape
        return shape

    def _sublayer_name(self, suffix):
        return f"{self.name}_{suffix}"

    def _new_regularizer(self):
        # One instance per sublayer, so that each serializes on its own.
        if self._regularizer is None:
            return None
        return type(self._regularizer).from_config(self._regularizer.get_config())

    def _conv2d(self, filters, kernel_size, suffix, strides=1, padding="same", use_bias=None):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding,
            use_bias=(not self.use_batch_norm) if use_bias is None else use_bias,
            kernel_regularizer=self._new_regularizer(), name=self._sublayer_name(suffix),
        )

    def _depthwise_conv2d(self, kernel_size, suffix, strides=1, depth_multiplier=1,
                          padding="same"):
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, depth_multiplier=depth_multiplier,
            use_bias=not self.use_batch_norm, depthwise_regularizer=self._new_regularizer(),
            name=self._sublayer_name(suffix),
        )

    def _batch_norm(self, suffix):
        if not self.use_batch_norm:
            return None
        return keras.layers.BatchNormalization(momentum=self.batch_norm_momentum,
                                               name=self._sublayer_name(suffix))

    def _activation_layers(self, suffix, activation=None):
        return get_activation_layers(activation or self.activation,
                                     name=self._sublayer_name(suffix))

    def _dropout_layer(self, suffix="dropout"):
        if not self.dropout:
            return None
        return keras.layers.Dropout(self.dropout, name=self._sublayer_name(suffix))

    @staticmethod
    def _apply(apply, layer, x):
        return x if layer is None else apply(layer, x)

    @staticmethod
    def _apply_activation(apply, layers, x):
        return apply_activation_layers(layers, x, apply)

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=self.activation,
            use_batch_norm=self.use_batch_norm,
            batch_norm_momentum=self.batch_norm_momentum,
            dropout=self.dropout,
            kernel_regularizer=self._kernel_regularizer_config,
        )
        return config
