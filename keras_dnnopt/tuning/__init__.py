"""Hyperparameter tuning and cross-validation, on Keras 3 and tf_keras.

- `MobileNetHyperModel`: a keras-tuner `HyperModel` over `mobilenet_v1` / `mobilenet_v2`
  (width, depth, dropout, activation, L2, optimizer, learning rate and schedule, batch size,
  epochs), each dimension fixable or restrictable.
- `tune`: runs a random, Hyperband or Bayesian search and returns `TuneResult(model,
  hyperparameters, tuner)`.
- `RandomSearch`, `Hyperband`, `BayesianOptimization`: keras-tuner's tuners (same arguments)
  that also accept tf_keras models, which plain keras-tuner 1.4 rejects.
- `cross_validate`: k-fold (stratified) cross-validation returning per-fold metrics, their
  mean and standard deviation (`CrossValidationResult`).
"""

from keras_dnnopt.tuning._compat import BayesianOptimization, Hyperband, RandomSearch
from keras_dnnopt.tuning.cross_validation import CrossValidationResult, cross_validate
from keras_dnnopt.tuning.hypermodel import MobileNetHyperModel
from keras_dnnopt.tuning.tuner import TuneResult, tune

__all__ = [
    "MobileNetHyperModel",
    "tune",
    "TuneResult",
    "RandomSearch",
    "Hyperband",
    "BayesianOptimization",
    "cross_validate",
    "CrossValidationResult",
]
