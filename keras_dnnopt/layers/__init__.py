"""Lightweight building blocks, made only of built-in Keras layers, on both Kerases.

- `ConvBlock`: full convolution + BN + activation (stems, plain baselines).
- `SeparableConvBlock`: depthwise + pointwise convolutions (MobileNetV1).
- `InvertedResidualBlock`: expand, depthwise, optional squeeze-excite, linear projection,
  residual (MobileNetV2/V3).
- `SqueezeExcite`: channel attention (SENet, MobileNetV3).
- `get_activation_layer`: an activation name as a built-in Keras layer.

Every block works as a layer in Sequential and functional models, and has
`unroll(inputs)`, which applies its built-in sublayers directly to a functional tensor so
that a model shows them instead of the block (see `BaseBlock`). The builders of
`keras_dnnopt.models` make flat models of built-in layers this way.
"""

from keras_dnnopt.layers.activations import SUPPORTED_ACTIVATIONS, get_activation_layer
from keras_dnnopt.layers.base_block import BaseBlock
from keras_dnnopt.layers.conv_block import ConvBlock
from keras_dnnopt.layers.inverted_residual_block import InvertedResidualBlock
from keras_dnnopt.layers.separable_conv_block import SeparableConvBlock
from keras_dnnopt.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "BaseBlock",
    "ConvBlock",
    "SeparableConvBlock",
    "InvertedResidualBlock",
    "SqueezeExcite",
    "get_activation_layer",
    "SUPPORTED_ACTIVATIONS",
]
