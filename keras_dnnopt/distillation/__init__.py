"""Knowledge distillation on Keras 3 and tf_keras, under `tf.distribute`, with compression.

- `Distiller`: a `keras.Model` that trains a student on the labels and a frozen teacher
  (or an ensemble) through the ordinary `compile` / `fit` / `evaluate` / `predict`.
- `FeatureMatch`: an intermediate student layer matched to a teacher layer (FitNets hint),
  through a learned projection when the channel counts differ.
- `cache_teacher_outputs`: run the teacher once and distill without its forward pass.
- `soft_targets`, `kl_distillation_loss`, `mse_distillation_loss`: the per-sample losses;
  `KLDistillationLoss`, `MSEDistillationLoss`: the same as serializable Keras losses.
"""

from keras_dnnopt.distillation.cache import cache_teacher_outputs
from keras_dnnopt.distillation.distiller import Distiller
from keras_dnnopt.distillation.feature_match import FeatureMatch
from keras_dnnopt.distillation.losses import (
    KLDistillationLoss,
    MSEDistillationLoss,
    kl_distillation_loss,
    mse_distillation_loss,
    soft_targets,
)

__all__ = [
    "Distiller",
    "FeatureMatch",
    "KLDistillationLoss",
    "MSEDistillationLoss",
    "cache_teacher_outputs",
    "kl_distillation_loss",
    "mse_distillation_loss",
    "soft_targets",
]
