"""Training callbacks for `model.fit`, on Keras 3 and tf_keras.

- `LRFinder`: the learning-rate range test (Smith), restoring the model and optimizer.
- `LearningRateMonitor`: the current learning rate into the logs (`History`, TensorBoard).
- `OneCycleMomentum`: cycles the optimizer's momentum inversely to a `OneCycle` rate.
- `GradientNormMonitor`: the global norm of the training gradients, sampled.
- `ThroughputMonitor`: training samples per second, counted exactly.

The callbacks that need to see inside the traced train step (`OneCycleMomentum`,
`GradientNormMonitor`, `ThroughputMonitor`, `LRFinder`) patch the optimizer or the model
instance at the start of `fit`, force a retrace, and undo it at the end.
"""

from keras_dnnopt.callbacks.gradient_norm_monitor import GradientNormMonitor
from keras_dnnopt.callbacks.learning_rate_monitor import LearningRateMonitor
from keras_dnnopt.callbacks.lr_finder import LRFinder
from keras_dnnopt.callbacks.one_cycle_momentum import OneCycleMomentum
from keras_dnnopt.callbacks.throughput_monitor import ThroughputMonitor

__all__ = [
    "LRFinder",
    "LearningRateMonitor",
    "OneCycleMomentum",
    "GradientNormMonitor",
    "ThroughputMonitor",
]
