"""Learning-rate schedules for any Keras optimizer, on Keras 3 and tf_keras.

Every schedule is a registered, serializable `keras.optimizers.schedules.LearningRateSchedule`
computed in float32 with `tf` ops; pass one as an optimizer's `learning_rate`:

    schedule = WarmupCosineDecay(0.1, decay_steps=10_000, warmup_steps=500)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)

- `WarmupCosineDecay`, `WarmupCosineRestarts`, `StepDecay`, `WarmupExponentialDecay`,
  `WarmupPolynomialDecay`: a linear warm-up from 0 (`warmup_steps`, base
  `WarmupSchedule`), then the named decay, counted after the warm-up.
- `OneCycle` (Smith & Topin) and `CyclicalLearningRate` (Smith).
- `one_cycle_value`: the 1cycle phase arithmetic, for cycling other hyper-parameters
  (momentum) in step with `OneCycle`.
- `scale_learning_rate`: the linear scaling rule.
"""

from keras_dnnopt.schedules.base import WarmupSchedule
from keras_dnnopt.schedules.cyclical import CyclicalLearningRate
from keras_dnnopt.schedules.one_cycle import OneCycle, one_cycle_value
from keras_dnnopt.schedules.scaling import scale_learning_rate
from keras_dnnopt.schedules.step_decay import StepDecay
from keras_dnnopt.schedules.warmup_cosine import WarmupCosineDecay
from keras_dnnopt.schedules.warmup_cosine_restarts import WarmupCosineRestarts
from keras_dnnopt.schedules.warmup_exponential import WarmupExponentialDecay
from keras_dnnopt.schedules.warmup_polynomial import WarmupPolynomialDecay

__all__ = [
    "WarmupSchedule",
    "WarmupCosineDecay",
    "WarmupCosineRestarts",
    "StepDecay",
    "WarmupExponentialDecay",
    "WarmupPolynomialDecay",
    "OneCycle",
    "one_cycle_value",
    "CyclicalLearningRate",
    "scale_learning_rate",
]
