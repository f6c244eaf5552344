"""Model builders: flat functional models of built-in Keras layers, on both Kerases.

- `mobilenet_v1`, `mobilenet_v2`: MobileNets, parameter-exact against
  `keras.applications` at 224x224, and working on small inputs (8x8, 28x28, 32x32,
  grayscale) by planning their strides.
- `plain_cnn`: the shape of `mobilenet_v1` with full convolutions, a baseline.
- `mlp`: a multilayer perceptron for feature vectors (tabular data), classification
  (softmax) or regression (optionally rescaled to the targets' units).
"""

from keras_dnnopt.models.fold_rescaling import fold_output_rescaling
from keras_dnnopt.models.mlp import mlp
from keras_dnnopt.models.mobilenet import mobilenet_v1, mobilenet_v2, plain_cnn
from keras_dnnopt.models.separable_variant import separable_variant

__all__ = [
    "fold_output_rescaling",
    "mlp",
    "mobilenet_v1",
    "mobilenet_v2",
    "plain_cnn",
    "separable_variant",
]
