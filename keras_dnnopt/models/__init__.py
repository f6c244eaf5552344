"""Model builders: flat functional models of built-in Keras layers, on both Kerases.

- `mobilenet_v1`, `mobilenet_v2`: MobileNets, parameter-exact against
  `keras.applications` at 224x224, and working on small inputs (8x8, 28x28, 32x32,
  grayscale) by planning their strides.
- `plain_cnn`: the shape of `mobilenet_v1` with full convolutions, a baseline.
"""

from keras_dnnopt.models.mobilenet import mobilenet_v1, mobilenet_v2, plain_cnn
from keras_dnnopt.models.separable_variant import separable_variant

__all__ = [
    "mobilenet_v1",
    "mobilenet_v2",
    "plain_cnn",
    "separable_variant",
]
