"""The layers of quantization-aware training on Keras 3, built natively on TensorFlow's
fake-quant ops (TF-MOT only accepts tf_keras models).

They put fake quantization where TFLite's int8 kernels quantize, following TFLite's int8
specification and TF-MOT's default 8-bit scheme:

- `MovingAverageQuantizer`: an activation, asymmetric per-tensor int8
  (`tf.quantization.fake_quant_with_min_max_vars`, 8 bits, full range), its range learned
  in training as an exponential moving average of the batch minimum and maximum (as TF-MOT's
  `MovingAverageQuantizer`; decay 0.999), started from the first batch (TF-MOT starts from
  [-6, 6], which short fine-tuning does not forget). At inference it applies the learned
  range.
- `QuantizedConv2D`, `QuantizedDepthwiseConv2D`, `QuantizedDense`: a convolution (dense) with
  the batch normalization after it *folded* in, its ReLU/ReLU6 fused, and its output
  quantized, as TFLite's int8 kernel computes it. Weights are symmetric int8 (narrow range
  [-127, 127], zero point 0), per output channel for convolutions
  (`fake_quant_with_min_max_vars_per_channel`), per tensor for `Dense`; the range is the
  largest magnitude of the (folded) kernel, recomputed at every call. The bias stays float
  (the converter makes it int32 at scale input x weight).

Batch norm folding (Jacob et al., 2018, section 3.2; Krishnamoorthi, 2018, section 3.2.2,
"with correction"): the kernel that is quantized is the folded one, `w * gamma / sigma`,
with `sigma` the moving standard deviation, which is exactly the kernel the int8 file holds.
In training the batch statistics are computed from a float convolution, update the moving
ones (the layer's `BatchNormalization` sublayer holds them, with its momentum and epsilon),
and the quantized output is corrected to `sigma / sigma_B` so that the model trains as with
batch normalization in training mode. At inference the output is `conv(x, q(w_fold)) +
b_fold`: the graph the converter reads.

Gradients are straight-through: TensorFlow's fake-quant gradients pass the gradient inside
the range (the weight range is the kernel's own, so everywhere), and the ranges are not
trained (`tf.stop_gradient`).

Reference:
    - [Jacob et al., 2018. Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference](https://arxiv.org/abs/1712.05877)
    - [Krishnamoorthi, 2018. Quantizing deep convolutional networks for efficient
      inference: A whitepaper](https://arxiv.org/abs/1806.08342)
    - [TFLite 8-bit quantization specification](
      https://ai.google.dev/edge/litert/models/quantization_spec)
"""

from keras_dnnopt.backend import USING_TF_KERAS, keras, register_serializable, tf

# Keras 3 only: on tf_keras, `quantize` goes through TF-MOT and these layers are never made,
# so they are not registered there (their Keras 3 variable API would not run on tf_keras).
_register = (lambda cls: cls) if USING_TF_KERAS else register_serializable

FUSED_ACTIVATIONS = ("linear", "relu", "relu6")

_EMA_DECAY = 0.999


def _stop(x):
    return tf.stop_gradient(tf.convert_to_tensor(x))


