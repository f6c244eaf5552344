"""The MobileNet family: blocks from `keras_dnnopt.layers`, architecture tables in
`presets`, and builders of flat functional models of built-in layers."""

from keras_dnnopt.models.mobilenet.mobilenet_v1 import mobilenet_v1
from keras_dnnopt.models.mobilenet.mobilenet_v2 import mobilenet_v2
from keras_dnnopt.models.mobilenet.plain_cnn import plain_cnn

__all__ = ["mobilenet_v1", "mobilenet_v2", "plain_cnn"]