@_register
class MovingAverageQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to asymmetric per-tensor int8 with a moving-average range.

    Made by `keras_dnnopt.compression.quantize` on Keras 3; not meant to be created
    directly. In training, the batch's minimum and maximum (widened to include 0) update
    the range as a moving average (`ema_decay`), the first batch setting it; at inference
    the learned range is used.

    Args:
        ema_decay: the decay of the moving averages, in [0, 1). Defaults to 0.999.
        **kwargs: base layer arguments.

    Input shape:
        Any.

    Output shape:
        Same as the input.
    """

    def __init__(self, ema_decay=_EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape=None):
        # "mean" aggregation: under a tf.distribute strategy each replica's update is
        # averaged into the one range.
        def weight(name, value):
            return self.add_weight(name=name, shape=(), trainable=False, autocast=False,
                                   initializer=keras.initializers.Constant(value),
                                   aggregation="mean")

        self.range_min = weight("range_min", -6.0)
        self.range_max = weight("range_max", 6.0)
        self.initialized = weight("initialized", 0.0)
        self.built = True

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if training:
            x32 = tf.cast(x, tf.float32)
            batch_min = tf.minimum(_stop(tf.reduce_min(x32)), 0.0)
            batch_max = tf.maximum(_stop(tf.reduce_max(x32)), 0.0)
            seen = tf.convert_to_tensor(self.initialized.value) > 0.0
            decay = self.ema_decay
            new_min = tf.where(seen, decay * self.range_min.value + (1 - decay) * batch_min,
                               batch_min)
            new_max = tf.where(seen, decay * self.range_max.value + (1 - decay) * batch_max,
                               batch_max)
            self.range_min.assign(new_min)
            self.range_max.assign(new_max)
            self.initialized.assign(1.0)
            low, high = new_min, new_max
        else:
            low = tf.convert_to_tensor(self.range_min.value)
            high = tf.convert_to_tensor(self.range_max.value)
        # A constant tensor has an empty range: keep it representable.
        high = tf.maximum(high, low + 1e-6)
        out = tf.quantization.fake_quant_with_min_max_vars(
            tf.cast(x, tf.float32), low, high, num_bits=8, narrow_range=False)
        return tf.cast(out, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


def _fake_quant_per_channel(kernel):
    """Symmetric int8 per last-axis channel, narrow range, range = max |w| per channel."""
    axes = list(range(len(kernel.shape) - 1))
    bound = tf.maximum(_stop(tf.reduce_max(tf.abs(kernel), axis=axes)), 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True)


def _fake_quant_per_tensor(kernel):
    bound = tf.maximum(_stop(tf.reduce_max(tf.abs(kernel))), 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars(
        kernel, -bound, bound, num_bits=8, narrow_range=True)


class QuantizedLayer(keras.layers.Layer):
    """Base of the quantized layers: a float layer, its folded batch norm, its fused
    activation and its output quantizer (see the module docstring).

    Subclasses give `_kernel_name`, `_apply(inputs, kernel)` (the linear op without bias),
    `_scale_kernel(kernel, scale)` and `_quantize_kernel(kernel)`.

    Args:
        layer: the float layer (a built-in `Conv2D`, `DepthwiseConv2D` or `Dense` with a
            linear activation), or its serialized config.
        batch_norm: the `BatchNormalization` folded into it (or its config), or None.
            Defaults to None.
        activation: the fused activation, one of `"linear"`, `"relu"`, `"relu6"`.
            Defaults to `"linear"`.
        preserve_sparsity: keep the zeros of the kernel (PQAT): a mask of its nonzero
            weights, taken at build from the weights it is given, multiplies the kernel.
            Defaults to False.
        **kwargs: base layer arguments.
    """

    _kernel_name = "kernel"

    def __init__(self, layer, batch_norm=None, activation="linear", preserve_sparsity=False,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if isinstance(batch_norm, dict):
            batch_norm = keras.saving.deserialize_keras_object(batch_norm)
        if activation not in FUSED_ACTIVATIONS:
            raise ValueError(
                f"Argument `activation` must be one of {FUSED_ACTIVATIONS}. Received: "
                f"activation={activation!r}")
        self.layer = layer
        self.batch_norm = batch_norm
        self.activation = activation
        self.preserve_sparsity = bool(preserve_sparsity)
        self.output_quantizer = MovingAverageQuantizer(name="output_quantizer")

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(output_shape)
        self.output_quantizer.build(output_shape)
        kernel = getattr(self.layer, self._kernel_name)
        self.mask = None
        if self.preserve_sparsity:
            self.mask = self.add_weight(name="sparsity_mask", shape=kernel.shape,
                                        trainable=False, initializer="ones")
        self.built = True

    def set_mask_from_kernel(self):
        """Sets the sparsity mask to the nonzero weights of the current kernel."""
        kernel = getattr(self.layer, self._kernel_name)
        self.mask.assign(tf.cast(tf.not_equal(kernel, 0), self.mask.dtype))

    def _float_kernel(self):
        kernel = tf.convert_to_tensor(getattr(self.layer, self._kernel_name).value)
        if self.mask is not None:
            kernel = kernel * tf.convert_to_tensor(self.mask.value)
        return kernel

    def _bias(self, channels, dtype):
        if getattr(self.layer, "use_bias", False):
            return tf.cast(tf.convert_to_tensor(self.layer.bias.value), dtype)
        return tf.zeros((channels,), dtype)

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        kernel = tf.cast(self._float_kernel(), x.dtype)
        bn = self.batch_norm
        if bn is None:
            y = self._apply(x, self._quantize_kernel(kernel))
            y = y + self._bias(y.shape[-1], y.dtype)
        else:
            channels = int(bn.moving_mean.shape[0])
            bias = self._bias(channels, x.dtype)
            gamma = (tf.cast(tf.convert_to_tensor(bn.gamma.value), x.dtype) if bn.scale
                     else tf.ones((channels,), x.dtype))
            beta = (tf.cast(tf.convert_to_tensor(bn.beta.value), x.dtype) if bn.center
                    else tf.zeros((channels,), x.dtype))
            moving_mean = tf.cast(tf.convert_to_tensor(bn.moving_mean.value), x.dtype)
            moving_var = tf.cast(tf.convert_to_tensor(bn.moving_variance.value), x.dtype)
            sigma = tf.sqrt(moving_var + bn.epsilon)
            folded = self._quantize_kernel(self._scale_kernel(kernel, gamma / sigma))
            if training:
                # Batch statistics of the float output (the batch norm's input).
                y_float = self._apply(x, kernel) + bias
                axes = list(range(len(y_float.shape) - 1))
                mean, var = tf.nn.moments(y_float, axes=axes)
                momentum = bn.momentum
                bn.moving_mean.assign(tf.cast(
                    moving_mean * momentum + _stop(mean) * (1 - momentum),
                    bn.moving_mean.dtype))
                bn.moving_variance.assign(tf.cast(
                    moving_var * momentum + _stop(var) * (1 - momentum),
                    bn.moving_variance.dtype))
                sigma_batch = tf.sqrt(var + bn.epsilon)
                y = self._apply(x, folded) * (sigma / sigma_batch)
                y = y + (beta + gamma * (bias - mean) / sigma_batch)
            else:
                y = self._apply(x, folded) + (beta + gamma * (bias - moving_mean) / sigma)
        if self.activation == "relu":
            y = tf.nn.relu(y)
        elif self.activation == "relu6":
            y = tf.nn.relu6(y)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "batch_norm": (None if self.batch_norm is None
                           else keras.saving.serialize_keras_object(self.batch_norm)),
            "activation": self.activation,
            "preserve_sparsity": self.preserve_sparsity,
        }


@_register
class QuantizedConv2D(QuantizedLayer):
    """A `Conv2D` (+ folded `BatchNormalization`, + ReLU/ReLU6) for quantization-aware
    training: int8 weights per output channel, int8 output. See `QuantizedLayer`."""

    def _apply(self, inputs, kernel):
        return self.layer.convolution_op(inputs, kernel)

    def _scale_kernel(self, kernel, scale):
        return kernel * scale  # (kh, kw, in, out) * (out,)

    def _quantize_kernel(self, kernel):
        return _fake_quant_per_channel(kernel)


@_register
class QuantizedDepthwiseConv2D(QuantizedLayer):
    """A `DepthwiseConv2D` (+ folded `BatchNormalization`, + ReLU/ReLU6) for
    quantization-aware training: int8 weights per output channel (`in * multiplier`),
    int8 output. See `QuantizedLayer`."""

    def _apply(self, inputs, kernel):
        layer = self.layer
        return keras.ops.depthwise_conv(inputs, kernel, strides=layer.strides,
                                        padding=layer.padding,
                                        dilation_rate=layer.dilation_rate,
                                        data_format=layer.data_format)

    def _scale_kernel(self, kernel, scale):
        # (kh, kw, in, multiplier): output channel c * multiplier + m.
        return kernel * tf.reshape(scale, kernel.shape[2:])

    def _quantize_kernel(self, kernel):
        # Per output channel: the (in, multiplier) axes flattened into one, as TFLite's
        # depthwise kernel (1, kh, kw, in * multiplier) holds them.
        shape = kernel.shape
        flat = tf.reshape(kernel, (shape[0], shape[1], 1, shape[2] * shape[3]))
        return tf.reshape(_fake_quant_per_channel(flat), shape)


@_register
class QuantizedDense(QuantizedLayer):
    """A `Dense` (+ folded `BatchNormalization`, + ReLU/ReLU6) for quantization-aware
    training: int8 weights per tensor (TFLite's fully connected kernel), int8 output. See
    `QuantizedLayer`."""

    def _apply(self, inputs, kernel):
        return keras.ops.matmul(inputs, kernel)

    def _scale_kernel(self, kernel, scale):
        return kernel * scale

    def _quantize_kernel(self, kernel):
        return _fake_quant_per_tensor(kernel)


QUANTIZED_LAYERS = (QuantizedConv2D, QuantizedDepthwiseConv2D, QuantizedDense)
